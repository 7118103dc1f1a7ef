package route

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// Builders for the routes of the tests, as the controller writes them.

func exact(v string) *meshv1.PathMatch {
	return &meshv1.PathMatch{Type: meshv1.PathMatchType_PATH_MATCH_TYPE_EXACT, Value: v}
}

func prefix(v string) *meshv1.PathMatch {
	return &meshv1.PathMatch{Type: meshv1.PathMatchType_PATH_MATCH_TYPE_PREFIX, Value: v}
}

func header(name, value string) *meshv1.HeaderMatch {
	return &meshv1.HeaderMatch{Type: meshv1.HeaderMatchType_HEADER_MATCH_TYPE_EXACT, Name: name, Value: value}
}

func match(p *meshv1.PathMatch, method string, headers ...*meshv1.HeaderMatch) *meshv1.RouteMatch {
	return &meshv1.RouteMatch{Path: p, Method: method, Headers: headers}
}

// rule is a rule named name, sending to web-v1:80, with the matches given.
func rule(name string, matches ...*meshv1.RouteMatch) *meshv1.RouteRule {
	return &meshv1.RouteRule{Name: name, Matches: matches, Backends: []*meshv1.RouteBackend{backend("web-v1", 80, 1)}}
}

func backend(service string, port, weight uint32) *meshv1.RouteBackend {
	return &meshv1.RouteBackend{Service: service, Namespace: "shop", Port: port, Weight: weight}
}

func httpService(name string, ports ...uint32) *meshv1.Service {
	s := &meshv1.Service{Name: name, Namespace: "shop"}
	for _, p := range ports {
		s.Ports = append(s.Ports, &meshv1.ServicePort{Port: p, TargetPort: p + 8000, Protocol: meshv1.Protocol_PROTOCOL_HTTP})
	}
	return s
}

// services is a configuration's: web (index 0) with the routes given,
// then its backends.
func services(routes ...*meshv1.Route) []*meshv1.Service {
	web := httpService("web", 80, 90)
	web.Routes = routes
	tcp := httpService("cache", 6379)
	tcp.Ports[0].Protocol = meshv1.Protocol_PROTOCOL_TCP
	return []*meshv1.Service{web, httpService("web-v1", 80), httpService("web-v2", 80, 81), tcp}
}

func mustTable(t testing.TB, svcs []*meshv1.Service, port uint32) *Table {
	t.Helper()
	ts, err := Compile(svcs)
	if err != nil {
		t.Fatal(err)
	}
	tbl := ts.Table(0, port)
	if tbl == nil {
		t.Fatalf("no table for port %d", port)
	}
	return tbl
}

// precedenceRoutes exercise every criterion of Gateway API's precedence,
// across two routes (a before b, as the controller orders them).
func precedenceRoutes() []*meshv1.Route {
	return []*meshv1.Route{
		{Namespace: "shop", Name: "a", Rules: []*meshv1.RouteRule{
			rule("a-prefix", match(prefix("/api"), "")),
			rule("a-exact", match(exact("/api/orders"), "")),
			rule("a-header", match(prefix("/"), "", header("x-canary", "always"))),
			rule("a-method", match(prefix("/api"), "POST")),
			rule("a-tie", match(prefix("/api/"), "")), // the same as a-prefix: never wins
		}},
		{Namespace: "shop", Name: "b", Rules: []*meshv1.RouteRule{
			rule("b-headers", match(prefix("/api"), "", header("X-A", "1"), header("x-b", "2"))),
			rule("b-longer", match(prefix("/api/v2/"), "")),
			rule("b-tie", match(prefix("/api"), "")), // the same as a-prefix, in a later route
			rule("b-exact-method", match(exact("/api/orders"), "GET")),
			rule("b-any-of", match(exact("/x"), ""), match(exact("/y"), "")),
		}},
	}
}

