package discovery

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// routeFromYAML decodes an HTTPRoute written as YAML, as a test would
// write a config file.
func routeFromYAML(t *testing.T, doc string) gatewayv1.HTTPRoute {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var r gatewayv1.HTTPRoute
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func prefix(v string) *meshv1.PathMatch {
	return &meshv1.PathMatch{Type: meshv1.PathMatchType_PATH_MATCH_TYPE_PREFIX, Value: v}
}

// exampleRoute is what the route of docs/traffic.md's example
// (localconfig's testdata/load/routing) compiles to.
var exampleRoute = &meshv1.Route{
	Namespace: "shop", Name: "web", Ports: []uint32{80},
	Rules: []*meshv1.RouteRule{
		{
			Name: "testers",
			Matches: []*meshv1.RouteMatch{{
				Path:    prefix("/"),
				Headers: []*meshv1.HeaderMatch{{Type: meshv1.HeaderMatchType_HEADER_MATCH_TYPE_EXACT, Name: "X-Canary", Value: "always"}},
			}},
			Backends: []*meshv1.RouteBackend{{Service: "web-v2", Namespace: "shop", Port: 80, Weight: 1}},
		},
		{
			Name:    "orders",
			Matches: []*meshv1.RouteMatch{{Path: prefix("/api/orders"), Method: "POST"}},
			RequestHeaders: &meshv1.HeaderModifier{
				Set:    []*meshv1.Header{{Name: "X-Write", Value: "true"}},
				Remove: []string{"X-Debug"},
			},
			Backends:              []*meshv1.RouteBackend{{Service: "web-v1", Namespace: "shop", Port: 80, Weight: 1}},
			RequestTimeout:        durationpb.New(10 * time.Second),
			BackendRequestTimeout: durationpb.New(3 * time.Second),
		},
		{
			Name:    "split",
			Matches: []*meshv1.RouteMatch{{Path: prefix("/")}},
			Backends: []*meshv1.RouteBackend{
				{Service: "web-v1", Namespace: "shop", Port: 80, Weight: 90},
				{Service: "web-v2", Namespace: "shop", Port: 80, Weight: 10},
			},
			RequestTimeout: durationpb.New(5 * time.Second),
		},
	},
}

// exampleModel is a model holding docs/traffic.md's routing example, with
// one registered workload of each version.
func exampleModel(t *testing.T) *Model {
	t.Helper()
	res, err := localconfig.Load("../localconfig/testdata/load/routing")
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(t)
	m.SetResources(res)
	mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-v1-a", Labels: map[string]string{"app": "web", "version": "v1"},
		TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")})
	mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-v2-a", Labels: map[string]string{"app": "web", "version": "v2"},
		TunnelAddress: "10.0.0.2:15008", PeerIP: netip.MustParseAddr("10.0.0.2")})
	return m
}

var (
	httpPort80 = []*meshv1.ServicePort{{Port: 80, TargetPort: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}}
	epV1       = &meshv1.Endpoint{Address: "10.0.0.1:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/web", Workload: "web-v1-a", Ip: "10.0.0.1"}
	epV2       = &meshv1.Endpoint{Address: "10.0.0.2:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/web", Workload: "web-v2-a", Ip: "10.0.0.2"}
)

// A proxy that asks for web gets web's routes, and web-v1 and web-v2, which
// it did not ask for, with their endpoints: the route's backends.
func TestRoutesCarryTheirBackends(t *testing.T) {
	m := exampleModel(t)
	want := []*meshv1.Service{
		{Name: "web", Namespace: "shop", Ports: httpPort80, Endpoints: []*meshv1.Endpoint{epV1, epV2}, Routes: []*meshv1.Route{exampleRoute}},
		{Name: "web-v1", Namespace: "shop", Ports: httpPort80, Endpoints: []*meshv1.Endpoint{epV1}},
		{Name: "web-v2", Namespace: "shop", Ports: httpPort80, Endpoints: []*meshv1.Endpoint{epV2}},
	}
	for _, upstreams := range [][]string{{"web.shop"}, {"web-v2.shop", "web.shop"}} {
		cfg := m.ConfigFor(wid("front", "client"), "client-1", upstreams)
		if diff := cmp.Diff(want, cfg.GetServices(), cmpOpts...); diff != "" {
			t.Errorf("upstreams %v: services (-want +got):\n%s", upstreams, diff)
		}
	}

	// Transparent: every service, and web's routes; a backend carries no
	// routes of its own.
	cfg := m.TransparentConfigFor(wid("front", "client"), "client-1")
	if diff := cmp.Diff(want, cfg.GetServices(), cmpOpts...); diff != "" {
		t.Errorf("transparent: services (-want +got):\n%s", diff)
	}

	// A proxy that does not ask for web gets neither its routes nor its
	// backends.
	cfg = m.ConfigFor(wid("front", "client"), "client-1", []string{"web-v1.shop"})
	if diff := cmp.Diff(want[1:2], cfg.GetServices(), cmpOpts...); diff != "" {
		t.Errorf("web-v1 only: services (-want +got):\n%s", diff)
	}
}

