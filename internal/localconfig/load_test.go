package localconfig

import (
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// loadWithin calls Load, failing the test if it takes longer than a hostile
// input should make it.
func loadWithin(t *testing.T, dir string) (*Resources, error) {
	t.Helper()
	type result struct {
		res *Resources
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := Load(dir)
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		return r.res, r.err
	case <-time.After(5 * time.Minute):
		// A hang, not a slow machine: the race detector on a loaded
		// 2-core machine takes tens of seconds on the largest input.
		t.Fatalf("Load(%s) did not return within 5 minutes", dir)
		return nil, nil
	}
}

// problems returns the lines of a Load error, failing the test if err is
// not a *LoadError.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Load() error = %T %v, want a *LoadError", err, err)
	}
	return strings.Split(le.Error(), "\n")
}

func TestLoad(t *testing.T) {
	tests := []struct {
		dir string
		// want is the error, one problem a line; empty means the load must
		// succeed and match testdata/load/<dir>.golden.json.
		want []string
	}{
		{dir: "example"},
		// Several documents a file, empty documents, .yml, anchors and merge
		// keys, sorting by namespace/name; hidden files, other extensions and
		// subdirectories are not read.
		{dir: "multidoc"},
		// One document of each policy kind.
		{dir: "policies"},
		// HTTPRoutes attached to services: the example of docs/traffic.md.
		{dir: "routing"},
		// The policy kinds report like the others, each problem once, with
		// its line; CEL conditions are compiled at load time.
		{dir: "badpolicy", want: []string{
			`policies.yaml:10: spec.rules[0].from[0].principal: unknown field: did you mean "principals"?`,
			"policies.yaml:20: spec.rules[0].when: invalid CEL: 1:24: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
			`policies.yaml:28: spec.action: must be ALLOW, DENY or AUDIT, not "REJECT"`,
			`policies.yaml:39: spec.defaultAuthorization: must be deny-all, allow-same-namespace or allow-authenticated, not "allow-all"`,
			"policies.yaml:41: AuthorizationPolicy shop/typo is also defined at policies.yaml:1",
		}},
		// HTTPRoute: what Rampart does not support is an error naming the
		// field, never ignored; the apiVersion is per kind.
		{dir: "badroutes", want: []string{
			`routes.yaml:1: apiVersion: "rampart.dev/v1alpha1" is not supported: use "gateway.networking.k8s.io/v1"`,
			`routes.yaml:6: apiVersion: "gateway.networking.k8s.io/v1" is not supported: use "rampart.dev/v1alpha1"`,
			`routes.yaml:17: spec.hostnames: is not supported: a route attached to a Service applies to every request sent to the Service, whatever its Host (GAMMA); remove it`,
			`routes.yaml:19: spec.parentRefs[0].group: is required for a Service: set it to "" (left out, it means gateway.networking.k8s.io, the group of Gateways, which Rampart does not support)`,
			`routes.yaml:19: spec.parentRefs[0].kind: is required: set it to Service (left out, it means Gateway, which Rampart does not support)`,
			`routes.yaml:20: spec.parentRefs[1].group: must be "" (the core group of Service), not "gateway.networking.k8s.io": Rampart attaches routes to Services only`,
			`routes.yaml:21: spec.parentRefs[1].kind: must be Service, not "Gateway": Rampart attaches routes to Services only`,
			`routes.yaml:26: spec.parentRefs[2].namespace: must be the route's own namespace "shop", not "other": routes for a Service of another namespace (GAMMA consumer routes) are not supported yet`,
			`routes.yaml:27: spec.parentRefs[2].sectionName: is not supported: name the service port by number with port`,
			`routes.yaml:44: spec.rules[0].matches[0].path.type: RegularExpression is not supported yet: use Exact or PathPrefix`,
			`routes.yaml:47: spec.rules[0].matches[1].path.value: must be an absolute path, starting with "/", not "api"`,
			`routes.yaml:48: spec.rules[0].matches[1].method: must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE and PATCH, not "get"`,
			`routes.yaml:51: spec.rules[0].matches[2].headers[0].type: RegularExpression is not supported yet: use Exact`,
			`routes.yaml:53: spec.rules[0].matches[2].headers[1].name: "X-User" is also matched by headers[0]: match a header once`,
			`routes.yaml:55: spec.rules[0].matches[2].headers[2].name: matching the Host is not supported yet`,
			`routes.yaml:57: spec.rules[0].matches[2].queryParams: is not supported yet: match on the path, method and headers`,
			`routes.yaml:74: spec.rules[0].filters[0].type: URLRewrite is not supported yet: RequestHeaderModifier is the filter Rampart supports`,
			`routes.yaml:80: spec.rules[0].filters[1].requestHeaderModifier.set[0].name: "Rampart-Client-Id" is Rampart's own: the proxies set it`,
			`routes.yaml:85: spec.rules[0].filters[1].requestHeaderModifier.add[0].name: "x-a" is also changed by set[1]: change a header once`,
			`routes.yaml:87: spec.rules[0].filters[1].requestHeaderModifier.remove[0]: "Connection" is a hop-by-hop header: it belongs to each connection`,
			`routes.yaml:91: spec.rules[0].backendRefs[0].weight: must be between 0 and 1000000`,
			`routes.yaml:92: spec.rules[0].backendRefs[1].port: is required: the port of the Service the requests go to`,
			`routes.yaml:93: spec.rules[0].backendRefs[1].namespace: must be the route's own namespace "shop", not "other": backends in other namespaces are not supported yet`,
			`routes.yaml:94: spec.rules[0].backendRefs[2].kind: must be Service, not "ServiceImport": Rampart sends requests to Services only`,
			`routes.yaml:99: spec.rules[0].timeouts.backendRequest: 2s is longer than the request timeout 1s, which it is part of`,
			`routes.yaml:100: spec.rules[0].retry: is not supported yet: the proxy retries connection failures by itself; remove it`,
			`routes.yaml:102: spec.rules[1].backendRefs: is required: at least one backend; a rule without one would answer 500 to every request it matches`,
			`routes.yaml:105: spec.rules[1].timeouts.request: invalid duration "10 seconds": want numbers of up to 5 digits with units h, m, s or ms, such as 10s, 1m30s or 500ms`,
			`routes.yaml:111: spec.rules: is required: at least one rule, with the backends the requests go to`,
			`routes.yaml:114: status: is written by a controller, not in a config file: remove it`,
			`routes.yaml:127: spec.rules[0].backendRef: unknown field: did you mean "backendRefs"?`,
			`routes.yaml:127: spec.rules[0].backendRefs: is required: at least one backend; a rule without one would answer 500 to every request it matches`,
			`routes.yaml:131: spec.rules[1].backendRefs[0].port: must be an integer, got the string "eighty"`,
			`routes.yaml:141: spec.parentRefs[1]: is the same as parentRefs[0]`,
			`routes.yaml:142: spec.parentRefs[2]: names Service "web" again, as parentRefs[0] does: name it once without port for every port, or once per port with port`,
			`routes.yaml:146: spec.rules[1].name: "a" is also the name of rules[0]: rule names are unique within a route`,
			`routes.yaml:148: spec.rules[2].name: invalid name "B": use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit`,
		}},
		// The services a route names are checked against the whole
		// directory (the route's file is read first here): they must be
		// defined, with the port named, and that port must carry HTTP. A
		// service with problems of its own is not checked further.
		{dir: "routerefs", want: []string{
			`a-routes.yaml:6: spec.parentRefs[0].port: Service shop/web has no port 8080: its ports are 80 and 6379`,
			`a-routes.yaml:7: spec.parentRefs[1]: Service shop/webb is not defined: a route attaches to a Service of the config directory`,
			`a-routes.yaml:8: spec.parentRefs[2].port: port 6379 of Service shop/web is TCP: an HTTPRoute applies to HTTP requests only`,
			`a-routes.yaml:9: spec.parentRefs[3]: every port of Service shop/cache is TCP: an HTTPRoute applies to HTTP requests only`,
			`a-routes.yaml:13: spec.rules[0].backendRefs[0]: Service shop/web-v3 is not defined: a route sends requests to Services of the config directory`,
			`a-routes.yaml:14: spec.rules[0].backendRefs[1].port: Service shop/web has no port 81: its ports are 80 and 6379`,
			`a-routes.yaml:15: spec.rules[0].backendRefs[2].port: port 6379 of Service shop/cache is TCP: a route sends HTTP requests, which a TCP port does not take`,
			`services.yaml:21: spec.selector: must not be empty: an empty selector would select every workload in the namespace`,
		}},
		{dir: "typo", want: []string{
			`orders.yaml:6: metadata.lables: unknown field: did you mean "labels"?`,
			`orders.yaml:14: spec.ports[0].targetPrt: unknown field: did you mean "targetPort"?`,
			`orders.yaml:15: spec.ports[0].Protocol: unknown field: did you mean "protocol"? (field names are case-sensitive)`,
			`orders.yaml:16: spec.foo: unknown field: the fields here are addresses, ports, selector, serviceAccounts`,
		}},
		{dir: "badport", want: []string{
			`orders.yaml:11: spec.ports[0].port: must be between 1 and 65535`,
			`orders.yaml:13: spec.ports[1].port: must be between 1 and 65535`,
			`orders.yaml:14: spec.ports[1].targetPort: must be between 1 and 65535`,
			`orders.yaml:15: spec.ports[1].protocol: unsupported protocol "UDP": must be one of Auto, TCP, HTTP, HTTP2, GRPC`,
			`orders.yaml:16: spec.ports[2].name: is required when the service has more than one port`,
		}},
		{dir: "vip", want: []string{
			`services.yaml:11: service address ::ffff:10.96.0.10 is also used by the Service defined at services.yaml:1`,
			`services.yaml:18: spec.addresses[2]: "not-an-ip" is not an IP address`,
		}},
		{dir: "noselector", want: []string{
			// The selector is missing: the line of its parent, spec.
			`orders.yaml:5: spec.selector: must not be empty: an empty selector would select every workload in the namespace`,
			`orders.yaml:14: spec.selector: must not be empty: an empty selector would select every workload in the namespace`,
		}},
		{dir: "unknownkind", want: []string{
			`resources.yaml:1: apiVersion: "apps/v1" is not supported: use "rampart.dev/v1alpha1", or "gateway.networking.k8s.io/v1" for HTTPRoute`,
			`resources.yaml:2: kind: "Deployment" is not supported: supported kinds are AuthorizationPolicy, DetectionPolicy, EgressPolicy, HTTPRoute, MeshTLSPolicy, NamespacePolicy, RateLimitPolicy, Service, TrafficPolicy, Workload and WorkloadAttestationPolicy`,
			`resources.yaml:7: kind: "Deployment" is not supported: supported kinds are AuthorizationPolicy, DetectionPolicy, EgressPolicy, HTTPRoute, MeshTLSPolicy, NamespacePolicy, RateLimitPolicy, Service, TrafficPolicy, Workload and WorkloadAttestationPolicy`,
			`resources.yaml:11: apiVersion: is required: set it to "rampart.dev/v1alpha1"`,
			`resources.yaml:15: kind: is required: supported kinds are AuthorizationPolicy, DetectionPolicy, EgressPolicy, HTTPRoute, MeshTLSPolicy, NamespacePolicy, RateLimitPolicy, Service, TrafficPolicy, Workload and WorkloadAttestationPolicy`,
		}},
		{dir: "syntax", want: []string{
			// yaml.v3 says line 11, where the mapping holding the error starts.
			`orders.yaml:13: invalid YAML: did not find expected key`,
			// Loading resumes at the next document.
			`orders.yaml:22: spec.tunnelAddress: is required: the host:port where the workload's proxy accepts tunnel connections`,
			`orders.yaml:24: spec.tunnelAdress: unknown field: did you mean "tunnelAddress"?`,
		}},
		{dir: "duplicate", want: []string{
			`b.yaml:3: Service shop/orders is also defined at a.yaml:1`,
			`b.yaml:17: Workload default/orders-1 is also defined at b.yaml:12`,
			`c.yaml:9: HTTPRoute shop/orders is also defined at c.yaml:2`,
		}},
		{dir: "typeerror", want: []string{
			`orders.yaml:6: metadata.labels[version]: must be a string, got the number 2: quote it to make it a string`,
			`orders.yaml:12: spec.ports[0].port: must be an integer, got the string "eighty"`,
			`orders.yaml:15: spec.ports[1].targetPort: must be an integer, got the number 9090.5`,
			`orders.yaml:16: spec.serviceAccounts: must be a list, got the string "orders"`,
		}},
		{dir: "workload", want: []string{
			`orders.yaml:4: metadata.name: invalid name "Orders_1": use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			`orders.yaml:8: metadata.labels[bad key]: invalid label key "bad key": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`,
			`orders.yaml:9: spec.serviceAccount: is required: it names the workload's identity`,
			`orders.yaml:10: spec.tunnelAddress: invalid address "10.0.0.7": want host:port, such as 10.0.0.7:4443, [fd00::7]:4443 or orders-1.example.com:4443`,
		}},
		{dir: "misc", want: []string{
			`misc.yaml:1: a document must be a mapping with apiVersion, kind, metadata and spec, not a list`,
			`misc.yaml:8: duplicate key "name": it is already set at line 7`,
			`misc.yaml:18: alias *l refers to a value that contains it`,
			`misc.yaml:23: a document must be a mapping with apiVersion, kind, metadata and spec, not the scalar "hello"`,
			`misc.yaml:32: .inf is not a finite number`,
			`misc.yaml:33: mapping keys must be strings, not a list`,
			`misc.yaml:35: a merge key (<<) takes a mapping or a list of mappings`,
		}},
		// A billion laughs: an error, quickly, not a hang.
		{dir: "aliasbomb", want: []string{
			`bomb.yaml:7: document contains excessive aliasing: its aliases expand it to more than 10 times its size`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			res, err := loadWithin(t, filepath.Join("testdata", "load", tt.dir))
			if len(tt.want) > 0 {
				if err == nil {
					t.Fatalf("Load() succeeded, want errors:\n%s", strings.Join(tt.want, "\n"))
				}
				if diff := cmp.Diff(tt.want, problems(t, err)); diff != "" {
					t.Errorf("Load() problems mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() error:\n%v", err)
			}
			checkGolden(t, filepath.Join("testdata", "load", tt.dir+".golden.json"), res)
		})
	}
}

// checkGolden compares res, as JSON, with the golden file, or rewrites the
// file with -update.
func checkGolden(t *testing.T, golden string, res *Resources) {
	t.Helper()
	got, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("Load() mismatch with %s (-want +got):\n%s", golden, diff)
	}
}

