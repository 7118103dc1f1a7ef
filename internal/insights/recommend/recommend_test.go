package recommend

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/compile"
	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/localconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// TestGolden recommends from each testdata/<case>.json and compares the
// YAML with <case>.yaml and the warnings with <case>.warnings.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 6 {
		t.Fatalf("found %d golden inputs, want at least 6", len(inputs))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		t.Run(name, func(t *testing.T) {
			snap := readSnapshot(t, in)
			res, err := Policies(snap, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var yamlOut, warnOut bytes.Buffer
			if err := res.WriteYAML(&yamlOut); err != nil {
				t.Fatal(err)
			}
			if err := res.WriteWarnings(&warnOut); err != nil {
				t.Fatal(err)
			}
			compareGolden(t, strings.TrimSuffix(in, ".json")+".yaml", yamlOut.Bytes())
			compareGolden(t, strings.TrimSuffix(in, ".json")+".warnings", warnOut.Bytes())

			// The output loads as the controller loads a config directory.
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "policies.yaml"), yamlOut.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			loaded, err := localconfig.Load(dir)
			if err != nil {
				t.Fatalf("the recommended policies do not load: %v", err)
			}
			if len(loaded.AuthorizationPolicies) != len(res.Policies) {
				t.Fatalf("loaded %d policies, recommended %d", len(loaded.AuthorizationPolicies), len(res.Policies))
			}
			for _, p := range loaded.AuthorizationPolicies {
				if p.Spec.Mode != v1alpha1.ModeAudit {
					t.Errorf("%s/%s: mode %q, want AUDIT by default", p.Namespace, p.Name, p.Spec.Mode)
				}
			}
			// And every observed route goes through.
			checkAllowsObserved(t, snap, loadEnforced(t, snap))
		})
	}
}

func readSnapshot(t *testing.T, path string) *insights.Snapshot {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var snap insights.Snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &snap
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update after checking the change):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// loadEnforced recommends from snap in mode ENFORCE, writes the policies
// to a config directory and loads it back as the controller does.
func loadEnforced(t *testing.T, snap *insights.Snapshot) *localconfig.Resources {
	t.Helper()
	res, err := Policies(snap, Options{Enforce: true})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := res.WriteYAML(&b); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policies.yaml"), b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := localconfig.Load(dir)
	if err != nil {
		t.Fatalf("the recommended policies do not load: %v\n%s", err, b.String())
	}
	for _, p := range loaded.AuthorizationPolicies {
		if p.Spec.Mode != v1alpha1.ModeEnforce {
			t.Fatalf("%s/%s: mode %q with Enforce, want ENFORCE", p.Namespace, p.Name, p.Spec.Mode)
		}
	}
	return loaded
}

