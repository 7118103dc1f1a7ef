package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
	"github.com/rampart-mesh/rampart/internal/telemetry/sketch"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func ptr(v float64) *float64 { return &v }

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestPrintStat(t *testing.T) {
	var b bytes.Buffer
	printStat(&b, graph.StatResponse{Window: "1m0s", WindowSeconds: 60, Workloads: []graph.WorkloadStat{
		{
			Namespace: "shop", Name: "api", Instances: 2, Identities: []string{"spiffe://rampart.local/ns/shop/sa/api"},
			Inbound: graph.Traffic{Requests: 1203, Failures: 1, Denied: 12, RequestsPerSecond: 20.05,
				SuccessRate: ptr(0.99969), MTLSShare: ptr(1), LatencyMs: &graph.Latency{P50: 4.2168, P95: 18.94, P99: 250.4}},
			Outbound: graph.Traffic{Requests: 40, RequestsPerSecond: 0.6667, SuccessRate: ptr(0.9), MTLSShare: ptr(1)},
		},
		{
			Namespace: "shop", Name: "loadgen", Instances: 1,
			Outbound: graph.Traffic{Requests: 1203, RequestsPerSecond: 20.05, SuccessRate: ptr(0.75), MTLSShare: ptr(0.5)},
		},
		{
			Namespace: "shop", Name: "web", Instances: 1, Identities: []string{"spiffe://rampart.local/ns/shop/sa/intruder"},
			Inbound: graph.Traffic{Requests: 1, RequestsPerSecond: 0.0167, SuccessRate: ptr(0), MTLSShare: ptr(1)},
		},
		{
			Namespace: "shop", Name: "web", Instances: 1, Identities: []string{"spiffe://rampart.local/ns/shop/sa/web"},
			Inbound: graph.Traffic{Requests: 3, RequestsPerSecond: 0.05, SuccessRate: ptr(1), MTLSShare: ptr(0),
				LatencyMs: &graph.Latency{P50: 0.1, P95: 1500, P99: 104857.6}},
		},
	}})
	golden(t, "stat.golden", b.String())

	b.Reset()
	printStat(&b, graph.StatResponse{Window: "1m0s", WindowSeconds: 60, Workloads: []graph.WorkloadStat{}})
	if got := b.String(); got != "No workload reported traffic in the last 10 minutes.\n" {
		t.Errorf("empty stat printed %q", got)
	}
}

func TestPrintEdges(t *testing.T) {
	web := graph.EdgeEnd{Namespace: "shop", Workload: "web", Identity: "spiffe://rampart.local/ns/shop/sa/web"}
	api := graph.EdgeEnd{Namespace: "shop", Workload: "api", Identity: "spiffe://rampart.local/ns/shop/sa/api", Service: "shop/api"}
	var b bytes.Buffer
	printEdges(&b, graph.EdgesResponse{Window: "10m0s", WindowSeconds: 600, Edges: []graph.EdgeStat{
		{Source: graph.EdgeEnd{}, Destination: api, ReportedBy: graph.ByDestination, Authorized: true,
			Traffic: graph.Traffic{Requests: 10, RequestsPerSecond: 0.0167, SuccessRate: ptr(1), MTLSShare: ptr(0)}},
		{Source: graph.EdgeEnd{Namespace: "shop", Identity: "spiffe://rampart.local/ns/shop/sa/batch"}, Destination: api,
			ReportedBy: graph.ByDestination, MTLS: true, Authorized: false,
			Traffic: graph.Traffic{Requests: 7, Denied: 7, RequestsPerSecond: 0.0117, SuccessRate: ptr(1), MTLSShare: ptr(1)}},
		{Source: web, Destination: api, ReportedBy: graph.ByBoth, MTLS: true, Authorized: true,
			Traffic: graph.Traffic{Requests: 6000, Failures: 600, RequestsPerSecond: 10, SuccessRate: ptr(0.9), MTLSShare: ptr(1),
				LatencyMs: &graph.Latency{P50: 3, P95: 9, P99: 12.34}}},
		{Source: web, Destination: graph.EdgeEnd{Service: "shop/cart"}, ReportedBy: graph.BySource, MTLS: true, Authorized: true,
			Traffic: graph.Traffic{Requests: 3, Failures: 3, RequestsPerSecond: 0.005, SuccessRate: ptr(0), MTLSShare: ptr(1)}},
		{Source: web, Destination: graph.EdgeEnd{}, ReportedBy: graph.BySource, Authorized: true,
			Traffic: graph.Traffic{Requests: 60, RequestsPerSecond: 0.1, SuccessRate: ptr(1), MTLSShare: ptr(0)}},
	}})
	golden(t, "edges.golden", b.String())

	b.Reset()
	printEdges(&b, graph.EdgesResponse{Window: "30s", WindowSeconds: 30})
	if got := b.String(); got != "No traffic in the last 30 seconds.\n" {
		t.Errorf("empty edges printed %q", got)
	}
}

