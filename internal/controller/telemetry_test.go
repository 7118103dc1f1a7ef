package controller

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

func TestTrafficAPI(t *testing.T) {
	c, err := New(Config{StateDir: t.TempDir(), AdminListen: "off"})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/web")
	// An interval that ended a while ago: windows end with the last
	// complete bucket.
	if err := c.Graph().Add(graph.Report{Instance: "i", ID: id, Namespace: "shop", Workload: "web", Interval: 5 * time.Second,
		End:   time.Now().Add(-15 * time.Second),
		Edges: []graph.EdgeReport{{Direction: graph.Outbound, Counts: graph.Counts{Requests: 10, Failures: 1}}}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.adminHandler())
	t.Cleanup(srv.Close)

	get := func(path string) (int, string) {
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
		return resp.StatusCode, string(body)
	}
	tests := []struct {
		path string
		code int
		want string // in the body
	}{
		{"/api/v1/stat", 200, `"window_seconds": 60`},
		{"/api/v1/stat?namespace=shop&workload=web&window=10m", 200, `"requests": 10`},
		{"/api/v1/stat?namespace=other", 200, `"workloads": []`},
		{"/api/v1/edges?namespace=shop", 200, `"reported_by": "source"`},
		{"/api/v1/edges?namespace=other", 200, `"edges": []`},
		{"/api/v1/stat?namespace=shop&workload=nope", 404, `workload shop/nope has not reported traffic`},
		{"/api/v1/edges?namespace=shop&workload=nope", 404, `workload shop/nope has not reported traffic`},
		{"/api/v1/stat?window=7s", 400, `query parameter window`},
		{"/api/v1/stat?window=5s", 400, `query parameter window: window \"5s\": want 15s to 10m0s`},
		{"/api/v1/edges?window=10s", 400, `query parameter window: window \"10s\": want 15s to 10m0s`},
		{"/api/v1/stat?window=1h", 400, `query parameter window`},
		{"/api/v1/edges?namespace=Shop", 400, `query parameter namespace`},
		{"/api/v1/stat?workload=web", 400, `query parameter workload needs namespace`},
		{"/api/v1/stat?namespace=shop&workload=Web_1", 400, `query parameter workload`},
		{"/api/v1/stat?ns=shop", 400, `unknown query parameter \"ns\"`},
		{"/api/v1/edges?window=1m&window=2m", 400, `query parameter \"window\" given 2 times`},
	}
	for _, tt := range tests {
		code, body := get(tt.path)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s = %d %s; want %d with %s", tt.path, code, body, tt.code, tt.want)
		}
		if code != 200 {
			var e graph.ErrorResponse
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
				t.Errorf("GET %s: error body %q is not {\"error\": ...}", tt.path, body)
			}
		}
	}
}
