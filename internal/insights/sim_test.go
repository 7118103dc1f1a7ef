package insights

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// simEdge is one edge of the simulated mesh: its learnt rate (requests per
// second) and routes.
type simEdge struct {
	src, dst         spiffeid.ID
	srcName, dstName string
	rate             float64
	routes           []string
}

var simMesh = []simEdge{
	{frontend, api, "frontend", "api", 20, []string{"/items", "/items/list", "/cart"}},
	{api, db, "api", "db", 40, []string{"/query", "/tx"}},
	{api, wid("shop", "cache"), "api", "cache", 2, []string{"/get", "/set"}},
	{wid("shop", "worker"), api, "worker", "api", 0.5, []string{"/jobs"}},
}

// poisson draws from a Poisson distribution of mean l.
func poisson(r *rand.Rand, l float64) uint64 {
	if l <= 0 {
		return 0
	}
	if l > 30 {
		return uint64(max(0, math.Round(l+math.Sqrt(l)*r.NormFloat64())))
	}
	limit, k, p := math.Exp(-l), uint64(0), 1.0
	for {
		p *= r.Float64()
		if p <= limit {
			return k
		}
		k++
	}
}

// binomial draws the failures of n requests failing with probability p.
func binomial(r *rand.Rand, n uint64, p float64) uint64 {
	var k uint64
	for i := uint64(0); i < n; i++ {
		if r.Float64() < p {
			k++
		}
	}
	return k
}

// load is the multiplier of the learnt rates at t after learning: a
// diurnal-like swing between ×0.3 and ×2.5 over 24 hours, starting at ×1,
// with short bursts of ×2 on top.
func load(t time.Duration, bursts []time.Duration) float64 {
	phase := math.Asin(0.4 / 1.1)
	m := 1.4 + 1.1*math.Sin(2*math.Pi*t.Hours()/24-phase)
	for _, b := range bursts {
		if t >= b && t < b+2*time.Minute {
			m *= 2
		}
	}
	return m
}

// simulate learns for an hour of steady traffic on simMesh, then replays
// 24 hours of varying load, every proxy reporting every 5 s; attack, when
// set, is called at every step after learning to add the reports of an
// attack. It returns the events after learning and the edge-hours replayed.
func simulate(t testing.TB, seed uint64, attack func(e *Engine, since time.Duration)) ([]Event, float64) {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	e, clk, rec := newTestEngine(t.(*testing.T), Policy{}, nil)
	const step = 5 * time.Second
	bursts := []time.Duration{3*time.Hour + 7*time.Minute, 9*time.Hour + 41*time.Minute, 17*time.Hour + 3*time.Minute}
	report := func(mult float64) {
		byDst := map[spiffeid.ID]*graph.Report{}
		var order []spiffeid.ID
		for _, se := range simMesh {
			n := poisson(r, se.rate*mult*step.Seconds())
			if n == 0 {
				continue
			}
			fail := binomial(r, n, 0.01)
			er := graph.EdgeReport{Direction: graph.Inbound, PeerID: se.src, PeerWorkload: se.srcName, MTLS: true,
				Service: "shop/" + se.dstName, Counts: graph.Counts{Requests: n, Failures: fail}}
			// Spread the requests over the routes; failures answer 5xx.
			left := n - fail
			for i, p := range se.routes {
				c := left / uint64(len(se.routes)-i)
				left -= c
				if c > 0 {
					er.Routes = append(er.Routes, graph.RouteCount{Method: "GET", Path: p, StatusClass: 2, Count: c})
				}
			}
			if fail > 0 {
				er.Routes = append(er.Routes, graph.RouteCount{Method: "GET", Path: se.routes[0], StatusClass: 5, Count: fail})
			}
			rep := byDst[se.dst]
			if rep == nil {
				ns := "shop"
				rep = &graph.Report{Instance: se.dstName + "-0", ID: se.dst, Namespace: ns, Workload: se.dstName, Interval: step}
				byDst[se.dst] = rep
				order = append(order, se.dst)
			}
			rep.Edges = append(rep.Edges, er)
		}
		for _, d := range order {
			e.ObserveReport(*byDst[d])
		}
	}
	for elapsed := time.Duration(0); elapsed < DefaultLearningPeriod+step; elapsed += step {
		report(1)
		clk.Add(step)
	}
	if e.Snapshot().Learning {
		t.Fatal("still learning")
	}
	if n := len(rec.all()); n != 0 {
		t.Fatalf("events while learning steady traffic: %+v", rec.all())
	}
	const replay = 24 * time.Hour
	for elapsed := time.Duration(0); elapsed < replay; elapsed += step {
		report(load(elapsed, bursts))
		if attack != nil {
			attack(e, elapsed)
		}
		clk.Add(step)
	}
	return rec.all(), float64(len(simMesh)) * replay.Hours()
}