func TestHumanFormats(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{percent(ptr(0.99969)), "99.9%"},
		{percent(ptr(1)), "100.0%"},
		{percent(ptr(0)), "0.0%"},
		{percent(nil), "-"},
		{millis(0.1234), "0.12ms"},
		{millis(4.2168), "4.22ms"},
		{millis(18.94), "18.9ms"},
		{millis(250.4), "250ms"},
		{millis(1500), "1.50s"},
		{rps(graph.Traffic{Requests: 1, RequestsPerSecond: 0.04}), "0.0"},
		{rps(graph.Traffic{RequestsPerSecond: 0}), "-"},
		{humanWindow(60), "minute"},
		{humanWindow(600), "10 minutes"},
		{humanWindow(15), "15 seconds"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestStatAndEdgesCommands runs the commands against a running controller
// whose graph holds known reports.
func TestStatAndEdgesCommands(t *testing.T) {
	c, err := controller.New(controller.Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-c.Ready()
	admin := c.AdminAddr()

	webID := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/web")
	apiID := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/api")
	var lat sketch.Sketch
	for range 100 {
		lat.Observe(0.005)
	}
	// Intervals that ended a while ago: a window ends with the last
	// complete bucket.
	end := time.Now().Add(-15 * time.Second)
	for _, r := range []graph.Report{
		{Instance: "web#1", ID: webID, Namespace: "shop", Workload: "web", Interval: 5 * time.Second, End: end, Edges: []graph.EdgeReport{{
			Direction: graph.Outbound, PeerID: apiID, PeerWorkload: "api", Service: "shop/api", MTLS: true,
			Counts: graph.Counts{Requests: 100, Failures: 20}, Latency: &lat}}},
		{Instance: "api#1", ID: apiID, Namespace: "shop", Workload: "api", Interval: 5 * time.Second, End: end, Edges: []graph.EdgeReport{{
			Direction: graph.Inbound, PeerID: webID, Service: "shop/api", MTLS: true,
			Counts: graph.Counts{Requests: 100, Failures: 20}, Latency: &lat}}},
	} {
		if err := c.Graph().Add(r); err != nil {
			t.Fatal(err)
		}
	}

	out, _, err := execute(t, "stat", "--controller-admin", admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NAMESPACE  WORKLOAD", "shop       api", "80.0%", "100.0%", "shop       web"} {
		if !strings.Contains(out, want) {
			t.Errorf("stat lacks %q:\n%s", want, out)
		}
	}
	out, _, err = execute(t, "stat", "shop/api", "--controller-admin", admin, "-o", "json", "--window", "10m")
	if err != nil {
		t.Fatal(err)
	}
	var st graph.StatResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stat -o json: %v\n%s", err, out)
	}
	if st.WindowSeconds != 600 || len(st.Workloads) != 1 || st.Workloads[0].Inbound.Requests != 100 ||
		*st.Workloads[0].Inbound.SuccessRate != 0.8 {
		t.Errorf("stat -o json: %+v", st)
	}

	out, _, err = execute(t, "edges", "-n", "shop", "--controller-admin", admin, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var es graph.EdgesResponse
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("edges -o json: %v\n%s", err, out)
	}
	if len(es.Edges) != 1 || es.Edges[0].ReportedBy != graph.ByBoth || !es.Edges[0].MTLS || es.Edges[0].Requests != 100 ||
		es.Edges[0].Source.Identity != webID.String() || es.Edges[0].Destination.Identity != apiID.String() {
		t.Errorf("edges -o json: %+v", es)
	}
	out, _, err = execute(t, "edges", "shop/web", "--controller-admin", admin)
	if err != nil || !strings.Contains(out, "shop/web  spiffe://rampart.local/ns/shop/sa/web  shop/api") {
		t.Errorf("edges table: %v\n%s", err, out)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"stat", "shop/nope"}, "workload shop/nope has not reported traffic in the last 10m0s"},
		{[]string{"edges", "shop/nope"}, "workload shop/nope has not reported traffic"},
		{[]string{"stat", "--window", "17s"}, "--window: window \"17s\": up to a minute, want a multiple of 5s"},
		{[]string{"stat", "--window", "5s"}, "--window: window \"5s\": want 15s to 10m0s"},
		{[]string{"edges", "--window", "10s"}, "--window: window \"10s\": want 15s to 10m0s"},
		{[]string{"stat", "web"}, "want namespace/workload"},
		{[]string{"edges", "-o", "yaml"}, "want table or json"},
		{[]string{"stat", "-n", "Shop"}, "--namespace \"Shop\""},
	} {
		_, _, err := execute(t, append(tt.args, "--controller-admin", admin)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want it to say %q", tt.args, err, tt.want)
		}
	}
}