func TestMatchPrecedence(t *testing.T) {
	tbl := mustTable(t, services(precedenceRoutes()...), 80)
	ab := http.Header{"X-A": {"1"}, "X-B": {"2"}}
	tests := []struct {
		method, path string
		header       http.Header
		want         string // rule name; "" for no match
	}{
		// An exact path beats any prefix; then a method beats none.
		{"GET", "/api/orders", nil, "b-exact-method"},
		{"POST", "/api/orders", nil, "a-exact"},
		// Equal prefixes, no method, no headers: the earliest route and
		// rule.
		{"GET", "/api", nil, "a-prefix"},
		{"GET", "/api/", nil, "a-prefix"},
		{"DELETE", "/api/x", nil, "a-prefix"},
		// A method beats none at an equal prefix, and beats headers.
		{"POST", "/api/x", nil, "a-method"},
		{"POST", "/api/x", ab, "a-method"},
		// More headers beat fewer at an equal prefix and method.
		{"GET", "/api/x", ab, "b-headers"},
		{"GET", "/api/x", http.Header{"X-A": {"1"}}, "a-prefix"},
		// A longer prefix beats everything shorter, methods and headers
		// included; prefixes match element by element.
		{"POST", "/api/v2", ab, "b-longer"},
		{"GET", "/api/v2/things", nil, "b-longer"},
		{"GET", "/api/v2x", nil, "a-prefix"},
		{"GET", "/apix", nil, ""},
		// A header match on "/" catches what matches nothing longer.
		{"GET", "/apix", http.Header{"X-Canary": {"always"}}, "a-header"},
		{"GET", "/api", http.Header{"X-Canary": {"always"}}, "a-prefix"},
		// Paths and methods are case-sensitive.
		{"GET", "/API", nil, ""},
		{"post", "/api/x", nil, "a-prefix"},
		// A rule matches when any of its matches does.
		{"GET", "/y", nil, "b-any-of"},
		{"GET", "/x/", nil, ""},
		{"GET", "", nil, ""},
	}
	for _, tt := range tests {
		r, ok := tbl.Match(tt.method, tt.path, tt.header)
		got := ""
		if ok {
			got = r.Name
		}
		if got != tt.want {
			t.Errorf("Match(%s %q, %v) = %q, want %q", tt.method, tt.path, tt.header, got, tt.want)
		}
	}
}