func TestLoadFiles(t *testing.T) {
	const service = "apiVersion: rampart.dev/v1alpha1\nkind: Service\nmetadata: {name: orders}\nspec: {selector: {app: orders}, ports: [{port: 80}]}\n"
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		// want is the error's problems; nil means success with wantServices.
		want         []string
		wantServices int
	}{
		{
			name:  "empty directory",
			setup: func(*testing.T, string) {},
		},
		{
			name: "comments only",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "a.yaml", "# nothing yet\n")
				writeFile(t, dir, "b.yaml", "")
			},
		},
		{
			name: "too large",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "big.yaml", "#"+strings.Repeat("x", MaxFileSize))
				writeFile(t, dir, "orders.yaml", service)
			},
			want: []string{"big.yaml: file is 4194305 bytes, larger than the limit of 4194304 (4 MiB): split it into smaller files"},
		},
		{
			name: "largest allowed",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "big.yaml", service+"#"+strings.Repeat("x", MaxFileSize-len(service)-2)+"\n")
			},
			wantServices: 1,
		},
		{
			name: "unreadable",
			setup: func(t *testing.T, dir string) {
				if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "gone.yaml")); err != nil {
					t.Skip("cannot make symbolic links:", err)
				}
				writeFile(t, dir, "orders.yaml", service)
			},
			want: []string{"gone.yaml: cannot read file: no such file or directory"},
		},
		{
			name: "symbolic link to a file",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "..data/orders.yaml", service)
				if err := os.Symlink(filepath.Join("..data", "orders.yaml"), filepath.Join(dir, "orders.yaml")); err != nil {
					t.Skip("cannot make symbolic links:", err)
				}
			},
			wantServices: 1,
		},
		{
			name: "error at the end of a long document",
			setup: func(t *testing.T, dir string) {
				var b strings.Builder
				b.WriteString(service + "---\napiVersion: rampart.dev/v1alpha1\nkind: Service\nmetadata:\n  name: long\n  annotations:\n")
				for i := range 5000 {
					b.WriteString("    k" + itoa(i) + ": v\n")
				}
				b.WriteString("   bad: indent\n")
				writeFile(t, dir, "long.yaml", b.String())
			},
			// yaml.v3 says line 9, where the metadata mapping starts.
			want: []string{"long.yaml:5011: invalid YAML: did not find expected key"},
		},
		{
			name: "CRLF and CR line ends",
			setup: func(t *testing.T, dir string) {
				bad := strings.Replace(service, "port: 80", "port: 0", 1)
				writeFile(t, dir, "crlf.yaml", strings.ReplaceAll(bad, "\n", "\r\n"))
				writeFile(t, dir, "cr.yaml", "# old Mac\r"+strings.ReplaceAll(strings.Replace(bad, "orders", "payments", 1), "\n", "\r"))
			},
			want: []string{
				"cr.yaml:5: spec.ports[0].port: must be between 1 and 65535",
				"crlf.yaml:4: spec.ports[0].port: must be between 1 and 65535",
			},
		},
		{
			name: "many syntax errors",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "bad.yaml", strings.Repeat("a: b: c\n---\n", 300_000))
			},
			want: func() []string {
				var want []string
				for i := range maxSyntaxErrors {
					want = append(want, "bad.yaml:"+itoa(2*i+1)+": invalid YAML: mapping values are not allowed in this context")
				}
				return append(want, "bad.yaml:"+itoa(2*maxSyntaxErrors)+": too many YAML syntax errors: the rest of the file is not checked")
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			res, err := loadWithin(t, dir)
			if tt.want != nil {
				if err == nil {
					t.Fatalf("Load() succeeded, want errors:\n%s", strings.Join(tt.want, "\n"))
				}
				if diff := cmp.Diff(tt.want, problems(t, err)); diff != "" {
					t.Errorf("Load() problems mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() error:\n%v", err)
			}
			if len(res.Services) != tt.wantServices || len(res.Workloads) != 0 {
				t.Errorf("Load() = %d services, %d workloads; want %d services", len(res.Services), len(res.Workloads), tt.wantServices)
			}
		})
	}
}

