package localconfig

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/api/httproute"
)

// routeIdleServices is a service and its backend for the routes below.
const routeIdleServices = `apiVersion: rampart.dev/v1alpha1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - port: 80
    protocol: HTTP
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata:
  name: web-v1
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - port: 80
    protocol: HTTP
`

// routeIdleRoute is an HTTPRoute of web whose idle timeout annotation is
// value, on line 7.
func routeIdleRoute(value string) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: shop
  annotations:
    rampart.dev/idle-timeout: "` + value + `"
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: web
  rules:
  - backendRefs:
    - name: web-v1
      port: 80
`
}

func loadRouteIdle(t *testing.T, value string) (*Resources, error) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"services.yaml": routeIdleServices, "route.yaml": routeIdleRoute(value)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return Load(dir)
}

func TestLoadRouteIdleTimeout(t *testing.T) {
	res, err := loadRouteIdle(t, "45s")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.HTTPRoutes) != 1 {
		t.Fatalf("%d routes loaded, want 1", len(res.HTTPRoutes))
	}
	if got, err := httproute.IdleTimeout(&res.HTTPRoutes[0]); err != nil || got.String() != "45s" {
		t.Errorf("idle timeout of the loaded route = %v, %v; want 45s", got, err)
	}

	for value, want := range map[string]string{
		"500ms":  `route.yaml:7: metadata.annotations[rampart.dev/idle-timeout]: "500ms" is not within 1s..24h`,
		"48h":    `route.yaml:7: metadata.annotations[rampart.dev/idle-timeout]: "48h" is not within 1s..24h`,
		"1 hour": `route.yaml:7: metadata.annotations[rampart.dev/idle-timeout]: invalid duration "1 hour": want a duration from 1s to 24h, such as 30s, 5m or 1h30m`,
	} {
		_, err := loadRouteIdle(t, value)
		var le *LoadError
		if !errors.As(err, &le) {
			t.Fatalf("Load with idle timeout %q: %v, want a *LoadError", value, err)
		}
		var got []string
		for _, p := range le.Problems {
			got = append(got, p.String())
		}
		if diff := cmp.Diff([]string{want}, got); diff != "" {
			t.Errorf("idle timeout %q: problems (-want +got):\n%s", value, diff)
		}
	}
}

// The worked example of docs/traffic.md's Idle timeouts: the export route
// carries the annotation, the other route of reports does not.
func TestLoadRouteIdleExample(t *testing.T) {
	res, err := Load(filepath.Join("testdata", "load", "route-idle"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for i := range res.HTTPRoutes {
		d, err := httproute.IdleTimeout(&res.HTTPRoutes[i])
		if err != nil {
			t.Fatal(err)
		}
		got[res.HTTPRoutes[i].Name] = d.String()
	}
	want := map[string]string{"reports-export": "10m0s", "reports": "0s"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("idle timeouts by route (-want +got):\n%s", diff)
	}
	if len(res.TrafficPolicies) != 1 || res.TrafficPolicies[0].Spec.IdleTimeout.Duration.String() != "30s" {
		t.Errorf("traffic policies %+v, want reports' with idleTimeout 30s", res.TrafficPolicies)
	}
}