func TestMatchHeaders(t *testing.T) {
	tbl := mustTable(t, services(&meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{
		rule("canary", match(prefix("/"), "", header("x-CANARY", "on"))),
		rule("pair", match(prefix("/"), "", header("X-Pair", "a,b"))),
	}}), 80)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1]) // canonicalizes, as a server does
		}
		return out
	}
	tests := []struct {
		name   string
		header http.Header
		want   string
	}{
		{"names are case-insensitive", h("X-Canary", "on"), "canary"},
		{"lower-case name", h("x-canary", "on"), "canary"},
		{"values are case-sensitive", h("x-canary", "On"), ""},
		{"absent", h("x-other", "on"), ""},
		{"empty value", h("x-canary", ""), ""},
		{"a header without values", http.Header{"X-Canary": {}}, ""},
		{"several field lines are joined by commas", h("x-pair", "a", "x-pair", "b"), "pair"},
		{"one field line with the joined value", h("x-pair", "a,b"), "pair"},
		{"joined with a space is another value", h("x-pair", "a, b"), ""},
		{"one of the lines is not enough", h("x-canary", "on", "x-canary", "off"), ""},
		{"three lines", h("x-pair", "a", "x-pair", "b", "x-pair", "c"), ""},
		{"a prefix of the lines", h("x-pair", "a"), ""},
		// Names are looked up canonical, as http.Header.Get does: a key
		// put in the map by hand in another case is not seen.
		{"non-canonical map key", http.Header{"x-canary": {"on"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := tbl.Match("GET", "/", tt.header)
			got := ""
			if ok {
				got = r.Name
			}
			if got != tt.want {
				t.Errorf("Match(%v) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestTablesByPort(t *testing.T) {
	svcs := services(
		&meshv1.Route{Namespace: "shop", Name: "only-90", Ports: []uint32{90}, Rules: []*meshv1.RouteRule{rule("r90", match(prefix("/"), ""))}},
		&meshv1.Route{Namespace: "shop", Name: "every", Rules: []*meshv1.RouteRule{rule("all", match(prefix("/a"), ""))}},
	)
	ts, err := Compile(svcs)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := ts.Table(0, 80).Match("GET", "/b", nil); ok {
		t.Errorf("port 80: /b matched %s; only-90 does not apply to port 80", r)
	}
	if r, ok := ts.Table(0, 90).Match("GET", "/b", nil); !ok || r.Name != "r90" {
		t.Errorf("port 90: /b matched %v, %v; want r90", r, ok)
	}
	for _, k := range []tableKey{{0, 81}, {1, 80}, {2, 80}, {9, 80}} {
		if tbl := ts.Table(k.service, k.port); tbl != nil {
			t.Errorf("Table(%d, %d) = %v, want nil: no route applies", k.service, k.port, tbl)
		}
	}
	if (*Tables)(nil).Table(0, 80) != nil {
		t.Error("nil Tables has a table")
	}
}

func TestBackends(t *testing.T) {
	svcs := services(&meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{{
		Matches: []*meshv1.RouteMatch{match(prefix("/"), "")},
		Backends: []*meshv1.RouteBackend{
			backend("web-v2", 81, 1),
			backend("gone", 80, 2),
			backend("web-v2", 82, 3),
			backend("cache", 6379, 4),
		},
	}}})
	r, _ := mustTable(t, svcs, 80).Match("GET", "/", nil)
	type got struct {
		Index, Port int
		Weight      uint32
		Valid       bool
		Problem     string
	}
	var gots []got
	for _, b := range r.Backends {
		g := got{Index: b.ServiceIndex, Weight: b.Weight, Valid: b.Valid(), Problem: b.Problem, Port: -1}
		if b.Port != nil {
			g.Port = int(b.Port.GetTargetPort())
		}
		if (b.Service == nil) != (b.ServiceIndex < 0) || b.Service != nil && b.Service != svcs[b.ServiceIndex] {
			t.Errorf("backend %+v: Service and ServiceIndex disagree", b)
		}
		gots = append(gots, g)
	}
	want := []got{
		{Index: 2, Port: 8081, Weight: 1, Valid: true},
		{Index: -1, Port: -1, Weight: 2, Problem: "service gone.shop is not in the configuration"},
		{Index: -1, Port: -1, Weight: 3, Problem: "service web-v2.shop has no port 82"},
		{Index: -1, Port: -1, Weight: 4, Problem: "port 6379 of service cache.shop is TCP"},
	}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("backends (-want +got):\n%s", diff)
	}
	if r.String() != "shop/r rules[0]" {
		t.Errorf("String() = %q", r.String())
	}
}

func TestPickWeights(t *testing.T) {
	weights := []uint32{90, 0, 10, 0}
	r := &meshv1.RouteRule{Matches: []*meshv1.RouteMatch{match(prefix("/"), "")}}
	for i, w := range weights {
		r.Backends = append(r.Backends, backend("web-v1", 80, w))
		r.Backends[i].RequestHeaders = &meshv1.HeaderModifier{Set: []*meshv1.Header{{Name: "X-Backend", Value: string(rune('a' + i))}}}
	}
	rule, _ := mustTable(t, services(&meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{r}}), 80).Match("GET", "/", nil)

	// The extremes of the random number land on the first and last
	// backends of nonzero weight.
	if b := rule.Pick(0); b != &rule.Backends[0] {
		t.Errorf("Pick(0) = %v, want backend 0", b)
	}
	if b := rule.Pick(math.MaxUint64); b != &rule.Backends[2] {
		t.Errorf("Pick(max) = %v, want backend 2", b)
	}

	const n = 200_000
	rng := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, len(weights))
	for range n {
		b := rule.Pick(rng.Uint64())
		h := http.Header{}
		b.ModifyRequest(h)
		counts[h.Get("X-Backend")[0]-'a']++
	}
	// Wide margins: the standard deviation of a 10% share over 200,000
	// picks is 0.07 points.
	for i, w := range weights {
		share := float64(counts[i]) / n * 100
		if w == 0 && counts[i] != 0 {
			t.Errorf("backend %d of weight 0 picked %d times", i, counts[i])
		}
		if math.Abs(share-float64(w)) > 1 {
			t.Errorf("backend %d of weight %d got %.2f%% of the requests", i, w, share)
		}
	}

	// No backend of nonzero weight, or no backend at all: nothing to pick.
	for _, backends := range [][]*meshv1.RouteBackend{{backend("web-v1", 80, 0), backend("web-v2", 80, 0)}, nil} {
		r := &meshv1.RouteRule{Matches: []*meshv1.RouteMatch{match(prefix("/"), "")}, Backends: backends}
		rule, _ := mustTable(t, services(&meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{r}}), 80).Match("GET", "/", nil)
		for _, rnd := range []uint64{0, 1 << 63, math.MaxUint64} {
			if b := rule.Pick(rnd); b != nil {
				t.Errorf("backends %v: Pick(%d) = %v, want nil", backends, rnd, b)
			}
		}
	}
}

