package demo

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(+1)
	tests := []struct {
		name    string
		q       float64
		buckets []bucket
		want    float64 // NaN for NaN
	}{
		{"no observations", 0.5, []bucket{{1, 0}, {inf, 0}}, math.NaN()},
		{"no buckets", 0.5, nil, math.NaN()},
		{"only +Inf", 0.5, []bucket{{inf, 10}}, math.NaN()},
		{"no +Inf bucket", 0.5, []bucket{{1, 10}, {2, 20}}, math.NaN()},
		{"q below 0", -0.1, []bucket{{1, 10}, {inf, 10}}, math.Inf(-1)},
		{"q above 1", 1.1, []bucket{{1, 10}, {inf, 10}}, math.Inf(+1)},
		{"q NaN", math.NaN(), []bucket{{1, 10}, {inf, 10}}, math.NaN()},
		{"first bucket starts at zero", 0.25, []bucket{{1, 10}, {2, 20}, {inf, 20}}, 0.5},
		{"upper edge of a bucket", 0.5, []bucket{{1, 10}, {2, 20}, {inf, 20}}, 1},
		{"interpolated in a later bucket", 0.75, []bucket{{1, 10}, {2, 20}, {inf, 20}}, 1.5},
		{"q 0", 0, []bucket{{1, 10}, {2, 20}, {inf, 20}}, 0},
		{"q 1", 1, []bucket{{1, 10}, {2, 20}, {inf, 20}}, 2},
		{"empty buckets skipped", 0.5, []bucket{{1, 0}, {2, 0}, {4, 10}, {inf, 10}}, 3},
		{"rank in +Inf: highest finite bound", 0.9, []bucket{{1, 10}, {inf, 20}}, 1},
		{"first bound not positive", 0.2, []bucket{{-1, 5}, {1, 10}, {inf, 10}}, -1},
		{"dips smoothed", 0.5, []bucket{{1, 10}, {2, 8}, {inf, 20}}, 1},
		{"proxy buckets p99", 0.99, []bucket{{.001, 0}, {.0025, 5}, {.005, 20}, {.01, 24}, {.025, 25}, {inf, 25}}, .01 + .015*0.75},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := quantile(tt.q, tt.buckets)
			if math.IsNaN(tt.want) {
				if !math.IsNaN(got) {
					t.Errorf("quantile = %v, want NaN", got)
				}
				return
			}
			if math.Abs(got-tt.want) > 1e-12 && got != tt.want {
				t.Errorf("quantile = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFailed(t *testing.T) {
	tests := []struct {
		code, grpc string
		want       bool
	}{
		{"200", "", false},
		{"404", "", false},
		{"500", "", true},
		{"502", "", true},
		{"503", "", true},
		{"200", "0", false},
		{"200", "14", true},
		{"", "", false},
		{"garbage", "", false},
	}
	for _, tt := range tests {
		if got := failed(tt.code, tt.grpc); got != tt.want {
			t.Errorf("failed(%q, %q) = %v, want %v", tt.code, tt.grpc, got, tt.want)
		}
	}
}

func TestLatency(t *testing.T) {
	tests := []struct {
		sec  float64
		want string
	}{
		{math.NaN(), "-"},
		{math.Inf(1), "∞"},
		{0, "0µs"},
		{0.00085, "850µs"},
		{0.0032, "3.2ms"},
		{0.25, "250.0ms"},
		{1.25, "1.25s"},
	}
	for _, tt := range tests {
		if got := latency(tt.sec); got != tt.want {
			t.Errorf("latency(%v) = %q, want %q", tt.sec, got, tt.want)
		}
	}
}

func parseFile(t *testing.T, name string) snapshot {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := parseSnapshot(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseSnapshot(t *testing.T) {
	s := parseFile(t, "scrape1.prom")
	// Inbound series and other families are left out.
	if len(s) != 3 {
		t.Fatalf("services %v, want web.demo, orders.demo, payments.demo", s)
	}
	orders := s["orders.demo"]
	want := &counts{
		Requests: 92,
		Failures: 2,
		ByPeer:   map[string]float64{"spiffe://rampart.local/ns/demo/sa/orders": 90, "": 2},
	}
	if diff := cmp.Diff(want, orders, cmpopts.IgnoreFields(counts{}, "Buckets")); diff != "" {
		t.Errorf("orders.demo (-want +got):\n%s", diff)
	}
	// Buckets are summed over peers: 2 requests of at most 0.5ms, 30 more by
	// 2.5ms, ...
	if len(orders.Buckets) != 15 || orders.Buckets[0] != (bucket{0.0005, 2}) || orders.Buckets[2] != (bucket{0.0025, 32}) ||
		orders.Buckets[14].Count != 92 || !math.IsInf(orders.Buckets[14].UpperBound, 1) {
		t.Errorf("orders.demo buckets %v", orders.Buckets)
	}
	if p := s["payments.demo"]; p.Requests != 81 || p.Failures != 1 {
		t.Errorf("payments.demo: %v requests, %v failures, want 81 and 1 (grpc_status 14)", p.Requests, p.Failures)
	}
}

func TestParseSnapshotErrors(t *testing.T) {
	for _, in := range []string{
		"rampart_proxy_requests_total{direction=\"outbound\" 1\n",
		"# TYPE x counter\nx not-a-number\n",
	} {
		if _, err := parseSnapshot(strings.NewReader(in)); err == nil {
			t.Errorf("parseSnapshot(%q) succeeded", in)
		}
	}
	s, err := parseSnapshot(strings.NewReader(""))
	if err != nil || len(s) != 0 {
		t.Errorf("parseSnapshot of nothing = %v, %v; want empty", s, err)
	}
}

// TestTable renders the traffic between two scrapes. The golden scrapes
// hold three services' outbound series in one file, as if one proxy called
// all three; the demo scrapes each caller's proxy for its own.
func TestTable(t *testing.T) {
	prev, cur := parseFile(t, "scrape1.prom"), parseFile(t, "scrape2.prom")
	var rows []edgeStats
	for _, e := range []edge{
		{Source: "loadgen", Service: "web.demo"},
		{Source: "web", Service: "orders.demo"},
		{Source: "orders", Service: "payments.demo"},
		{Source: "web", Service: "search.demo"}, // no traffic yet
	} {
		rows = append(rows, statsFor(e, prev, cur, 5*time.Second))
	}
	rows = append(rows, edgeStats{edge: edge{Source: "loadgen", Service: "web.demo"}, Err: errors.New("scraping http://127.0.0.1:1/metrics: connection refused")})

	// Spot-check one row by hand: of the 25 requests to web (both peers),
	// 4 took at most 2.5ms, 13 more at most 5ms, then 4, 3 and 1 in the
	// next buckets. The median's rank, 12.5, lies 8.5 into the 13
	// observations of (2.5ms, 5ms].
	web := rows[0]
	if want := 0.0025 + 0.0025*(12.5-4)/13; math.Abs(web.P50-want) > 1e-12 {
		t.Errorf("web p50 = %v, want %v", web.P50, want)
	}
	if web.Requests != 25 || web.Success != 1 || len(web.Peers) != 2 {
		t.Errorf("web row %+v", web)
	}

	var b bytes.Buffer
	at := time.Date(2025, 6, 1, 9, 30, 5, 0, time.UTC)
	if err := writeTable(&b, at, rows); err != nil {
		t.Fatal(err)
	}
	golden(t, "table.golden", b.Bytes())
}

func TestSubRestart(t *testing.T) {
	prev := &counts{Requests: 100, Failures: 3, ByPeer: map[string]float64{"a": 100}, Buckets: []bucket{{1, 100}, {math.Inf(1), 100}}}
	cur := &counts{Requests: 7, Failures: 0, ByPeer: map[string]float64{"a": 7}, Buckets: []bucket{{1, 7}, {math.Inf(1), 7}}}
	if got := cur.Sub(prev); got != cur {
		t.Errorf("after a restart Sub = %+v, want the current counts", got)
	}
	if got := cur.Sub(nil); got != cur {
		t.Errorf("without a previous scrape Sub = %+v, want the current counts", got)
	}
}

// FuzzStats feeds arbitrary metrics text through everything the demo does
// with a scrape: none of it may panic, and what it computes stays in range.
func FuzzStats(f *testing.F) {
	for _, name := range []string{"scrape1.prom", "scrape2.prom"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, b)
	}
	one, _ := os.ReadFile(filepath.Join("testdata", "scrape1.prom"))
	two, _ := os.ReadFile(filepath.Join("testdata", "scrape2.prom"))
	f.Add(one, two)
	f.Add(two, one)
	f.Fuzz(func(t *testing.T, prevText, curText []byte) {
		prev, err := parseSnapshot(bytes.NewReader(prevText))
		if err != nil {
			return
		}
		cur, err := parseSnapshot(bytes.NewReader(curText))
		if err != nil {
			return
		}
		var rows []edgeStats
		for service := range cur {
			s := statsFor(edge{Source: "x", Service: service}, prev, cur, time.Second)
			if s.Success < 0 || s.Success > 1 {
				t.Errorf("%s: success %v out of range", service, s.Success)
			}
			rows = append(rows, s)
		}
		if err := writeTable(io.Discard, time.Time{}, rows); err != nil {
			t.Fatal(err)
		}
	})
}
