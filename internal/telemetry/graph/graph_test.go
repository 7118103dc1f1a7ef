package graph

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/telemetry/sketch"
)

// clock is a manual clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newGraph(t *testing.T, cfg Config) (*Graph, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)}
	cfg.Now = c.now
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g, c
}

func id(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromString("spiffe://example.org/ns/" + ns + "/sa/" + sa)
}

func latencies(n int, seconds float64) *sketch.Sketch {
	s := new(sketch.Sketch)
	for range n {
		s.Observe(seconds)
	}
	return s
}

// web calls api (service shop/api) through its proxy; api's proxy sees the
// same requests inbound.
func webToAPI(requests, failures, denied uint64) (out, in Report) {
	out = Report{Instance: "web-1", ID: id("shop", "web"), Namespace: "shop", Workload: "web", Interval: 5 * time.Second,
		Edges: []EdgeReport{{
			Direction: Outbound, PeerID: id("shop", "api"), PeerWorkload: "api", Service: "shop/api", MTLS: true,
			Counts:  Counts{Requests: requests, Failures: failures, BytesSent: 100 * requests},
			Latency: latencies(int(requests), 0.010),
		}}}
	in = Report{Instance: "api-1", ID: id("shop", "api"), Namespace: "shop", Workload: "api", Interval: 5 * time.Second,
		Edges: []EdgeReport{{
			Direction: Inbound, PeerID: id("shop", "web"), Service: "shop/api", MTLS: true,
			// The destination saw fewer failures (some never reached it)
			// and decided the denials.
			Counts:  Counts{Requests: requests, Failures: failures / 2, Denied: denied, BytesReceived: 100 * requests},
			Latency: latencies(int(requests), 0.008),
		}}}
	return out, in
}

func mustAdd(t *testing.T, g *Graph, rs ...Report) {
	t.Helper()
	for _, r := range rs {
		if err := g.Add(r); err != nil {
			t.Fatal(err)
		}
	}
}

func near(t *testing.T, what string, got *float64, want, tol float64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s = null, want %v", what, want)
		return
	}
	if math.Abs(*got-want) > tol {
		t.Errorf("%s = %v, want %v ± %v", what, *got, want, tol)
	}
}

func TestWorkloadsOverWindows(t *testing.T) {
	g, c := newGraph(t, Config{})
	// Two minutes of reports every 5 s: 50 requests, 5 failures each.
	for range 24 {
		c.advance(5 * time.Second)
		out, in := webToAPI(50, 5, 0)
		mustAdd(t, g, out, in)
	}
	for _, window := range []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute} {
		ws, err := g.Workloads(Filter{Window: window})
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) != 2 || ws[0].Name != "api" || ws[1].Name != "web" {
			t.Fatalf("window %v: workloads %+v", window, ws)
		}
		api, web := ws[0], ws[1]
		if api.Instances != 1 || !cmp.Equal(api.Identities, []string{"spiffe://example.org/ns/shop/sa/api"}) {
			t.Errorf("api instances %d identities %v", api.Instances, api.Identities)
		}
		// Inbound of api: its own view; 10 req/s.
		if math.Abs(api.Inbound.RequestsPerSecond-10) > 0.5 {
			t.Errorf("window %v: api rps %v, want 10", window, api.Inbound.RequestsPerSecond)
		}
		near(t, "api success rate", api.Inbound.SuccessRate, 1-2.0/50, 1e-9)
		near(t, "api mTLS share", api.Inbound.MTLSShare, 1, 0)
		if l := api.Inbound.LatencyMs; l == nil || math.Abs(l.P50-8) > 1.6 || math.Abs(l.P99-8) > 1.6 {
			t.Errorf("api latency %+v, want about 8 ms", l)
		}
		if api.Outbound.Requests != 0 || api.Outbound.SuccessRate != nil || api.Outbound.LatencyMs != nil {
			t.Errorf("api outbound %+v, want nothing", api.Outbound)
		}
		// Outbound of web: what the caller saw.
		near(t, "web outbound success rate", web.Outbound.SuccessRate, 0.9, 1e-9)
		if web.Inbound.Requests != 0 {
			t.Errorf("web inbound %d requests, want 0", web.Inbound.Requests)
		}
	}
	// The window counts exactly its buckets: the last minute holds the 12
	// intervals that ended in it.
	ws, _ := g.Workloads(Filter{Workload: "api", Namespace: "shop"})
	if len(ws) != 1 || ws[0].Inbound.Requests != 12*50 {
		t.Errorf("one minute of api: %+v", ws)
	}
	ws, _ = g.Workloads(Filter{Window: 10 * time.Minute})
	if ws[0].Inbound.Requests != 24*50 {
		t.Errorf("ten minutes of api: %d requests, want %d", ws[0].Inbound.Requests, 24*50)
	}

	// After its window, a workload that stopped reporting shows no traffic,
	// then after MaxWindow it is gone.
	c.advance(2 * time.Minute)
	ws, _ = g.Workloads(Filter{})
	if len(ws) != 2 || ws[0].Inbound.Requests != 0 || ws[0].Instances != 0 || ws[0].Inbound.RequestsPerSecond != 0 {
		t.Errorf("after 2 quiet minutes: %+v", ws)
	}
	if !g.Known("shop", "api") {
		t.Error("api forgotten before MaxWindow")
	}
	c.advance(MaxWindow)
	if ws, _ := g.Workloads(Filter{}); len(ws) != 0 || g.Known("shop", "api") {
		t.Errorf("after MaxWindow: %+v", ws)
	}
	if i, s, _ := g.Size(); i != 0 || s != 0 {
		t.Errorf("after MaxWindow the graph holds %d instances, %d series", i, s)
	}
}