func TestModifyRequest(t *testing.T) {
	r := &meshv1.RouteRule{
		Matches: []*meshv1.RouteMatch{match(prefix("/"), "")},
		RequestHeaders: &meshv1.HeaderModifier{
			Set:    []*meshv1.Header{{Name: "x-set", Value: "rule"}},
			Add:    []*meshv1.Header{{Name: "X-Add", Value: "rule"}},
			Remove: []string{"x-debug"},
		},
		Backends: []*meshv1.RouteBackend{{
			Service: "web-v1", Namespace: "shop", Port: 80, Weight: 1,
			RequestHeaders: &meshv1.HeaderModifier{
				Set: []*meshv1.Header{{Name: "X-Set", Value: "backend"}},
				Add: []*meshv1.Header{{Name: "x-version", Value: "v1"}},
			},
		}},
		RequestTimeout:        durationpb.New(5 * time.Second),
		BackendRequestTimeout: durationpb.New(time.Second),
		IdleTimeout:           durationpb.New(30 * time.Second),
	}
	rule, _ := mustTable(t, services(&meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{r}}), 80).Match("GET", "/", nil)
	h := http.Header{
		"X-Set":   {"app", "app2"},
		"X-Add":   {"app"},
		"X-Debug": {"1"},
		"Accept":  {"*/*"},
	}
	rule.ModifyRequest(h)
	rule.Pick(0).ModifyRequest(h)
	want := http.Header{
		"X-Set":     {"backend"},
		"X-Add":     {"app", "rule"},
		"X-Version": {"v1"},
		"Accept":    {"*/*"},
	}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if rule.RequestTimeout != 5*time.Second || rule.BackendRequestTimeout != time.Second {
		t.Errorf("timeouts = %v, %v, want 5s, 1s", rule.RequestTimeout, rule.BackendRequestTimeout)
	}
	if rule.IdleTimeout != 30*time.Second {
		t.Errorf("idle timeout = %v, want 30s", rule.IdleTimeout)
	}
	// Absent, the rule has none of its own: the service's applies.
	r.IdleTimeout = nil
	rule, _ = mustTable(t, services(&meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{r}}), 80).Match("GET", "/", nil)
	if rule.IdleTimeout != 0 {
		t.Errorf("idle timeout without one = %v, want 0", rule.IdleTimeout)
	}
	// The bounds themselves are accepted.
	for _, d := range []time.Duration{MinIdleTimeout, MaxIdleTimeout} {
		r.IdleTimeout = durationpb.New(d)
		if _, err := Compile(services(&meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{r}})); err != nil {
			t.Errorf("idle timeout %v: %v", d, err)
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	ok := func() *meshv1.RouteRule { return rule("ok", match(prefix("/"), "")) }
	tests := []struct {
		name   string
		modify func(r *meshv1.Route)
		want   string
	}{
		{"no rules", func(r *meshv1.Route) { r.Rules = nil }, "no rules"},
		{"no matches", func(r *meshv1.Route) { r.Rules[0].Matches = nil }, "no matches"},
		{"unknown path type", func(r *meshv1.Route) { r.Rules[0].Matches[0].Path.Type = 7 }, "unsupported type"},
		{"no path", func(r *meshv1.Route) { r.Rules[0].Matches[0].Path = nil }, "unsupported type"},
		{"relative path", func(r *meshv1.Route) { r.Rules[0].Matches[0].Path.Value = "api" }, `"api" does not start with "/"`},
		{"bad method", func(r *meshv1.Route) { r.Rules[0].Matches[0].Method = "G T" }, "is not a method"},
		{"unknown header match type", func(r *meshv1.Route) {
			r.Rules[0].Matches[0].Headers = []*meshv1.HeaderMatch{{Name: "x", Value: "1"}}
		}, "unsupported type"},
		{"bad header name", func(r *meshv1.Route) { r.Rules[0].Matches[0].Headers = []*meshv1.HeaderMatch{header("x:y", "1")} }, "not a header name"},
		{"host match", func(r *meshv1.Route) { r.Rules[0].Matches[0].Headers = []*meshv1.HeaderMatch{header("host", "web")} }, "Host cannot be matched"},
		{"header matched twice", func(r *meshv1.Route) {
			r.Rules[0].Matches[0].Headers = []*meshv1.HeaderMatch{header("x-a", "1"), header("X-A", "2")}
		}, "matched twice"},
		{"weight too large", func(r *meshv1.Route) { r.Rules[0].Backends[0].Weight = MaxWeight + 1 }, "more than 1000000"},
		{"backend without port", func(r *meshv1.Route) { r.Rules[0].Backends[0].Port = 0 }, "port 0 out of range"},
		{"backend without namespace", func(r *meshv1.Route) { r.Rules[0].Backends[0].Namespace = "" }, "required"},
		{"route port out of range", func(r *meshv1.Route) { r.Ports = []uint32{70000} }, "port 70000"},
		{"modifies Rampart's header", func(r *meshv1.Route) {
			r.Rules[0].RequestHeaders = &meshv1.HeaderModifier{Set: []*meshv1.Header{{Name: "rampart_target_port", Value: "1"}}}
		}, "Rampart's own"},
		{"modifies a hop-by-hop header", func(r *meshv1.Route) {
			r.Rules[0].Backends[0].RequestHeaders = &meshv1.HeaderModifier{Remove: []string{"Transfer-Encoding"}}
		}, "hop-by-hop"},
		{"sets a header every hop removes", func(r *meshv1.Route) {
			r.Rules[0].RequestHeaders = &meshv1.HeaderModifier{Set: []*meshv1.Header{{Name: "X-Forwarded-For", Value: "10.0.0.1"}}}
		}, "removed by the proxies"},
		{"modifies a header twice", func(r *meshv1.Route) {
			r.Rules[0].RequestHeaders = &meshv1.HeaderModifier{Set: []*meshv1.Header{{Name: "x-a", Value: "1"}}, Remove: []string{"X-A"}}
		}, "changed twice"},
		{"value with a line break", func(r *meshv1.Route) {
			r.Rules[0].RequestHeaders = &meshv1.HeaderModifier{Add: []*meshv1.Header{{Name: "x-a", Value: "1\r\nx-b: 2"}}}
		}, "invalid value"},
		{"negative timeout", func(r *meshv1.Route) { r.Rules[0].RequestTimeout = durationpb.New(-time.Second) }, "negative"},
		{"zero idle timeout", func(r *meshv1.Route) { r.Rules[0].IdleTimeout = durationpb.New(0) }, "idle_timeout: 0s is not within 1s..24h"},
		{"idle timeout too short", func(r *meshv1.Route) { r.Rules[0].IdleTimeout = durationpb.New(999 * time.Millisecond) }, "idle_timeout: 999ms is not within"},
		{"idle timeout too long", func(r *meshv1.Route) { r.Rules[0].IdleTimeout = durationpb.New(24*time.Hour + time.Second) }, "idle_timeout: 24h0m1s is not within"},
		{"negative idle timeout", func(r *meshv1.Route) { r.Rules[0].IdleTimeout = durationpb.New(-time.Minute) }, "idle_timeout: negative"},
		{"invalid idle timeout", func(r *meshv1.Route) { r.Rules[0].IdleTimeout = &durationpb.Duration{Seconds: 5, Nanos: -1} }, "idle_timeout:"},
		{"too many rules", func(r *meshv1.Route) {
			for range maxRules {
				r.Rules = append(r.Rules, ok())
			}
		}, "17 rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{ok()}}
			tt.modify(r)
			_, err := Compile(services(r))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile() error = %v, want ErrInvalid saying %q", err, tt.want)
			}
		})
	}
	// Not part of the table: an out-of-range duration.
	r := &meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{ok()}}
	r.Rules[0].RequestTimeout = &durationpb.Duration{Seconds: 1, Nanos: -1}
	if _, err := Compile(services(r)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Compile with an invalid duration: %v, want ErrInvalid", err)
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tbl := mustTable(t, services(precedenceRoutes()...), 80)
	h := http.Header{"X-A": {"1"}, "X-B": {"2"}, "X-Canary": {"always", "never"}, "Accept": {"*/*"}}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, p := range []string{"/api/orders", "/api/v2/x", "/apix", "/y"} {
			tbl.Match("GET", p, h)
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %.1f times per run", allocs)
	}
}
