package controller

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/dashboard"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// TestDashboardRoutes checks what the admin listener serves the dashboard:
// its files, and the series of /api/v1/series with the errors of the
// other traffic endpoints, counted.
func TestDashboardRoutes(t *testing.T) {
	c, err := New(Config{StateDir: t.TempDir(), AdminListen: "off"})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/web")
	// The report ends on a bucket's edge, so that the bucket it fills is
	// complete.
	end := time.Now().Truncate(graph.BucketWidth)
	if err := c.Graph().Add(graph.Report{Instance: "i", ID: id, Namespace: "shop", Workload: "web", Interval: 5 * time.Second, End: end,
		Edges: []graph.EdgeReport{{Direction: graph.Outbound, Counts: graph.Counts{Requests: 10, Failures: 1}}}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.adminHandler())
	t.Cleanup(srv.Close)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := noRedirect.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	resp, body := get("/dashboard/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != dashboard.CSP || !strings.Contains(body, "Rampart dashboard") {
		t.Errorf("GET /dashboard/ = %d %q, CSP %q", resp.StatusCode, body, resp.Header.Get("Content-Security-Policy"))
	}
	if resp, _ := get("/dashboard"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/dashboard/" {
		t.Errorf("GET /dashboard = %d to %q, want a redirect to /dashboard/", resp.StatusCode, resp.Header.Get("Location"))
	}

	resp, body = get("/api/v1/series?window=30s")
	var sr graph.SeriesResponse
	if err := json.Unmarshal([]byte(body), &sr); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/series = %d %s: %v", resp.StatusCode, body, err)
	}
	if sr.StepSeconds != 5 || sr.WindowSeconds != 30 || len(sr.Workloads) != 1 || len(sr.Workloads[0].Points) != 6 {
		t.Fatalf("series %+v, want web with 6 points of 5s", sr)
	}
	var sent uint64
	for _, p := range sr.Workloads[0].Points {
		sent += p.Outbound.Requests
	}
	if sent != 10 {
		t.Errorf("series holds %d requests sent, want 10", sent)
	}
	for _, tt := range []struct {
		path string
		code int
		want string
	}{
		{"/api/v1/series?namespace=shop&workload=web&window=10m", 200, `"step_seconds": 60`},
		{"/api/v1/series?namespace=shop&workload=nope", 404, "workload shop/nope has not reported traffic"},
		{"/api/v1/series?window=7s", 400, "query parameter window"},
		{"/api/v1/series?workload=web", 400, "needs namespace"},
	} {
		resp, body := get(tt.path)
		if resp.StatusCode != tt.code || !strings.Contains(body, tt.want) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s = %d %s; want %d with %s", tt.path, resp.StatusCode, body, tt.code, tt.want)
		}
	}
	get("/api/v1/stat?namespace=shop&workload=nope")
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "rampart_controller_traffic_api_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["endpoint"]+" "+labels["code"]] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"series 404": 1, "series 400": 2, "stat 404": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("refused{%s} = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if n := testutil.CollectAndCount(c.reg, "rampart_controller_dashboard_requests_total"); n != 3 {
		t.Errorf("%d dashboard request series, want 3", n)
	}
}
