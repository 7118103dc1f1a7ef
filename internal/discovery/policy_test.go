package discovery

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/authzpb"
	"github.com/rampart-mesh/rampart/internal/authz/compile"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// withPolicies returns res with the policy documents added, each decoded
// and validated as the config directory would.
func withPolicies(t *testing.T, res *localconfig.Resources, docs ...string) *localconfig.Resources {
	t.Helper()
	for _, d := range docs {
		obj, err := compile.Decode([]byte(d))
		if err != nil {
			t.Fatalf("policy document: %v\n%s", err, d)
		}
		var r compile.Resources
		if err := r.Add(obj); err != nil {
			t.Fatal(err)
		}
		res.AuthorizationPolicies = append(res.AuthorizationPolicies, r.AuthorizationPolicies...)
		res.MeshTLSPolicies = append(res.MeshTLSPolicies, r.MeshTLSPolicies...)
		res.NamespacePolicies = append(res.NamespacePolicies, r.NamespacePolicies...)
		res.RateLimitPolicies = append(res.RateLimitPolicies, r.RateLimitPolicies...)
	}
	return res
}

const (
	allowWeb = `
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://example.org/ns/shop/sa/web"]}]
`
	denyAllMesh = `
apiVersion: rampart.dev/v1alpha1
kind: NamespacePolicy
metadata: {name: default, namespace: rampart-system}
spec: {defaultAuthorization: deny-all}
`
	permissiveShop = `
apiVersion: rampart.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: migrate, namespace: shop}
spec: {mode: PERMISSIVE}
`
	limitOrders = `
apiVersion: rampart.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  limits:
  - {name: all, per: overall, requestsPerSecond: 10}
`
)

// decisionFor decodes the policy of cfg as a proxy would and decides a
// request from caller.
func decisionFor(t *testing.T, cfg *meshv1.ProxyConfig, caller string) authz.Decision {
	t.Helper()
	wp, err := authzpb.FromProto(cfg.GetAuthorization())
	if err != nil {
		t.Fatalf("the proxy would refuse the policy: %v", err)
	}
	e, err := authz.Compile(wp)
	if err != nil {
		t.Fatalf("the proxy would refuse the policy: %v", err)
	}
	return e.Decide(&authz.Request{Source: caller, Authenticated: true, Port: 8080, Protocol: authz.ProtocolTCP})
}

func TestConfigCarriesTheWorkloadsPolicy(t *testing.T) {
	orders := map[string]string{"app": "orders"}
	res := &localconfig.Resources{
		Services: []v1alpha1.Service{service("shop", "orders", orders, []string{"orders"}, port{port: 80, targetPort: 8080})},
	}
	withPolicies(t, res, allowWeb, denyAllMesh, permissiveShop, limitOrders)
	m := newModel(t)
	m.SetResources(res)
	mustRegister(t, m, Registration{ID: wid("shop", "orders"), Name: "orders-1", Labels: orders, TunnelAddress: "10.0.0.1:15008"})
	mustRegister(t, m, Registration{ID: wid("shop", "cart"), Name: "cart-1", Labels: map[string]string{"app": "cart"}, TunnelAddress: "10.0.0.2:15008"})

	cfg := m.ConfigFor(wid("shop", "orders"), "orders-1", nil)
	wp, err := authzpb.FromProto(cfg.GetAuthorization())
	if err != nil {
		t.Fatal(err)
	}
	if len(wp.Policies) != 1 || wp.Policies[0].Name != "orders-from-web" {
		t.Errorf("orders' policies = %+v, want orders-from-web alone", wp.Policies)
	}
	if len(wp.RateLimits) != 1 || wp.RateLimits[0].Policy != "shop/orders" {
		t.Errorf("orders' rate limits = %+v, want shop/orders", wp.RateLimits)
	}
	if wp.TLS.Mode != authz.TLSPermissive {
		t.Errorf("orders' TLS mode = %s, want PERMISSIVE from shop/migrate", wp.TLS.Mode)
	}
	if d := decisionFor(t, cfg, "spiffe://example.org/ns/shop/sa/web"); !d.Allow {
		t.Errorf("web -> orders: %v, want allowed", d)
	}
	if d := decisionFor(t, cfg, "spiffe://example.org/ns/shop/sa/cart"); d.Allow || d.Code != authz.CodeNoAllowMatch {
		t.Errorf("cart -> orders: %v, want denied, no ALLOW rule matched", d)
	}

	// cart is selected by no ALLOW policy: the mesh-wide default denies.
	cfg = m.ConfigFor(wid("shop", "cart"), "cart-1", nil)
	if d := decisionFor(t, cfg, "spiffe://example.org/ns/shop/sa/orders"); d.Allow || d.Code != authz.CodeDefaultDeny {
		t.Errorf("orders -> cart: %v, want denied by the default", d)
	}

	// A policy change is a new configuration.
	before := m.ConfigFor(wid("shop", "orders"), "orders-1", nil).GetVersion()
	m.SetResources(withPolicies(t, &localconfig.Resources{Services: res.Services}, allowWeb))
	after := m.ConfigFor(wid("shop", "orders"), "orders-1", nil)
	if after.GetVersion() == before {
		t.Error("removing policies did not change the configuration's version")
	}
	if got := after.GetAuthorization().GetTls().GetMode(); got != meshv1.TLSMode_TLS_MODE_STRICT {
		t.Errorf("TLS mode without MeshTLSPolicy = %s, want STRICT", got)
	}
}

