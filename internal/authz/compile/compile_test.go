package compile

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
)

// mustDecode decodes documents separated by "---" into Resources.
func mustDecode(t *testing.T, docs string) *Resources {
	t.Helper()
	var res Resources
	for _, d := range splitDocs(docs) {
		if strings.TrimSpace(d) == "" {
			continue
		}
		obj, err := Decode([]byte(d))
		if err != nil {
			t.Fatalf("Decode: %v\n%s", err, d)
		}
		if err := res.Add(obj); err != nil {
			t.Fatal(err)
		}
	}
	return &res
}

func ap(ns, name, action, extra string) string {
	return header + "kind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n  action: " + action + "\n" + extra + "---\n"
}

func TestForWorkloadSelectsPolicies(t *testing.T) {
	res := mustDecode(t,
		ap("shop", "b-all", "ALLOW", "  rules: [{}]\n")+
			ap("shop", "a-orders", "DENY", "  selector: {matchLabels: {app: orders}}\n  rules: [{}]\n")+
			ap("shop", "web-only", "ALLOW", "  selector: {matchLabels: {app: web}}\n")+
			ap("shop", "two-labels", "AUDIT", "  selector: {matchLabels: {app: orders, tier: db}}\n  rules: [{}]\n")+
			ap("other", "elsewhere", "ALLOW", "")+
			ap("rampart-system", "z-mesh", "DENY", "  rules: [{to: [{paths: [/debug/**]}]}]\n")+
			ap("rampart-system", "mesh-orders", "AUDIT", "  selector: {matchLabels: {app: orders}}\n  rules: [{}]\n")+
			ap("rampart-system", "mesh-web", "AUDIT", "  selector: {matchLabels: {app: web}}\n  rules: [{}]\n"))
	wp, err := ForWorkload(res, Workload{Namespace: "shop", Labels: map[string]string{"app": "orders", "pod-template-hash": "x"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range wp.Policies {
		got = append(got, p.Namespace+"/"+p.Name+" "+p.Action.String())
	}
	want := []string{
		"rampart-system/mesh-orders AUDIT",
		"rampart-system/z-mesh DENY",
		"shop/a-orders DENY",
		"shop/b-all ALLOW",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("policies (-want +got):\n%s", diff)
	}
	if wp.Namespace != "shop" || wp.Default != authz.DefaultAllowAuthenticated || wp.DefaultSource != "built-in default" {
		t.Errorf("default %v from %q", wp.Default, wp.DefaultSource)
	}
	if wp.TLS.Mode != authz.TLSStrict || wp.TLS.Source != "built-in default" {
		t.Errorf("tls %+v", wp.TLS)
	}
	if _, err := authz.Compile(wp); err != nil {
		t.Error(err)
	}
}

func TestForWorkloadErrors(t *testing.T) {
	res := &Resources{AuthorizationPolicies: []v1alpha1.AuthorizationPolicy{{}}}
	res.AuthorizationPolicies[0].Name = "bad"
	res.AuthorizationPolicies[0].Namespace = "shop"
	res.AuthorizationPolicies[0].Spec.Action = "MAYBE"
	_, err := ForWorkload(res, Workload{Namespace: "shop"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "AuthorizationPolicy shop/bad: v1alpha1: invalid resource: spec.action: must be ALLOW, DENY or AUDIT") {
		t.Errorf("ForWorkload: %v", err)
	}
	if _, err := ForWorkload(&Resources{}, Workload{}, Options{}); err == nil {
		t.Error("ForWorkload accepted a workload without a namespace")
	}
	var r Resources
	if err := r.Add(&v1alpha1.Service{}); err == nil {
		t.Error("Add accepted a Service")
	}
}

func np(ns, name, mode string) string {
	return header + "kind: NamespacePolicy\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec: {defaultAuthorization: " + mode + "}\n---\n"
}

func TestDefaultResolution(t *testing.T) {
	tests := []struct {
		name, docs string
		opts       Options
		want       authz.DefaultMode
		source     string
	}{
		{"built in", "", Options{}, authz.DefaultAllowAuthenticated, "built-in default"},
		{"option", "", Options{MeshDefault: authz.DefaultDenyAll}, authz.DefaultDenyAll, "mesh default"},
		{"mesh-wide", np("rampart-system", "default", "deny-all"), Options{}, authz.DefaultDenyAll, "NamespacePolicy rampart-system/default (mesh-wide)"},
		{"namespace beats mesh-wide", np("rampart-system", "default", "deny-all") + np("shop", "default", "allow-same-namespace"), Options{}, authz.DefaultAllowSameNamespace, "NamespacePolicy shop/default"},
		{"other namespace ignored", np("other", "default", "deny-all"), Options{}, authz.DefaultAllowAuthenticated, "built-in default"},
		{"strictest of several", np("shop", "b", "allow-authenticated") + np("shop", "a", "allow-same-namespace"), Options{}, authz.DefaultAllowSameNamespace, "NamespacePolicy shop/a, shop/b"},
		{"custom root", np("mesh", "default", "deny-all"), Options{RootNamespace: "mesh"}, authz.DefaultDenyAll, "NamespacePolicy mesh/default (mesh-wide)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wp, err := ForWorkload(mustDecode(t, tt.docs), Workload{Namespace: "shop"}, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if wp.Default != tt.want || wp.DefaultSource != tt.source {
				t.Errorf("default %v from %q, want %v from %q", wp.Default, wp.DefaultSource, tt.want, tt.source)
			}
		})
	}
}

func tlsDoc(ns, name, spec string) string {
	return header + "kind: MeshTLSPolicy\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec: " + spec + "\n---\n"
}

func TestTLSResolution(t *testing.T) {
	orders := Workload{Namespace: "shop", Labels: map[string]string{"app": "orders"}}
	tests := []struct {
		name, docs string
		want       authz.TLSPolicy
	}{
		{"default", "", authz.TLSPolicy{Mode: authz.TLSStrict, Source: "built-in default"}},
		{"mesh-wide", tlsDoc("rampart-system", "m", "{mode: PERMISSIVE}"), authz.TLSPolicy{Mode: authz.TLSPermissive, Source: "MeshTLSPolicy rampart-system/m (mesh-wide)"}},
		{"namespace beats mesh", tlsDoc("rampart-system", "m", "{mode: PERMISSIVE}") + tlsDoc("shop", "n", "{mode: STRICT}"), authz.TLSPolicy{Mode: authz.TLSStrict, Source: "MeshTLSPolicy shop/n"}},
		{"workload beats namespace", tlsDoc("shop", "n", "{mode: STRICT}") + tlsDoc("shop", "w", "{selector: {matchLabels: {app: orders}}, mode: PERMISSIVE}"), authz.TLSPolicy{Mode: authz.TLSPermissive, Source: "MeshTLSPolicy shop/w"}},
		{"mesh selector beats mesh namespace", tlsDoc("rampart-system", "a", "{mode: STRICT}") + tlsDoc("rampart-system", "b", "{selector: {matchLabels: {app: orders}}, mode: PERMISSIVE}"), authz.TLSPolicy{Mode: authz.TLSPermissive, Source: "MeshTLSPolicy rampart-system/b (mesh-wide)"}},
		{"namespace beats mesh selector", tlsDoc("shop", "a", "{mode: STRICT}") + tlsDoc("rampart-system", "b", "{selector: {matchLabels: {app: orders}}, mode: PERMISSIVE}"), authz.TLSPolicy{Mode: authz.TLSStrict, Source: "MeshTLSPolicy shop/a"}},
		{"selector not matching", tlsDoc("shop", "w", "{selector: {matchLabels: {app: web}}, mode: PERMISSIVE}"), authz.TLSPolicy{Mode: authz.TLSStrict, Source: "built-in default"}},
		{"strict wins on a tie", tlsDoc("shop", "a", "{mode: PERMISSIVE}") + tlsDoc("shop", "b", "{mode: STRICT}") + tlsDoc("shop", "c", "{mode: PERMISSIVE}"), authz.TLSPolicy{Mode: authz.TLSStrict, Source: "MeshTLSPolicy shop/a, shop/b, shop/c"}},
		{"ports only inherit", tlsDoc("shop", "n", "{mode: PERMISSIVE}") + tlsDoc("shop", "w", "{selector: {matchLabels: {app: orders}}, ports: [{port: 8443, mode: STRICT}]}"),
			authz.TLSPolicy{Mode: authz.TLSPermissive, Source: "MeshTLSPolicy shop/n", Ports: []authz.PortTLS{{Port: 8443, Mode: authz.TLSStrict}}}},
		{"ports from workload beat mesh ports", tlsDoc("rampart-system", "m", "{selector: {matchLabels: {app: orders}}, ports: [{port: 80, mode: STRICT}, {port: 81, mode: STRICT}]}") + tlsDoc("shop", "w", "{selector: {matchLabels: {app: orders}}, ports: [{port: 80, mode: PERMISSIVE}]}"),
			authz.TLSPolicy{Mode: authz.TLSStrict, Source: "built-in default", Ports: []authz.PortTLS{{Port: 80, Mode: authz.TLSPermissive}, {Port: 81, Mode: authz.TLSStrict}}}},
		{"port tie strict wins", tlsDoc("shop", "a", "{selector: {matchLabels: {app: orders}}, ports: [{port: 80, mode: PERMISSIVE}]}") + tlsDoc("shop", "b", "{selector: {matchLabels: {app: orders}}, ports: [{port: 80, mode: STRICT}]}"),
			authz.TLSPolicy{Mode: authz.TLSStrict, Source: "built-in default", Ports: []authz.PortTLS{{Port: 80, Mode: authz.TLSStrict}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wp, err := ForWorkload(mustDecode(t, tt.docs), orders, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, wp.TLS); diff != "" {
				t.Errorf("TLS (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRateLimits(t *testing.T) {
	res := mustDecode(t, header+`kind: RateLimitPolicy
metadata: {name: b, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  limits:
  - {name: one, per: overall, requestsPerSecond: 10}
  - {name: two, per: route, requestsPerSecond: 5, burst: 1, match: {to: [{paths: [/a]}, {paths: [/b]}]}}
---
`+header+`kind: RateLimitPolicy
metadata: {name: a, namespace: rampart-system}
spec:
  limits:
  - {name: src, per: source, requestsPerSecond: 100, onExceed: {coolDown: 30s}}
---
`+header+`kind: RateLimitPolicy
metadata: {name: c, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  limits:
  - {name: x, per: overall, requestsPerSecond: 1}
`)
	wp, err := ForWorkload(res, Workload{Namespace: "shop", Labels: map[string]string{"app": "orders"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range wp.RateLimits {
		got = append(got, l.Policy+"/"+l.Name)
	}
	if diff := cmp.Diff([]string{"rampart-system/a/src", "shop/b/one", "shop/b/two"}, got); diff != "" {
		t.Errorf("limits (-want +got):\n%s", diff)
	}
	if l := wp.RateLimits[0]; l.Per != authz.PerSource || l.RequestsPerSecond != 100 || l.Burst != 100 || l.CoolDownAfter != 3 || l.CoolDown.Seconds() != 30 {
		t.Errorf("limit %+v", l)
	}
	if l := wp.RateLimits[2]; l.Per != authz.PerRoute || l.Burst != 1 || len(l.To) != 2 {
		t.Errorf("limit %+v", l)
	}
	if _, err := authz.Compile(wp); err != nil {
		t.Error(err)
	}
}