// engineFor compiles the policy of one workload as `rampart policy
// explain` does.
func engineFor(t *testing.T, loaded *localconfig.Resources, wb *insights.WorkloadBaseline) *authz.Engine {
	t.Helper()
	res := &compile.Resources{AuthorizationPolicies: loaded.AuthorizationPolicies}
	wp, err := compile.ForWorkload(res, compile.Workload{Namespace: wb.Namespace, Labels: wb.Labels}, compile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.Compile(wp)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const testPort = 8080

func httpRequest(source, method, path string) *authz.Request {
	r := &authz.Request{Port: testPort, Protocol: authz.ProtocolHTTP, Method: method, Path: path, Time: time.Now()}
	if source != "" {
		r.Source, r.Authenticated = source, true
	}
	return r
}

// checkAllowsObserved checks that every route a caller with an identity
// was answered on is allowed to it, and that a caller absent from the
// baseline and every plaintext caller are denied, for every labelled
// workload of snap.
func checkAllowsObserved(t *testing.T, snap *insights.Snapshot, loaded *localconfig.Resources) (checked int) {
	t.Helper()
	for i := range snap.Workloads {
		wb := &snap.Workloads[i]
		if len(wb.Labels) == 0 {
			continue
		}
		e := engineFor(t, loaded, wb)
		for _, c := range wb.Callers {
			if c.SPIFFEID != "" && c.Requests > 0 && c.Denied >= c.Requests {
				// Denied by the policy in force: it stays denied.
				if d := e.Decide(httpRequest(c.SPIFFEID, "GET", "/")); d.Allow {
					t.Errorf("%s/%s: %s, denied while learning, is allowed", wb.Namespace, wb.Workload, c.SPIFFEID)
				}
				continue
			}
			for _, r := range c.Routes {
				if r.Requests > 0 && r.Refused >= r.Requests {
					continue // never answered: not allowed on purpose
				}
				method := r.Method
				if method == "OTHER" {
					method = "PROPFIND"
				}
				paths := []string{r.Path}
				if r.Truncated {
					paths = append(paths, strings.TrimSuffix(r.Path, "/")+"/deeper/still")
				}
				for _, p := range paths {
					d := e.Decide(httpRequest(c.SPIFFEID, method, p))
					switch {
					case c.SPIFFEID == "" && d.Allow:
						t.Errorf("%s/%s: plaintext %s %s allowed: %s", wb.Namespace, wb.Workload, method, p, d.Reason)
					case c.SPIFFEID != "" && !d.Allow:
						t.Errorf("%s/%s: observed %s %s %s denied: %s", wb.Namespace, wb.Workload, c.SPIFFEID, method, p, d.Reason)
					}
					checked++
				}
			}
			if c.SPIFFEID != "" && len(c.Routes) == 0 {
				d := e.Decide(&authz.Request{Port: testPort, Protocol: authz.ProtocolTCP, Source: c.SPIFFEID, Authenticated: true, Time: time.Now()})
				if !d.Allow {
					t.Errorf("%s/%s: observed TCP from %s denied: %s", wb.Namespace, wb.Workload, c.SPIFFEID, d.Reason)
				}
				checked++
			}
		}
		for _, stranger := range []string{"spiffe://example.org/ns/elsewhere/sa/intruder", ""} {
			for _, r := range []*authz.Request{httpRequest(stranger, "GET", "/"),
				{Port: testPort, Protocol: authz.ProtocolTCP, Source: stranger, Authenticated: stranger != "", Time: time.Now()}} {
				if d := e.Decide(r); d.Allow {
					t.Errorf("%s/%s: caller %q not in the baseline allowed (%s): %s", wb.Namespace, wb.Workload, stranger, r.Protocol, d.Reason)
				}
			}
		}
	}
	return checked
}

// TestPropertyObservedAllowedStrangerDenied generates baselines and checks,
// with the authz engine the proxies enforce with, that the recommended
// policies allow every route observed and deny callers not observed, and
// that a caller whose routes are all known is denied a path it never used.
func TestPropertyObservedAllowedStrangerDenied(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	total := 0
	for iter := range 60 {
		snap := randomSnapshot(rng)
		loaded := loadEnforced(t, snap)
		total += checkAllowsObserved(t, snap, loaded)
		for i := range snap.Workloads {
			wb := &snap.Workloads[i]
			e := engineFor(t, loaded, wb)
			for _, c := range wb.Callers {
				if c.SPIFFEID == "" || c.RoutesOverflow || len(c.Routes) == 0 {
					continue
				}
				// Random top-level segments are never "unseen", and fewer
				// than DistinctValues+1 of them are drawn.
				if d := e.Decide(httpRequest(c.SPIFFEID, "GET", "/unseen")); d.Allow {
					t.Errorf("iteration %d: %s/%s: %s allowed GET /unseen, a path it never used", iter, wb.Namespace, wb.Workload, c.SPIFFEID)
				}
			}
		}
		if t.Failed() {
			data, _ := json.MarshalIndent(snap, "", "  ")
			t.Fatalf("iteration %d: snapshot:\n%s", iter, data)
		}
	}
	if total < 500 {
		t.Fatalf("checked %d requests, want at least 500: the generator is too sparse", total)
	}
}

var (
	topSegs   = []string{"api", "v1", "users", "orders", "static", "healthz"}
	innerSegs = []string{"items", "profile", "search", "css", "img", "me", "list", "export"}
	methods   = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OTHER"}
)

func randomSegment(rng *rand.Rand) string {
	switch rng.IntN(6) {
	case 0:
		return fmt.Sprint(rng.IntN(100000))
	case 1:
		return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<16), rng.IntN(1<<16), rng.Uint64()&(1<<48-1))
	case 2:
		return fmt.Sprintf("%x", rng.Uint64()|1<<60)
	case 3:
		return fmt.Sprintf("slug-%d", rng.IntN(30))
	}
	return innerSegs[rng.IntN(len(innerSegs))]
}