func TestConfigWithoutPoliciesAllowsAuthenticated(t *testing.T) {
	m := newModel(t)
	m.SetResources(&localconfig.Resources{})
	mustRegister(t, m, Registration{ID: wid("shop", "orders"), Name: "orders-1", TunnelAddress: "10.0.0.1:15008"})
	cfg := m.ConfigFor(wid("shop", "orders"), "orders-1", nil)
	if d := decisionFor(t, cfg, "spiffe://example.org/ns/other/sa/x"); !d.Allow || d.Code != authz.CodeDefaultAllow {
		t.Errorf("with no policy: %v, want allowed by the built-in default", d)
	}
}

func TestConfigForUnknownWorkloadDeniesAll(t *testing.T) {
	m := newModel(t)
	m.SetResources(&localconfig.Resources{})
	for name, cfg := range map[string]*meshv1.ProxyConfig{
		"unregistered":   m.ConfigFor(wid("shop", "orders"), "orders-1", nil),
		"foreign":        m.ConfigFor(spiffeid.RequireFromString("spiffe://other.org/ns/shop/sa/orders"), "orders-1", nil),
		"not a workload": m.ConfigFor(spiffeid.RequireFromString("spiffe://example.org/rampart/controller"), "x", nil),
	} {
		d := decisionFor(t, cfg, "spiffe://example.org/ns/shop/sa/web")
		if d.Allow || d.Code != authz.CodeDefaultDeny || !strings.Contains(d.Reason, "no registered workload") {
			t.Errorf("%s: %v, want denied: no registered workload", name, d)
		}
	}
}

// manyLimits is a RateLimitPolicy for app=orders with n limits: valid on
// its own, too many for one workload together with another like it.
func manyLimits(name string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: rampart.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: %s, namespace: shop}\nspec:\n  selector: {matchLabels: {app: orders}}\n  limits:\n", name)
	for i := range n {
		fmt.Fprintf(&b, "  - {name: l%d, per: overall, requestsPerSecond: 10}\n", i)
	}
	return b.String()
}

func TestPolicyThatCannotBeEnforcedKeepsTheLastGoodOne(t *testing.T) {
	orders := map[string]string{"app": "orders"}
	services := []v1alpha1.Service{service("shop", "orders", orders, []string{"orders"}, port{port: 80, targetPort: 8080})}
	m := newModel(t)
	m.SetResources(withPolicies(t, &localconfig.Resources{Services: services}, allowWeb))
	mustRegister(t, m, Registration{ID: wid("shop", "orders"), Name: "orders-1", Labels: orders, TunnelAddress: "10.0.0.1:15008"})
	good := m.ConfigFor(wid("shop", "orders"), "orders-1", nil)

	// 2 x 600 limits: each policy validates, but no proxy takes more than
	// 1024 limits for one workload.
	m.SetResources(withPolicies(t, &localconfig.Resources{Services: services}, allowWeb, manyLimits("a", 600), manyLimits("b", 600)))
	kept := m.ConfigFor(wid("shop", "orders"), "orders-1", nil)
	if d := cmp.Diff(good.GetAuthorization(), kept.GetAuthorization(), protocmp.Transform()); d != "" {
		t.Errorf("the workload did not keep its last good policy (-good +sent):\n%s", d)
	}
	if d := decisionFor(t, kept, "spiffe://example.org/ns/shop/sa/web"); !d.Allow {
		t.Errorf("web -> orders under the kept policy: %v", d)
	}

	// A workload that never had a good policy denies everything.
	mustRegister(t, m, Registration{ID: wid("shop", "orders"), Name: "orders-2", Labels: orders, TunnelAddress: "10.0.0.2:15008"})
	fresh := m.ConfigFor(wid("shop", "orders"), "orders-2", nil)
	if d := decisionFor(t, fresh, "spiffe://example.org/ns/shop/sa/web"); d.Allow || d.Code != authz.CodeDefaultDeny {
		t.Errorf("a new workload under policies that cannot be enforced: %v, want denied", d)
	}
	// Fixed: the new policy applies again.
	m.SetResources(withPolicies(t, &localconfig.Resources{Services: services}, allowWeb, manyLimits("a", 600)))
	wp, err := authzpb.FromProto(m.ConfigFor(wid("shop", "orders"), "orders-2", nil).GetAuthorization())
	if err != nil || len(wp.RateLimits) != 600 {
		t.Errorf("after the fix: %d limits, %v; want 600", len(wp.RateLimits), err)
	}
}
