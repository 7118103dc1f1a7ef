package discovery

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
)

const auditWeb = `
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-candidate, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  mode: AUDIT
  rules:
  - from: [{principals: ["spiffe://example.org/ns/shop/sa/cart"]}]
`

func TestCoverage(t *testing.T) {
	orders := map[string]string{"app": "orders"}
	web := map[string]string{"app": "web"}
	res := &localconfig.Resources{
		Workloads: []v1alpha1.Workload{staticWorkload("shop", "orders-1", "orders", "10.0.0.1:15008", orders)},
	}
	withPolicies(t, res, allowWeb, permissiveShop, auditWeb)
	m := newModel(t)
	m.SetResources(res)
	// The declared workload also registers: one entry, both flags.
	mustRegister(t, m, Registration{ID: wid("shop", "orders"), Name: "orders-1", Labels: orders, TunnelAddress: "10.0.0.1:15008"})
	mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.2:15008"})

	got := m.Coverage()
	want := []WorkloadCoverage{
		{
			Namespace: "shop", Name: "orders-1", ServiceAccount: "orders", SPIFFEID: "spiffe://example.org/ns/shop/sa/orders",
			Declared: true, Registered: true, Default: "allow-authenticated", DefaultSource: got[0].DefaultSource, TLS: "PERMISSIVE",
			Policies: []PolicyRef{{Namespace: "shop", Name: "orders-from-web", Action: "ALLOW", Mode: "ENFORCE"}},
		},
		{
			Namespace: "shop", Name: "web-1", ServiceAccount: "web", SPIFFEID: "spiffe://example.org/ns/shop/sa/web",
			Registered: true, Default: "allow-authenticated", DefaultSource: got[1].DefaultSource, TLS: "PERMISSIVE",
			Policies: []PolicyRef{{Namespace: "shop", Name: "web-candidate", Action: "ALLOW", Mode: "AUDIT"}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Coverage (-want +got):\n%s", diff)
	}
	if !got[0].HasAllow() {
		t.Error("orders-1: an enforced ALLOW policy selects it, HasAllow is false")
	}
	if got[1].HasAllow() {
		t.Error("web-1: its only ALLOW policy is in AUDIT mode, HasAllow is true")
	}

	// A mesh-wide deny-all default shows.
	m.SetResources(withPolicies(t, &localconfig.Resources{}, denyAllMesh))
	for _, c := range m.Coverage() {
		if c.Default != "deny-all" {
			t.Errorf("%s/%s: default %s, want deny-all", c.Namespace, c.Name, c.Default)
		}
	}
}