// maxFalsePositives is the bound TestFalsePositiveRate holds the engine
// to over 96 edge-hours: one event per hundred edge-hours
// (docs/insights.md, "False positives").
const maxFalsePositives = 1

func TestFalsePositiveRate(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 25 hours of traffic")
	}
	total := 0
	for _, seed := range []uint64{1, 2, 3} {
		events, edgeHours := simulate(t, seed, nil)
		t.Logf("seed %d: false positives: %d events in %.0f edge-hours", seed, len(events), edgeHours)
		for _, ev := range events {
			t.Logf("  %s %s: %s", ev.Time.Format(time.TimeOnly), ev.Detection, ev.Summary)
		}
		if len(events) > maxFalsePositives {
			t.Errorf("seed %d: %d events in %.0f edge-hours of normal traffic, want at most %d", seed, len(events), edgeHours, maxFalsePositives)
		}
		total += len(events)
	}
	t.Logf("false positives: %d events in %.0f edge-hours", total, 3*float64(len(simMesh))*24)
}

// TestFalsePositiveRateDetectsAttack replays the same simulation with an
// attack at hour 12: the frontend, compromised, calls the database it
// never called, scans the api's paths and floods it, and is denied.
func TestFalsePositiveRateDetectsAttack(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 25 hours of traffic")
	}
	start := 12 * time.Hour
	var attackAt time.Time
	attack := func(e *Engine, since time.Duration) {
		if since == start {
			attackAt = e.now()
		}
		if since < start || since >= start+time.Minute {
			return
		}
		i := int((since - start) / (5 * time.Second))
		var scan []graph.RouteCount
		for j := 0; j < 4; j++ {
			scan = append(scan, graph.RouteCount{Method: "GET", Path: fmt.Sprintf("/admin/%d", i*4+j), StatusClass: 4, Count: 500})
		}
		// 400 requests per second from a second replica, all to paths
		// the frontend never asked for, answered 403 or 404.
		flood := graph.EdgeReport{Direction: graph.Inbound, PeerID: frontend, PeerWorkload: "frontend", MTLS: true,
			Service: "shop/api", Counts: graph.Counts{Requests: 2000, Denied: 10}, Routes: scan}
		e.ObserveReport(graph.Report{Instance: "api-1", ID: api, Namespace: "shop", Workload: "api", Interval: 5 * time.Second, Edges: []graph.EdgeReport{flood}})
		e.ObserveReport(graph.Report{Instance: "db-0", ID: db, Namespace: "shop", Workload: "db", Interval: 5 * time.Second, Edges: []graph.EdgeReport{
			{Direction: graph.Inbound, PeerID: frontend, PeerWorkload: "frontend", MTLS: true, Service: "shop/db", Counts: graph.Counts{Requests: 3}},
		}})
	}
	events, _ := simulate(t, 1, attack)
	fired := map[Detection]Event{}
	for _, ev := range events {
		if ev.Source.SPIFFEID != frontend.String() {
			continue
		}
		if _, ok := fired[ev.Detection]; !ok {
			fired[ev.Detection] = ev
		}
	}
	for _, d := range []Detection{NewEdge, RateSpike, RouteScan, DenialBurst} {
		ev, ok := fired[d]
		if !ok {
			t.Errorf("%s did not fire; events: %+v", d, events)
			continue
		}
		if lag := ev.Time.Sub(attackAt); lag < 0 || lag > 30*time.Second {
			t.Errorf("%s fired %v after the attack began", d, lag)
		}
		t.Logf("%s after %v: %s", d, ev.Time.Sub(attackAt), ev.Summary)
	}
}

func BenchmarkObserveReport(b *testing.B) {
	e, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	rep := graph.Report{Instance: "api-0", ID: api, Namespace: "shop", Workload: "api", Interval: 5 * time.Second}
	for i := 0; i < 20; i++ {
		rep.Edges = append(rep.Edges, graph.EdgeReport{Direction: graph.Inbound, PeerID: wid("shop", fmt.Sprintf("c%d", i)), PeerWorkload: "c",
			MTLS: true, Service: "shop/api", Counts: graph.Counts{Requests: 100, Failures: 1, Denied: 1},
			Routes: []graph.RouteCount{{Method: "GET", Path: "/a", StatusClass: 2, Count: 60}, {Method: "POST", Path: "/b", StatusClass: 2, Count: 39}, {Method: "GET", Path: "/a", StatusClass: 5, Count: 1}}})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		e.ObserveReport(rep)
	}
}