func TestEdgesNotDoubleCounted(t *testing.T) {
	g, c := newGraph(t, Config{})
	for range 12 {
		c.advance(5 * time.Second)
		out, in := webToAPI(20, 2, 1)
		mustAdd(t, g, out, in)
	}
	edges, err := g.Edges(Filter{Window: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 1 {
		t.Fatalf("edges %+v, want one", edges)
	}
	e := edges[0]
	wantSrc := EdgeEnd{Namespace: "shop", Workload: "web", Identity: "spiffe://example.org/ns/shop/sa/web"}
	wantDst := EdgeEnd{Namespace: "shop", Workload: "api", Identity: "spiffe://example.org/ns/shop/sa/api", Service: "shop/api"}
	if diff := cmp.Diff(wantSrc, e.Source); diff != "" {
		t.Errorf("source (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantDst, e.Destination); diff != "" {
		t.Errorf("destination (-want +got):\n%s", diff)
	}
	if e.ReportedBy != ByBoth || !e.MTLS {
		t.Errorf("reported by %q, mTLS %v", e.ReportedBy, e.MTLS)
	}
	// Requests and failures from the caller, denials from the destination.
	if e.Requests != 12*20 || e.Failures != 12*2 || e.Denied != 12 {
		t.Errorf("requests %d failures %d denied %d, want %d %d %d", e.Requests, e.Failures, e.Denied, 12*20, 12*2, 12)
	}
	if e.Authorized {
		t.Error("an edge with denials is marked authorized")
	}
	near(t, "authorized share", e.AuthorizedShare, 1-1.0/20, 1e-9)
	near(t, "success rate", e.SuccessRate, 0.9, 1e-9)
	if l := e.LatencyMs; l == nil || math.Abs(l.P50-10) > 2 {
		t.Errorf("latency %+v, want the caller's 10 ms", l)
	}

	// Filters keep edges with either end on the workload.
	for _, f := range []Filter{{Namespace: "shop", Workload: "web"}, {Namespace: "shop", Workload: "api"}, {Namespace: "shop"}} {
		if es, _ := g.Edges(f); len(es) != 1 {
			t.Errorf("filter %+v: %d edges", f, len(es))
		}
	}
	if es, _ := g.Edges(Filter{Namespace: "other"}); len(es) != 0 {
		t.Errorf("namespace other: %+v", es)
	}
}

func TestEdgesOneSided(t *testing.T) {
	g, c := newGraph(t, Config{})
	c.advance(5 * time.Second)
	mustAdd(t, g,
		// A plaintext caller without a proxy, seen by api only.
		Report{Instance: "api-1", ID: id("shop", "api"), Namespace: "shop", Workload: "api", Interval: 5 * time.Second,
			Edges: []EdgeReport{{Direction: Inbound, Service: "shop/api", Counts: Counts{Requests: 10, Failures: 1}}}},
		// web calls a destination outside the mesh.
		Report{Instance: "web-1", ID: id("shop", "web"), Namespace: "shop", Workload: "web", Interval: 5 * time.Second,
			Edges: []EdgeReport{{Direction: Outbound, Service: "", Counts: Counts{Requests: 4}}}},
	)
	edges, err := g.Edges(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 2 {
		t.Fatalf("edges %+v", edges)
	}
	plain := edges[0] // the unknown source sorts first
	if plain.ReportedBy != ByDestination || plain.MTLS || plain.Source != (EdgeEnd{}) || plain.Destination.Workload != "api" {
		t.Errorf("plaintext edge %+v", plain)
	}
	near(t, "plaintext success", plain.SuccessRate, 0.9, 1e-9)
	near(t, "plaintext mTLS share", plain.MTLSShare, 0, 0)
	egress := edges[1]
	if egress.ReportedBy != BySource || egress.MTLS || egress.Destination != (EdgeEnd{}) || !egress.Authorized {
		t.Errorf("egress edge %+v", egress)
	}
}

func TestDenialsSharedAmongCallersOfOneIdentity(t *testing.T) {
	g, c := newGraph(t, Config{})
	c.advance(5 * time.Second)
	out := func(inst, wl string, n uint64) Report {
		return Report{Instance: inst, ID: id("shop", "client"), Namespace: "shop", Workload: wl, Interval: 5 * time.Second,
			Edges: []EdgeReport{{Direction: Outbound, PeerID: id("shop", "api"), PeerWorkload: "api", MTLS: true, Counts: Counts{Requests: n}}}}
	}
	mustAdd(t, g, out("a-1", "a", 30), out("b-1", "b", 10),
		Report{Instance: "api-1", ID: id("shop", "api"), Namespace: "shop", Workload: "api", Interval: 5 * time.Second,
			Edges: []EdgeReport{{Direction: Inbound, PeerID: id("shop", "client"), MTLS: true, Counts: Counts{Requests: 40, Denied: 8}}}})
	edges, _ := g.Edges(Filter{})
	if len(edges) != 2 {
		t.Fatalf("edges %+v", edges)
	}
	if edges[0].Source.Workload != "a" || edges[0].Denied != 6 || edges[1].Denied != 2 {
		t.Errorf("denials a %d b %d, want 6 and 2 (in proportion to requests)", edges[0].Denied, edges[1].Denied)
	}
}

func TestBounds(t *testing.T) {
	g, c := newGraph(t, Config{MaxInstances: 2, MaxEdges: 3, MaxEdgesPerInstance: 2})
	report := func(inst string, peers ...string) Report {
		r := Report{Instance: inst, ID: id("ns", inst), Namespace: "ns", Workload: inst, Interval: time.Second}
		for _, p := range peers {
			r.Edges = append(r.Edges, EdgeReport{Direction: Outbound, PeerID: id("ns", p), Counts: Counts{Requests: 1}})
		}
		return r
	}
	mustAdd(t, g, report("a", "x", "y", "z")) // z pushes x out: two per instance
	if i, s, ev := g.Size(); i != 1 || s != 2 || ev != 1 {
		t.Errorf("after a: %d instances %d series %d evicted", i, s, ev)
	}
	c.advance(time.Second)
	mustAdd(t, g, report("b", "x", "y")) // the third series overall pushes a's oldest out
	c.advance(time.Second)
	mustAdd(t, g, report("c")) // the third instance pushes a out
	i, s, ev := g.Size()
	if i != 2 || s != 2 || ev != 3 {
		t.Errorf("after c: %d instances %d series %d evicted, want 2 2 3", i, s, ev)
	}
	if g.Known("ns", "a") || !g.Known("ns", "b") || !g.Known("ns", "c") {
		t.Error("the least recently reported instance was not the one evicted")
	}
}

func TestAddRefuses(t *testing.T) {
	g, _ := newGraph(t, Config{})
	ok := Report{Instance: "i", ID: id("ns", "a"), Namespace: "ns", Workload: "a", Interval: time.Second}
	mustAdd(t, g, ok)
	for name, r := range map[string]Report{
		"no instance":       {ID: ok.ID, Namespace: "ns", Workload: "a"},
		"bad direction":     {Instance: "j", ID: ok.ID, Namespace: "ns", Workload: "a", Edges: []EdgeReport{{}}},
		"workload switched": {Instance: "i", ID: ok.ID, Namespace: "ns", Workload: "b"},
	} {
		if err := g.Add(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Add = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := New(Config{MaxEdges: -1}); err == nil {
		t.Error("negative bound accepted")
	}
}

func TestParseWindow(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"": DefaultWindow, "15s": 15 * time.Second, "30s": 30 * time.Second, "1m": time.Minute,
		"60s": time.Minute, "2m": 2 * time.Minute, "10m": 10 * time.Minute,
	} {
		if got, err := ParseWindow(in); err != nil || got != want {
			t.Errorf("ParseWindow(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"1", "0s", "-1m", "5s", "10s", "7s", "17s", "90s", "11m", "1h", "soon"} {
		if _, err := ParseWindow(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseWindow(%q) = %v, want ErrInvalid", in, err)
		}
	}
	g, _ := newGraph(t, Config{})
	if _, err := g.Workloads(Filter{Window: 7 * time.Second}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Workloads with a 7s window: %v", err)
	}
}

// TestQueuedReportsLandInTheirIntervals: a proxy that reconnects sends its
// queued reports at once; each lands at its interval's end, not all now.
func TestQueuedReportsLandInTheirIntervals(t *testing.T) {
	g, c := newGraph(t, Config{})
	c.advance(time.Minute)
	for i := range 6 {
		r := Report{Instance: "i", ID: id("ns", "a"), Namespace: "ns", Workload: "a", Interval: 5 * time.Second,
			End:   c.now().Add(-time.Duration(5-i) * 5 * time.Second),
			Edges: []EdgeReport{{Direction: Outbound, Counts: Counts{Requests: 10}}}}
		mustAdd(t, g, r)
	}
	// Reports older than MaxPlacementLag are placed at it: none is lost
	// from a one-minute window.
	ws, _ := g.Workloads(Filter{Window: 15 * time.Second})
	if got := ws[0].Outbound.Requests; got != 30 {
		t.Errorf("last 15s hold %d requests, want the newest three reports' 30", got)
	}
	ws, _ = g.Workloads(Filter{})
	if got := ws[0].Outbound.Requests; got != 60 {
		t.Errorf("last minute holds %d requests, want 60", got)
	}
	if rps := ws[0].Outbound.RequestsPerSecond; math.Abs(rps-2) > 0.2 {
		t.Errorf("rate %v, want about 2/s over the half minute reported", rps)
	}
}

func TestOverflowCountsForTheWorkloadOnly(t *testing.T) {
	g, c := newGraph(t, Config{})
	c.advance(5 * time.Second)
	mustAdd(t, g, Report{Instance: "i", ID: id("ns", "a"), Namespace: "ns", Workload: "a", Interval: 5 * time.Second,
		Edges: []EdgeReport{{Direction: Overflow, Counts: Counts{Requests: 7, Failures: 7}}}})
	ws, _ := g.Workloads(Filter{})
	if len(ws) != 1 || ws[0].Overflow.Requests != 7 || ws[0].Inbound.Requests != 0 || ws[0].Outbound.Requests != 0 {
		t.Errorf("workloads %+v", ws)
	}
	if es, _ := g.Edges(Filter{}); len(es) != 0 {
		t.Errorf("the overflow entry made edges: %+v", es)
	}
}

// TestRatesOverShortWindowsWithUnalignedReports: proxies report at their
// own phase (not on bucket edges) and each report arrives a little after
// its interval ends. At every moment, a window of at least three report
// intervals gives the true rate: it ends at the last complete bucket, not
// at now, whose bucket still waits for reports.
func TestRatesOverShortWindowsWithUnalignedReports(t *testing.T) {
	g, c := newGraph(t, Config{})
	start := c.now()
	type reporter struct {
		name     string
		interval time.Duration
		phase    time.Duration // of the interval ends, after start
		windows  []time.Duration
		next     time.Time // the end of the next interval
	}
	const rps, transit = 10, 200 * time.Millisecond
	rs := []*reporter{
		{name: "every-5s", interval: 5 * time.Second, phase: 1300 * time.Millisecond,
			windows: []time.Duration{15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 10 * time.Minute}},
		{name: "every-1s", interval: time.Second, phase: 450 * time.Millisecond,
			windows: []time.Duration{15 * time.Second, 30 * time.Second, time.Minute}},
		{name: "every-10s", interval: 10 * time.Second, phase: 7900 * time.Millisecond,
			windows: []time.Duration{30 * time.Second, time.Minute}},
	}
	for _, r := range rs {
		r.next = start.Add(r.phase)
	}
	for step := range 3 * 60 * 10 { // three minutes in steps of 100 ms
		c.advance(100 * time.Millisecond)
		for _, r := range rs {
			if c.now().Before(r.next.Add(transit)) {
				continue
			}
			mustAdd(t, g, Report{Instance: r.name, ID: id("ns", r.name), Namespace: "ns", Workload: r.name,
				Interval: r.interval, End: r.next,
				Edges: []EdgeReport{{Direction: Outbound, Counts: Counts{Requests: uint64(rps * r.interval.Seconds())}}}})
			r.next = r.next.Add(r.interval)
		}
		if c.now().Sub(start) < 70*time.Second || step%5 != 0 {
			continue // every half second once every window is full
		}
		for _, r := range rs {
			for _, w := range r.windows {
				ws, err := g.Workloads(Filter{Namespace: "ns", Workload: r.name, Window: w})
				if err != nil {
					t.Fatal(err)
				}
				// Exact up to a minute; above, the oldest coarse bucket's
				// reports may start before it: within an interval's share.
				tol := 1e-9
				if w > FineWindow {
					tol = rps * r.interval.Seconds() / min(w, c.now().Sub(start)).Seconds()
				}
				if got := ws[0].Outbound.RequestsPerSecond; math.Abs(got-rps) > tol {
					t.Fatalf("at %v, %s over %v: %v requests per second, want %v",
						c.now().Sub(start), r.name, w, got, float64(rps))
				}
			}
		}
	}
}

// TestOneIdentityCannotEvictOthers: one identity reporting from ever more
// instances, or ever more edges, evicts its own at the bounds, never an
// honest identity's.
func TestOneIdentityCannotEvictOthers(t *testing.T) {
	honest := func() Report {
		return Report{Instance: "honest", ID: id("shop", "api"), Namespace: "shop", Workload: "api", Interval: time.Second,
			Edges: []EdgeReport{
				{Direction: Inbound, PeerID: id("shop", "web"), Counts: Counts{Requests: 1}},
				{Direction: Outbound, PeerID: id("shop", "db"), Counts: Counts{Requests: 1}},
			}}
	}
	flood := func(inst string, edges int) Report {
		r := Report{Instance: inst, ID: id("evil", "x"), Namespace: "evil", Workload: "x", Interval: time.Second}
		for i := range edges {
			r.Edges = append(r.Edges, EdgeReport{Direction: Outbound, PeerWorkload: fmt.Sprintf("p%d", i), Counts: Counts{Requests: 1}})
		}
		return r
	}
	for name, cfg := range map[string]Config{
		"instances per identity": {MaxInstances: 100, MaxInstancesPerIdentity: 4},
		"instances overall":      {MaxInstances: 8, MaxInstancesPerIdentity: 1000},
		"edges overall":          {MaxInstances: 100, MaxEdges: 10, MaxEdgesPerInstance: 1000},
	} {
		t.Run(name, func(t *testing.T) {
			g, c := newGraph(t, cfg)
			mustAdd(t, g, honest())
			for i := range 200 {
				c.advance(10 * time.Millisecond)
				mustAdd(t, g, flood(fmt.Sprintf("evil-%d", i), 1+i%20))
			}
			if !g.Known("shop", "api") {
				t.Fatal("the honest instance was evicted")
			}
			es, _ := g.Edges(Filter{Namespace: "shop"})
			if len(es) != 2 {
				t.Errorf("the honest instance holds %d edges, want 2: %+v", len(es), es)
			}
			if _, _, ev := g.Size(); ev == 0 {
				t.Error("nothing evicted: the flood did not reach a bound")
			}
		})
	}
}

// TestWorkloadRowsPerIdentity: two identities of a namespace may register
// the same workload name; each gets its own row, so that one cannot make
// the other's numbers.
func TestWorkloadRowsPerIdentity(t *testing.T) {
	g, c := newGraph(t, Config{})
	c.advance(5 * time.Second)
	for _, r := range []struct {
		inst, sa string
		n        uint64
	}{{"web-1", "web", 100}, {"web-2", "web", 100}, {"fake", "intruder", 7}} {
		mustAdd(t, g, Report{Instance: r.inst, ID: id("shop", r.sa), Namespace: "shop", Workload: "web", Interval: 5 * time.Second,
			Edges: []EdgeReport{{Direction: Inbound, Counts: Counts{Requests: r.n, Failures: r.n}}}})
	}
	c.advance(15 * time.Second)
	ws, err := g.Workloads(Filter{Namespace: "shop", Workload: "web"})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Identities []string
		Instances  int
		Requests   uint64
	}
	var got []row
	for _, w := range ws {
		got = append(got, row{w.Identities, w.Instances, w.Inbound.Requests})
	}
	want := []row{
		{[]string{"spiffe://example.org/ns/shop/sa/intruder"}, 1, 7},
		{[]string{"spiffe://example.org/ns/shop/sa/web"}, 2, 200},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
}

// TestTrafficOfANonReportingWorkloadOfASharedIdentity: workloads a and b
// share an identity; only a's proxy reports. api saw both: what a did not
// send is an edge of its own, seen by the destination.
func TestTrafficOfANonReportingWorkloadOfASharedIdentity(t *testing.T) {
	g, c := newGraph(t, Config{})
	for range 12 {
		c.advance(5 * time.Second)
		mustAdd(t, g,
			Report{Instance: "a-1", ID: id("shop", "client"), Namespace: "shop", Workload: "a", Interval: 5 * time.Second,
				Edges: []EdgeReport{{Direction: Outbound, PeerID: id("shop", "api"), PeerWorkload: "api", MTLS: true, Counts: Counts{Requests: 40}}}},
			Report{Instance: "api-1", ID: id("shop", "api"), Namespace: "shop", Workload: "api", Interval: 5 * time.Second,
				Edges: []EdgeReport{{Direction: Inbound, PeerID: id("shop", "client"), MTLS: true, Counts: Counts{Requests: 100, Denied: 10}}}})
	}
	edges, err := g.Edges(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 2 {
		t.Fatalf("edges %+v, want a's and the rest", edges)
	}
	rest, a := edges[0], edges[1] // the unknown workload sorts first
	if a.Source.Workload != "a" || a.ReportedBy != ByBoth || a.Requests != 12*40 || a.Denied != 12*4 {
		t.Errorf("a's edge: %s, %d requests, %d denied; want both, %d and %d", a.ReportedBy, a.Requests, a.Denied, 12*40, 12*4)
	}
	if rest.Source.Workload != "" || rest.Source.Identity != "spiffe://example.org/ns/shop/sa/client" ||
		rest.ReportedBy != ByDestination || rest.Requests != 12*60 || rest.Denied != 12*6 || !rest.MTLS {
		t.Errorf("the rest: %+v, want %d requests (%d denied) from the client identity, seen by the destination", rest, 12*60, 12*6)
	}

	// When the callers sent what the destination saw, give or take one
	// interval's worth, there is no rest.
	g, c = newGraph(t, Config{})
	for i := range 12 {
		c.advance(5 * time.Second)
		out, in := webToAPI(20, 0, 0)
		if i == 0 {
			out.Edges[0].Requests = 0 // the caller's first interval fell before the window
		}
		mustAdd(t, g, out, in)
	}
	if edges, _ := g.Edges(Filter{}); len(edges) != 1 {
		t.Errorf("edges %+v, want one", edges)
	}
}

// TestEdgesMatchAmongManyCallers: every caller's outbound summary finds
// its own inbound summary among thousands.
func TestEdgesMatchAmongManyCallers(t *testing.T) {
	g, c := newGraph(t, Config{MaxInstances: 10000, MaxInstancesPerIdentity: 10000, MaxEdges: 100000})
	c.advance(5 * time.Second)
	const n = 2000
	for i := range n {
		caller := id("load", fmt.Sprintf("c%d", i))
		mustAdd(t, g, Report{Instance: fmt.Sprintf("c%d", i), ID: caller, Namespace: "load", Workload: fmt.Sprintf("c%d", i), Interval: 5 * time.Second,
			Edges: []EdgeReport{{Direction: Outbound, PeerID: id("shop", "api"), MTLS: true, Counts: Counts{Requests: uint64(i + 1)}}}})
	}
	api := Report{Instance: "api-1", ID: id("shop", "api"), Namespace: "shop", Workload: "api", Interval: 5 * time.Second}
	for i := range n {
		api.Edges = append(api.Edges, EdgeReport{Direction: Inbound, PeerID: id("load", fmt.Sprintf("c%d", i)), MTLS: true,
			Counts: Counts{Requests: uint64(i + 1), Denied: 1}})
	}
	mustAdd(t, g, api)
	edges, err := g.Edges(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != n {
		t.Fatalf("%d edges, want %d", len(edges), n)
	}
	for _, e := range edges {
		if e.ReportedBy != ByBoth || e.Destination.Workload != "api" || e.Denied != 1 {
			t.Fatalf("edge %+v: want both sides matched, destination api, 1 denial", e)
		}
	}
}