// A change of weights changes the version and nothing but the weights:
// the endpoints stay where they are, in the backends' Service entries.
func TestRouteWeightChange(t *testing.T) {
	m := exampleModel(t)
	id := wid("front", "client")
	before := m.ConfigFor(id, "client-1", []string{"web.shop"})

	res, err := localconfig.Load("../localconfig/testdata/load/routing")
	if err != nil {
		t.Fatal(err)
	}
	split := &res.HTTPRoutes[0].Spec.Rules[2]
	*split.BackendRefs[0].Weight, *split.BackendRefs[1].Weight = 0, 100
	m.SetResources(res)
	after := m.ConfigFor(id, "client-1", []string{"web.shop"})

	if before.GetVersion() == after.GetVersion() {
		t.Fatalf("version %s did not change with the weights", after.GetVersion())
	}
	got := after.GetServices()[0].GetRoutes()[0].GetRules()[2].GetBackends()
	if got[0].GetWeight() != 0 || got[1].GetWeight() != 100 {
		t.Errorf("weights = %d, %d, want 0, 100", got[0].GetWeight(), got[1].GetWeight())
	}
	b, a := proto.CloneOf(before), proto.CloneOf(after)
	b.Version, a.Version = "", ""
	for _, c := range []*meshv1.ProxyConfig{b, a} {
		for _, be := range c.GetServices()[0].GetRoutes()[0].GetRules()[2].GetBackends() {
			be.Weight = 0
		}
	}
	if diff := cmp.Diff(b, a, cmpOpts...); diff != "" {
		t.Errorf("configurations differ beyond the weights (-before +after):\n%s", diff)
	}
	// Same resources again: same version.
	m.SetResources(res)
	if again := m.ConfigFor(id, "client-1", []string{"web.shop"}); again.GetVersion() != after.GetVersion() {
		t.Errorf("version %s, want %s for the same resources", again.GetVersion(), after.GetVersion())
	}
}