// TestLoadManyProblems checks that every problem of a hostile file with
// 100,000 of them is reported, in order, with its line. That the work per
// problem does not grow with the size of the document is measured by
// BenchmarkLoadManyProblems, not timed here.
func TestLoadManyProblems(t *testing.T) {
	const n = 50_000
	var b strings.Builder
	b.WriteString("apiVersion: rampart.dev/v1alpha1\nkind: Service\nmetadata:\n  name: big\n  labels:\n")
	for i := range n {
		b.WriteString("    bad key " + itoa(i) + ": x\n")
	}
	b.WriteString("spec:\n  selector: {app: big}\n  ports: [{port: 80}]\n")
	for i := range n {
		b.WriteString("  unknown" + itoa(i) + ": x\n")
	}
	dir := t.TempDir()
	writeFile(t, dir, "big.yaml", b.String())
	start := time.Now()
	_, err := loadWithin(t, dir)
	got := problems(t, err)
	if len(got) != 2*n {
		t.Fatalf("Load() found %d problems, want %d", len(got), 2*n)
	}
	if want := "big.yaml:6: metadata.labels[bad key 0]: invalid label key"; !strings.HasPrefix(got[0], want) {
		t.Errorf("first problem %q, want it to start with %q", got[0], want)
	}
	if want := "big.yaml:" + itoa(2*n+8) + ": spec.unknown" + itoa(n-1) + ": unknown field: the fields here are addresses, ports, selector, serviceAccounts"; got[len(got)-1] != want {
		t.Errorf("last problem %q, want %q", got[len(got)-1], want)
	}
	t.Logf("%d problems in %v", len(got), time.Since(start))
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadMissingDir(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load() error = %v, want one wrapping fs.ErrNotExist", err)
	}
	if err != nil && !strings.HasPrefix(err.Error(), "localconfig: ") {
		t.Errorf("Load() error = %q, want the package prefix", err)
	}
}

