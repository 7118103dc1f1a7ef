package discovery

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// The rampart.dev/idle-timeout annotation of an HTTPRoute is set on every
// rule of the route; a route without it leaves its rules without one, and
// an invalid value makes the route fail closed like any invalid route.
func TestRouteIdleTimeout(t *testing.T) {
	annotated := routeFromYAML(t, `
metadata:
  name: a-slow
  namespace: shop
  annotations: {rampart.dev/idle-timeout: 2m30s}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - name: reports
    matches: [{path: {value: /reports}}]
    backendRefs: [{name: web, port: 80}]
  - backendRefs: [{name: api, port: 80}]
`)
	plain := routeFromYAML(t, `
metadata: {name: b-plain, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - matches: [{path: {value: /api}}]
    backendRefs: [{name: api, port: 80}]
`)
	bad := routeFromYAML(t, `
metadata:
  name: c-bad
  namespace: shop
  annotations: {rampart.dev/idle-timeout: 100ms}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
`)
	m := newModel(t)
	m.SetResources(&localconfig.Resources{
		Services: []v1alpha1.Service{
			service("shop", "web", map[string]string{"app": "web"}, nil, port{port: 80, protocol: v1alpha1.ProtocolHTTP}),
			service("shop", "api", map[string]string{"app": "api"}, nil, port{port: 80, protocol: v1alpha1.ProtocolHTTP}),
		},
		HTTPRoutes: []gatewayv1.HTTPRoute{annotated, plain, bad},
	})
	idle := durationpb.New(150 * time.Second)
	want := []*meshv1.Route{
		{Namespace: "shop", Name: "a-slow", Rules: []*meshv1.RouteRule{
			{
				Name: "reports", Matches: []*meshv1.RouteMatch{{Path: prefix("/reports")}},
				Backends:    []*meshv1.RouteBackend{{Service: "web", Namespace: "shop", Port: 80, Weight: 1}},
				IdleTimeout: idle,
			},
			{
				Matches:     []*meshv1.RouteMatch{{Path: prefix("/")}},
				Backends:    []*meshv1.RouteBackend{{Service: "api", Namespace: "shop", Port: 80, Weight: 1}},
				IdleTimeout: idle,
			},
		}},
		{Namespace: "shop", Name: "b-plain", Rules: []*meshv1.RouteRule{{
			Matches:  []*meshv1.RouteMatch{{Path: prefix("/api")}},
			Backends: []*meshv1.RouteBackend{{Service: "api", Namespace: "shop", Port: 80, Weight: 1}},
		}}},
	}
	var got []*meshv1.Route
	for _, s := range m.ConfigFor(wid("shop", "client"), "c", []string{"web"}).GetServices() {
		if s.GetName() == "web" {
			got = s.GetRoutes()
		}
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("web's routes (-want +got):\n%s", diff)
	}

	wantBad := []*meshv1.Route{{Namespace: "shop", Name: "c-bad", Rules: []*meshv1.RouteRule{
		{Name: "invalid", Matches: []*meshv1.RouteMatch{{Path: prefix("/")}}},
	}}}
	for _, s := range m.ConfigFor(wid("shop", "client"), "c", []string{"api"}).GetServices() {
		if diff := cmp.Diff(wantBad, s.GetRoutes(), cmpOpts...); s.GetName() == "api" && diff != "" {
			t.Errorf("api's routes, with an invalid idle timeout (-want +got):\n%s", diff)
		}
	}
}
