package controller

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/discovery"
	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/insights/recommend"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

func TestBaselineAPI(t *testing.T) {
	c, err := New(Config{StateDir: t.TempDir(), AdminListen: "off"})
	if err != nil {
		t.Fatal(err)
	}
	api := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/api")
	web := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/web")
	unregister, err := c.Model().Register(discovery.Registration{ID: api, Name: "api", Labels: map[string]string{"app": "api", "version": "v2"},
		TunnelAddress: "10.0.0.2:15008", PeerIP: netip.MustParseAddr("10.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	defer unregister()
	// The api's proxy reports what web sent it.
	c.Insights().ObserveReport(graph.Report{Instance: "api-1", ID: api, Namespace: "shop", Workload: "api", Interval: 5 * time.Second, End: time.Now(),
		Edges: []graph.EdgeReport{{Direction: graph.Inbound, PeerID: web, PeerWorkload: "web", Service: "shop/api", MTLS: true,
			Counts: graph.Counts{Requests: 12},
			Routes: []graph.RouteCount{
				{Method: "GET", Path: "/orders/42", StatusClass: 2, Count: 10},
				{Method: "POST", Path: "/orders", StatusClass: 2, Count: 2},
			}}}})

	srv := httptest.NewServer(c.adminHandler())
	t.Cleanup(srv.Close)
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", path, ct)
		}
		return resp.StatusCode, body
	}

	code, body := get("/api/v1/baseline")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/baseline = %d %s", code, body)
	}
	var snap insights.Snapshot
	if err := json.Unmarshal(body, &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Workloads) != 1 || snap.Workloads[0].Workload != "api" || snap.Workloads[0].Labels["app"] != "api" {
		t.Fatalf("baseline workloads %+v, want api with its labels", snap.Workloads)
	}
	// The engine's own snapshot is not labelled: labels are filled on a copy.
	if got := c.Insights().Snapshot(); len(got.Workloads) == 1 && got.Workloads[0].Labels != nil {
		t.Errorf("the engine's snapshot was labelled: %v", got.Workloads[0].Labels)
	}
	// What the API answers is what recommend reads.
	res, err := recommend.Policies(&snap, recommend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Policies) != 1 || res.Policies[0].Policy.Spec.Selector.MatchLabels["app"] != "api" {
		t.Fatalf("recommended %d policies, want one selecting app=api", len(res.Policies))
	}
	rules := res.Policies[0].Policy.Spec.Rules
	if len(rules) != 1 || rules[0].From[0].Principals[0] != web.String() {
		t.Fatalf("rules %+v, want one for %s", rules, web)
	}

	for _, tt := range []struct {
		path string
		code int
		want string
	}{
		{"/api/v1/baseline?namespace=other", 200, `"workloads": []`},
		{"/api/v1/baseline?namespace=shop", 200, `"workload": "api"`},
		{"/api/v1/baseline?namespace=Shop", 400, `namespace \"Shop\"`},
		{"/api/v1/baseline?ns=shop", 400, `unknown query parameter \"ns\"`},
		{"/api/v1/baseline?namespace=a&namespace=b", 400, `given 2 times`},
	} {
		code, body := get(tt.path)
		if code != tt.code || !strings.Contains(string(body), tt.want) {
			t.Errorf("GET %s = %d %s; want %d with %s", tt.path, code, body, tt.code, tt.want)
		}
	}
}