func TestLoadErrorString(t *testing.T) {
	err := &LoadError{Problems: []Problem{
		{File: "a.yaml", Msg: "cannot read file: permission denied"},
		{File: "b.yaml", Line: 3, Msg: "kind: is required"},
	}}
	want := "a.yaml: cannot read file: permission denied\nb.yaml:3: kind: is required"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestSyntaxErrorLine(t *testing.T) {
	const head = "apiVersion: v\nkind: Service\nmetadata:\n  name: orders\n"
	tests := []struct {
		name string
		yaml string
		want int
	}{
		{"indented too little", head + " namespace: shop\nspec: {}\n", 5},
		{"indented too much", head + "    namespace: shop\nspec: {}\n", 5},
		{"list item indented", head + "spec:\n  ports:\n  - port: 80\n   name: x\n", 8},
		{"unclosed flow mapping", head + "spec:\n  selector: {app: orders\n  ports: []\n", 6},
		{"unclosed quote", head + "  namespace: \"shop\nspec: {}\n", 5},
		{"list under mapping", head + "spec:\n  ports:\n    - port: 80\n  - port: 81\n", 8},
		{"missing colon", "a: 1\nb\nc: 2\n", 2},
		{"tab", "a:\n\tb: 1\n", 2},
		{"in a later document", "a: 1\n---\nb: 1\n---\nc: 1\n d: 2\n", 6},
		{"unknown anchor", "a: 1\nb: 2\nc: *x\n", 3},
		{"unclosed quote before a document", "a: \"x\n---\nb: 1\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseStream([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("parseStream(%q) succeeded", tt.yaml)
			}
			reported, msg := splitYAMLError(err)
			data := []byte(tt.yaml)
			if got := syntaxErrorLine(data, lineStarts(data), 0, reported, msg); got != tt.want {
				t.Errorf("syntaxErrorLine() = %d, want %d (yaml.v3 said %v)", got, tt.want, err)
			}
		})
	}
}