func randomSnapshot(rng *rand.Rand) *insights.Snapshot {
	start := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	snap := &insights.Snapshot{Version: 1, LearningStarted: start, LearningEnds: start.Add(time.Hour)}
	nw := 1 + rng.IntN(3)
	for w := range nw {
		ns := []string{"shop", "blog"}[rng.IntN(2)]
		name := fmt.Sprintf("svc%d", w)
		wb := insights.WorkloadBaseline{
			SPIFFEID:  "spiffe://example.org/ns/" + ns + "/sa/" + name,
			Namespace: ns, Workload: name,
			Labels: map[string]string{"app": name},
		}
		if rng.IntN(3) == 0 {
			wb.Labels = map[string]string{"tier": name, "track": "stable"}
		}
		nc := 1 + rng.IntN(4)
		for c := range nc {
			caller := insights.Caller{
				SPIFFEID: fmt.Sprintf("spiffe://example.org/ns/%s/sa/caller%d", ns, c),
				MTLS:     true, FirstSeen: start, LastSeen: start.Add(time.Hour), Requests: 1,
			}
			switch rng.IntN(10) {
			case 0:
				caller.SPIFFEID, caller.MTLS = "", false
			case 1:
				caller.RoutesOverflow = true
			case 2:
				caller.Denied = caller.Requests
			}
			nr := rng.IntN(25)
			for range nr {
				depth := 1 + rng.IntN(3)
				segs := []string{topSegs[rng.IntN(len(topSegs))]}
				for len(segs) < depth {
					segs = append(segs, randomSegment(rng))
				}
				r := insights.Route{
					Method:    methods[rng.IntN(len(methods))],
					Path:      "/" + strings.Join(segs, "/"),
					Truncated: depth == 3 && rng.IntN(2) == 0,
					Requests:  1 + uint64(rng.IntN(100)),
				}
				if rng.IntN(8) == 0 {
					r.Refused = r.Requests
				}
				caller.Routes = append(caller.Routes, r)
			}
			wb.Callers = append(wb.Callers, caller)
		}
		snap.Workloads = append(snap.Workloads, wb)
	}
	return snap
}

func TestPoliciesRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		snap *insights.Snapshot
		opts Options
		want string
	}{
		{"nil", nil, Options{}, "no baseline"},
		{"version", &insights.Snapshot{Version: 2}, Options{}, "format version 2"},
		{"namespace", &insights.Snapshot{Version: 1}, Options{Namespace: "Not_A_Name"}, "namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Policies(tc.snap, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestNamespaceFilter(t *testing.T) {
	snap := readSnapshot(t, "testdata/labelless.json")
	snap.Workloads[1].Namespace = "other"
	res, err := Policies(snap, Options{Namespace: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Policies) != 1 || res.Policies[0].Policy.Namespace != "other" || len(res.Warnings) != 0 {
		t.Fatalf("got %d policies, warnings %v; want the one of namespace other, no warnings", len(res.Policies), res.Warnings)
	}
}

func TestLooksLikeID(t *testing.T) {
	for s, want := range map[string]bool{
		"123": true, "0": true, "550e8400-e29b-41d4-a716-446655440000": true, "deadbeef": true, "DEADBEEF01": true,
		"cafe": false, "users": false, "v1": false, "": false, "deadbee": false, "550e8400-e29b-41d4-a716-44665544000g": false,
		"a*b": true, "{x}": true,
	} {
		if got := looksLikeID(s); got != want {
			t.Errorf("looksLikeID(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestTemplates(t *testing.T) {
	var paths []string
	for i := range DistinctValues {
		paths = append(paths, fmt.Sprintf("/posts/p%d", i))
	}
	paths = append(paths, "/users/1/orders/2", "/", "/a/")
	tm := newTemplater(paths)
	for in, want := range map[string]string{
		"/posts/p0":         "/posts/p0", // DistinctValues siblings: not more
		"/users/1/orders/2": "/users/{id}/orders/{id2}",
		"/":                 "/",
		"/a/":               "/a/",
	} {
		if got := tm.template(in); got != want {
			t.Errorf("template(%q) = %q, want %q", in, got, want)
		}
	}
	tm = newTemplater(append(paths, "/posts/one-more"))
	if got := tm.template("/posts/p0"); got != "/posts/{id}" {
		t.Errorf("with %d siblings, template(/posts/p0) = %q, want /posts/{id}", DistinctValues+1, got)
	}
}

// TestDocExample checks that the example of docs/insights.md is the
// output for testdata/three-tier.json.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/insights.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Recommending least-privilege policy\n")
	if !ok {
		t.Fatal("docs/insights.md has no section Recommending least-privilege policy")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```yaml\n")
	if !ok {
		t.Fatal("the section has no yaml example")
	}
	block, _, _ = strings.Cut(block, "```")
	golden, err := os.ReadFile("testdata/three-tier.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(golden), block) || !strings.HasPrefix(block, "# Recommended") {
		t.Errorf("the example of docs/insights.md is not a policy of testdata/three-tier.yaml:\n%s", block)
	}
}

func TestSelectors(t *testing.T) {
	wb := func(name string, labels map[string]string) insights.WorkloadBaseline {
		return insights.WorkloadBaseline{SPIFFEID: "spiffe://example.org/ns/shop/sa/" + name, Namespace: "shop", Workload: name, Labels: labels}
	}
	snap := &insights.Snapshot{Version: 1, Workloads: []insights.WorkloadBaseline{
		wb("web-v1", map[string]string{"app": "web", "version": "v1"}),
		wb("web-v2", map[string]string{"app": "web", "version": "v2"}),
		wb("api", map[string]string{"app": "api", "version": "v1"}),
		wb("twin-a", map[string]string{"role": "twin"}),
		wb("twin-b", map[string]string{"role": "twin"}),
	}}
	res, err := Policies(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rec := range res.Policies {
		got[rec.Policy.Name] = fmt.Sprint(rec.Policy.Spec.Selector.MatchLabels)
	}
	want := map[string]string{
		"api-recommended":    "map[app:api]",            // app alone identifies it
		"web-v1-recommended": "map[app:web version:v1]", // app shared: all labels
		"web-v2-recommended": "map[app:web version:v2]",
		"twin-a-recommended": "map[role:twin]",
		"twin-b-recommended": "map[role:twin]",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("selectors %v, want %v", got, want)
	}
	if len(res.Warnings) != 6 || !strings.Contains(res.Warnings[0].String(), "shop/twin-b: has the same labels as shop/twin-a") {
		t.Errorf("warnings %v, want the twins' shared labels first, then no caller for each of the five", res.Warnings)
	}
}

func TestLongNames(t *testing.T) {
	name := strings.Repeat("a", 60)
	if got := policyName(name); len(got) > 63 || !strings.HasSuffix(got, NameSuffix) {
		t.Errorf("policyName(60 a) = %q (%d)", got, len(got))
	}
	if got := policyName("web"); got != "web-recommended" {
		t.Errorf("policyName(web) = %q", got)
	}
}

// FuzzPolicies checks that any snapshot a file may hold yields an error or
// policies that validate and render, never a panic.
func FuzzPolicies(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/*.json")
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var snap insights.Snapshot
		if json.Unmarshal(data, &snap) != nil {
			return
		}
		res, err := Policies(&snap, Options{})
		if err != nil {
			return
		}
		for _, rec := range res.Policies {
			if err := rec.Policy.Validate(); err != nil {
				t.Fatalf("%s/%s does not validate: %v", rec.Policy.Namespace, rec.Policy.Name, err)
			}
		}
		if err := res.WriteYAML(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
}