func TestRoutePrecedenceAndPorts(t *testing.T) {
	web := map[string]string{"app": "web"}
	m := newModel(t)
	older := routeFromYAML(t, `
metadata: {name: zeta, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 90}, {group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`)
	alpha := routeFromYAML(t, `
metadata: {name: alpha, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`)
	beta := routeFromYAML(t, `
metadata: {name: beta, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`)
	// In another namespace: it does not attach to shop/web.
	other := routeFromYAML(t, `
metadata: {name: aaa, namespace: other}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`)
	m.SetResources(&localconfig.Resources{
		Services: []v1alpha1.Service{service("shop", "web", web, nil,
			port{name: "a", port: 80, protocol: v1alpha1.ProtocolHTTP}, port{name: "b", port: 90, protocol: v1alpha1.ProtocolHTTP})},
		// Sorted by name, as localconfig returns them; precedence is not.
		HTTPRoutes: []gatewayv1.HTTPRoute{other, beta, alpha, older},
	})
	routes := m.ConfigFor(wid("shop", "client"), "c", []string{"web"}).GetServices()[0].GetRoutes()
	type summary struct {
		Name  string
		Ports []uint32
	}
	var got []summary
	for _, r := range routes {
		got = append(got, summary{r.GetName(), r.GetPorts()})
	}
	want := []summary{{"zeta", []uint32{80, 90}}, {"alpha", nil}, {"beta", []uint32{80}}}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

// What the proxies cannot honour is sent so that they fail closed: an
// unknown backend stays in the rule (its share is answered 500) and adds no
// service; a route that does not validate becomes one rule without
// backends (every request answered 500); a route whose parent does not
// exist applies to nothing.
func TestRoutesFailClosed(t *testing.T) {
	web := map[string]string{"app": "web"}
	m := newModel(t)
	unknownBackend := routeFromYAML(t, `
metadata: {name: a-unknown-backend, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs: [{name: web, port: 80, weight: 1}, {name: gone, port: 80, weight: 1}, {name: api, port: 81}]
`)
	invalid := routeFromYAML(t, `
metadata: {name: b-invalid, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/a.*"}}]
    backendRefs: [{name: api, port: 80}]
`)
	orphan := routeFromYAML(t, `
metadata: {name: c-orphan, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: nothing}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
`)
	m.SetResources(&localconfig.Resources{
		Services: []v1alpha1.Service{
			service("shop", "web", web, nil, port{port: 80, protocol: v1alpha1.ProtocolHTTP}),
			service("shop", "api", map[string]string{"app": "api"}, nil, port{port: 80, protocol: v1alpha1.ProtocolHTTP}),
		},
		HTTPRoutes: []gatewayv1.HTTPRoute{unknownBackend, invalid, orphan},
	})
	port80 := []*meshv1.ServicePort{{Port: 80, TargetPort: 80, Protocol: meshv1.Protocol_PROTOCOL_HTTP}}
	want := []*meshv1.Service{
		{Name: "api", Namespace: "shop", Ports: port80},
		{Name: "web", Namespace: "shop", Ports: port80, Routes: []*meshv1.Route{{
			Namespace: "shop", Name: "a-unknown-backend",
			Rules: []*meshv1.RouteRule{{
				Matches: []*meshv1.RouteMatch{{Path: prefix("/")}},
				Backends: []*meshv1.RouteBackend{
					{Service: "web", Namespace: "shop", Port: 80, Weight: 1},
					{Service: "gone", Namespace: "shop", Port: 80, Weight: 1},
					{Service: "api", Namespace: "shop", Port: 81, Weight: 1},
				},
			}},
		}}},
	}
	cfg := m.ConfigFor(wid("shop", "client"), "c", []string{"web"})
	if diff := cmp.Diff(want, cfg.GetServices(), cmpOpts...); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}

	cfg = m.ConfigFor(wid("shop", "client"), "c", []string{"api"})
	wantAPI := []*meshv1.Service{{Name: "api", Namespace: "shop", Ports: port80, Routes: []*meshv1.Route{{
		Namespace: "shop", Name: "b-invalid", Ports: []uint32{80},
		Rules: []*meshv1.RouteRule{{Name: "invalid", Matches: []*meshv1.RouteMatch{{Path: prefix("/")}}}},
	}}}}
	if diff := cmp.Diff(wantAPI, cfg.GetServices(), cmpOpts...); diff != "" {
		t.Errorf("invalid route: services (-want +got):\n%s", diff)
	}
}

// The model never modifies the resources it is given: defaulting a route
// works on a copy.
func TestRoutesDoNotModifyResources(t *testing.T) {
	r := routeFromYAML(t, `
metadata: {name: r}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`)
	res := &localconfig.Resources{
		Services:   []v1alpha1.Service{service("default", "web", map[string]string{"app": "web"}, nil, port{port: 80})},
		HTTPRoutes: []gatewayv1.HTTPRoute{r},
	}
	want := res.HTTPRoutes[0].DeepCopy()
	m := newModel(t)
	m.SetResources(res)
	routes := m.ConfigFor(wid("default", "client"), "c", []string{"web"}).GetServices()[0].GetRoutes()
	if len(routes) != 1 || routes[0].GetRules()[0].GetBackends()[0].GetWeight() != 1 {
		t.Fatalf("routes = %v, want one route with the default weight 1", routes)
	}
	if diff := cmp.Diff(want, &res.HTTPRoutes[0]); diff != "" {
		t.Errorf("resources modified (-before +after):\n%s", diff)
	}
}