func TestLineOf(t *testing.T) {
	const doc = `apiVersion: rampart.dev/v1alpha1
kind: Service
metadata:
  name: orders
  labels:
    app.kubernetes.io/name: orders
    weird]key: x
base: &base
  protocol: HTTP
spec:
  selector: {app: orders}
  ports:
  - name: http
    port: 80
  - <<: *base
    port: 81
  - *base
`
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	root := n.Content[0]
	tests := []struct {
		path string
		want int
	}{
		{"", 1},
		{"kind", 2},
		{"metadata.name", 4},
		{"metadata.namespace", 3},
		{"metadata.labels[app.kubernetes.io/name]", 6},
		{"metadata.labels[weird]key]", 7},
		{"spec.selector", 11},
		{"spec.selector[app]", 11},
		{"spec.ports", 12},
		{"spec.ports[0]", 13},
		{"spec.ports[0].port", 14},
		{"spec.ports[0].targetPort", 13},
		{"spec.ports[1].port", 16},
		{"spec.ports[1].protocol", 9}, // merged in from the anchor
		{"spec.ports[2].protocol", 9}, // through an alias
		{"spec.ports[7].port", 12},
		{"spec.ports.port", 12}, // encoding/json's paths have no indexes
	}
	for _, tt := range tests {
		if got := lineOf(root, tt.path); got != tt.want {
			t.Errorf("lineOf(%q) = %d, want %d", tt.path, got, tt.want)
		}
	}
}

