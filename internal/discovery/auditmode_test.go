package discovery

import (
	"testing"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/authzpb"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

const allowWebAuditMode = `
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders-recommended, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  mode: AUDIT
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://example.org/ns/shop/sa/web"]}]
`

// TestConfigCarriesThePolicyMode: a policy in AUDIT mode reaches the proxy
// in AUDIT mode, and the proxy decides without it.
func TestConfigCarriesThePolicyMode(t *testing.T) {
	orders := map[string]string{"app": "orders"}
	res := &localconfig.Resources{
		Services: []v1alpha1.Service{service("shop", "orders", orders, []string{"orders"}, port{port: 80, targetPort: 8080})},
	}
	withPolicies(t, res, allowWebAuditMode, denyAllMesh)
	m := newModel(t)
	m.SetResources(res)
	mustRegister(t, m, Registration{ID: wid("shop", "orders"), Name: "orders-1", Labels: orders, TunnelAddress: "10.0.0.1:15008"})

	cfg := m.ConfigFor(wid("shop", "orders"), "orders-1", nil)
	ps := cfg.GetAuthorization().GetPolicies()
	if len(ps) != 1 || ps[0].GetMode() != meshv1.PolicyMode_POLICY_MODE_AUDIT {
		t.Fatalf("policies sent = %v, want orders-recommended in AUDIT mode", ps)
	}
	web := "spiffe://example.org/ns/shop/sa/web"
	if d := decisionFor(t, cfg, web); d.Allow || d.Code != authz.CodeDefaultDeny {
		t.Errorf("decision = %v (%v), want the default deny-all: the policy in AUDIT mode must not decide", d, d.Code)
	}
	wp, err := authzpb.FromProto(cfg.GetAuthorization())
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.Compile(wp)
	if err != nil {
		t.Fatal(err)
	}
	if a := e.DecideAuditMode(&authz.Request{Source: web, Authenticated: true, Port: 8080, Protocol: authz.ProtocolTCP}); !a.Allow || a.Policy != "shop/orders-recommended" {
		t.Errorf("decision in AUDIT mode = %v, want allowed by shop/orders-recommended", a)
	}
}