func TestSplitPath(t *testing.T) {
	tests := []struct {
		path string
		want []string
	}{
		{"", nil},
		{"metadata.name", []string{"metadata", "name"}},
		{"spec.ports[1].targetPort", []string{"spec", "ports", "1", "targetPort"}},
		{"metadata.labels[app.kubernetes.io/name]", []string{"metadata", "labels", "app.kubernetes.io/name"}},
		{"a[b][c].d", []string{"a", "b", "c", "d"}},
		{"a[unclosed", []string{"a", "unclosed"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, splitPath(tt.path)); diff != "" {
			t.Errorf("splitPath(%q) mismatch (-want +got):\n%s", tt.path, diff)
		}
	}
}

// BenchmarkLoadManyProblems loads a document with 2*n problems; ns/op
// divided by the problem count should not grow with n (no quadratic
// time on a hostile file).
func BenchmarkLoadManyProblems(b *testing.B) {
	for _, n := range []int{5_000, 50_000} {
		b.Run(itoa(2*n)+"-problems", func(b *testing.B) {
			var sb strings.Builder
			sb.WriteString("apiVersion: rampart.dev/v1alpha1\nkind: Service\nmetadata:\n  name: big\n  labels:\n")
			for i := range n {
				sb.WriteString("    bad key " + itoa(i) + ": x\n")
			}
			sb.WriteString("spec:\n  selector: {app: big}\n  ports: [{port: 80}]\n")
			for i := range n {
				sb.WriteString("  unknown" + itoa(i) + ": x\n")
			}
			dir := b.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "big.yaml"), []byte(sb.String()), 0o644); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := Load(dir); err == nil {
					b.Fatal("Load of a broken file succeeded")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*n), "ns/problem")
		})
	}
}
