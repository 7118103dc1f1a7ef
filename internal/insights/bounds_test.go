package insights

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// evil is a compromised proxy: it reports whatever it likes, under its
// own verified identity.
var evil = wid("shop", "evil")

// maxEdgesPerReport is the most edges the control plane accepts in one
// report.
const maxEdgesPerReport = 4096

func TestReporterSharesOfTrackers(t *testing.T) {
	e, clk, rec := newTestEngine(t, Policy{}, nil)
	// One report of fake callers, each denied once and refused one path:
	// no event, but one denial and one route-scan entry each.
	var edges []graph.EdgeReport
	for i := 0; i < maxEdgesPerReport; i++ {
		er := edge(wid("fake", fmt.Sprintf("c%d", i)), "c", 1, 0, graph.RouteCount{Method: "GET", Path: "/x", StatusClass: 4, Count: 1})
		er.Denied = 1
		edges = append(edges, er)
	}
	e.ObserveReport(inbound(evil, "evil", edges...))
	// Refused handshakes from as many addresses.
	var obs []SecurityObservation
	for i := 0; i < maxEdgesPerReport; i++ {
		obs = append(obs, SecurityObservation{Reporter: evil, Kind: TLSBadCertificate + 100, PeerIP: "x", Count: 1})
		obs[i] = SecurityObservation{Reporter: evil, Kind: PlaintextOnStrict, PeerIP: fmt.Sprintf("10.2.%d.%d", i/256, i%256), Count: 1}
	}
	e.ObserveSecurity(obs)
	// Outbound claims to as many destinations, four reports' worth.
	for r := 0; r < 4; r++ {
		var out []graph.EdgeReport
		for i := 0; i < maxEdgesPerReport; i++ {
			out = append(out, graph.EdgeReport{PeerID: wid("fake", fmt.Sprintf("d%d-%d", r, i)), Counts: graph.Counts{Requests: 1}})
		}
		e.ObserveReport(outbound(evil, "evil", out...))
	}
	if len(e.denials) != trackerShares[trackDenials] || len(e.scans) != trackerShares[trackScans] ||
		len(e.refusals) != trackerShares[trackRefusals] || len(e.selfOut) != trackerShares[trackSelfOut] {
		t.Fatalf("evil holds denials %d, scans %d, refusals %d, self reports %d: more than its shares %v",
			len(e.denials), len(e.scans), len(e.refusals), len(e.selfOut), trackerShares)
	}
	// Each outbound claim is one (evil, destination) entry; the first
	// also made evil's entry over all destinations.
	want := uint64(3*(maxEdgesPerReport-share(MaxTrackedSources)) + 4*maxEdgesPerReport - (share(MaxSelfReports) - 1))
	if st := e.Stats(); st.TrackerShareOverflow != want || st.TrackerOverflow != 0 {
		t.Errorf("share overflow %d (want %d), tracker overflow %d", st.TrackerShareOverflow, want, st.TrackerOverflow)
	}
	before := len(rec.all())

	// Everyone else is still observed.
	e.ObserveReport(outbound(frontend, "frontend", graph.EdgeReport{PeerID: api, Counts: graph.Counts{Requests: 30, Denied: 25}}))
	er := edge(frontend, "frontend", 30, 0, scanRoutes(20, 4)...)
	er.Denied = 25
	e.ObserveReport(inbound(api, "api", er))
	e.ObserveSecurity([]SecurityObservation{{Reporter: api, Kind: TLSUnknownCA, PeerIP: "10.9.9.9", Count: 1}})
	for _, d := range []Detection{DenialBurst, RouteScan, UnknownCA} {
		if n := len(rec.of(d)); n != 1 {
			t.Errorf("%s: %d events, want 1 (events: %+v)", d, n, rec.all()[before:])
		}
	}
	if e.selfOut[scanKey{src: frontend.String(), dst: api.String()}] == nil {
		t.Error("frontend's own outbound report not recorded")
	}

	// Expired entries give the share back.
	clk.Add(3 * time.Minute)
	e.ObserveReport(inbound(evil, "evil", edges[:1]...))
	if r := e.shares[evil.String()]; r == nil || r.entries[trackDenials] != 1 || r.entries[trackScans] != 1 || r.entries[trackSelfOut] != 0 || r.entries[trackRefusals] != 0 {
		t.Errorf("evil's entries after expiry: %+v", r)
	}
}

func TestReporterSharesOfBaseline(t *testing.T) {
	e, _, _ := newTestEngine(t, Policy{}, nil)
	// Fake callers of its own workloads, under eight names.
	for n := 0; n < 8; n++ {
		var in []graph.EdgeReport
		for i := 0; i < MaxCallersPerWorkload; i++ {
			in = append(in, edge(wid("fake", fmt.Sprintf("c%d", i)), "c", 1, 0))
		}
		rep := inbound(evil, fmt.Sprintf("evil%d", n), in...)
		e.ObserveReport(rep)
	}
	// Outbound claims to destinations outside the mesh, each its own
	// workload of the baseline.
	var out []graph.EdgeReport
	for i := 0; i < maxEdgesPerReport; i++ {
		out = append(out, graph.EdgeReport{Service: fmt.Sprintf("ext/s%d", i), Counts: graph.Counts{Requests: 1}})
	}
	e.ObserveReport(outbound(evil, "evil", out...))
	e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 10, 0)))
	st := e.Stats()
	if st.Workloads != share(MaxWorkloads)+1 || st.Callers != share(MaxCallers)+1 {
		t.Errorf("workloads %d (want %d), callers %d (want %d)", st.Workloads, share(MaxWorkloads)+1, st.Callers, share(MaxCallers)+1)
	}
	// Every outbound claim overflowed: its workload (past evil's share of
	// workloads) or its caller (evil's share of callers was used up).
	want := uint64(maxEdgesPerReport + 8*MaxCallersPerWorkload - share(MaxCallers))
	if st.BaselineShareOverflow != want {
		t.Errorf("baseline share overflow %d, want %d", st.BaselineShareOverflow, want)
	}
	found := false
	for _, w := range e.Snapshot().Workloads {
		found = found || (w.Workload == "api" && len(w.Callers) == 1)
	}
	if !found {
		t.Error("api not learnt")
	}
}

func TestOutboundClaimsCreateNoMeshBaseline(t *testing.T) {
	e, _, _ := newTestEngine(t, Policy{}, nil)
	// frontend claims to call api and db, which have not reported, and a
	// service outside the mesh.
	e.ObserveReport(outbound(frontend, "frontend",
		graph.EdgeReport{PeerID: api, PeerWorkload: "api", MTLS: true, Counts: graph.Counts{Requests: 7}},
		graph.EdgeReport{PeerID: db, PeerWorkload: "db", MTLS: true, Counts: graph.Counts{Requests: 7}},
		graph.EdgeReport{Service: "ext/payments", Counts: graph.Counts{Requests: 3}}))
	snap := e.Snapshot()
	if len(snap.Workloads) != 1 || snap.Workloads[0].Workload != "ext/payments" || snap.Workloads[0].SPIFFEID != "" {
		t.Fatalf("baseline from outbound claims: %+v", snap.Workloads)
	}
	// The ledger still counts them.
	if tot := e.Totals(time.Time{}); len(tot) != 3 {
		t.Errorf("totals: %+v", tot)
	}
	// api's own report learns its caller.
	e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 7, 0)))
	if snap := e.Snapshot(); len(snap.Workloads) != 2 {
		t.Errorf("workloads: %+v", snap.Workloads)
	}
}

func TestWorkloadNamesPerIdentity(t *testing.T) {
	e, _, _ := newTestEngine(t, Policy{}, nil)
	for i := 0; i < MaxWorkloadsPerIdentity+6; i++ {
		e.ObserveReport(inbound(evil, fmt.Sprintf("w%d", i), edge(frontend, "frontend", 1, 0)))
	}
	e.ObserveAttestation(evil, "attested", "sha256:1")
	e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 1, 0)))
	if st := e.Stats(); st.Workloads != MaxWorkloadsPerIdentity+1 || st.NamesOverflow != 7 {
		t.Errorf("workloads %d, names overflow %d", st.Workloads, st.NamesOverflow)
	}
}

func TestGlobalRouteBound(t *testing.T) {
	e, _, _ := newTestEngine(t, Policy{}, nil)
	routes := servedRoutes(MaxRoutesPerCaller)
	callers := MaxBaselineRoutes/MaxRoutesPerCaller + 16
	for w := 0; w*MaxCallersPerWorkload < callers; w++ {
		var in []graph.EdgeReport
		for i := w * MaxCallersPerWorkload; i < min(callers, (w+1)*MaxCallersPerWorkload); i++ {
			in = append(in, edge(wid("load", fmt.Sprintf("c%d", i)), "c", uint64(len(routes)), 0, routes...))
		}
		e.ObserveReport(inbound(api, fmt.Sprintf("api%d", w), in...))
	}
	st := e.Stats()
	if e.routes != MaxBaselineRoutes || st.BaselineRoutesOverflow != 16*MaxRoutesPerCaller || st.RoutesOverflow != 0 {
		t.Fatalf("routes %d, overflow %d (want %d), per caller %d", e.routes, st.BaselineRoutesOverflow, 16*MaxRoutesPerCaller, st.RoutesOverflow)
	}
	flagged := 0
	for _, w := range e.Snapshot().Workloads {
		for _, c := range w.Callers {
			if c.RoutesOverflow {
				flagged++
			}
		}
	}
	if flagged != 16 {
		t.Errorf("%d callers flagged RoutesOverflow, want 16", flagged)
	}
}

func TestEventBucketPerReporter(t *testing.T) {
	e, clk, rec := newTestEngine(t, Policy{}, nil)
	learn(t, e, clk)
	// evil reports a hundred callers never learnt: a hundred new edges.
	var in []graph.EdgeReport
	for i := 0; i < 100; i++ {
		in = append(in, edge(wid("fake", fmt.Sprintf("c%d", i)), "c", 1, 0))
	}
	e.ObserveReport(inbound(evil, "evil", in...))
	if n, st := len(rec.of(NewEdge)), e.Stats(); n != ReporterEventBurst || st.RateLimitedEvents != 100-ReporterEventBurst {
		t.Fatalf("new edges %d (want %d), rate-limited %d", n, ReporterEventBurst, st.RateLimitedEvents)
	}
	// Another reporter's events are not limited by evil's.
	e.ObserveReport(inbound(api, "api", edge(intruder, "intruder", 1, 0)))
	if evs := rec.of(NewEdge); len(evs) != ReporterEventBurst+1 || evs[len(evs)-1].Source.SPIFFEID != intruder.String() {
		t.Fatalf("api's new edge not raised: %d events", len(evs))
	}
	// The bucket refills: 10 s make 5 events, of edges not yet raised
	// (those dropped are not suppressed).
	clk.Add(10 * time.Second)
	e.ObserveReport(inbound(evil, "evil", in...))
	if n := len(rec.of(NewEdge)); n != ReporterEventBurst+1+ReporterEventsPerMinute/6 {
		t.Errorf("new edges after 10 s: %d", n)
	}
	// code_changed rests on the controller's attestation: not limited.
	for i := 0; i <= 2*ReporterEventBurst; i++ {
		e.ObserveAttestation(evil, "evil", fmt.Sprintf("sha256:%d", i))
	}
	if n := len(rec.of(CodeChanged)); n != 2*ReporterEventBurst {
		t.Errorf("code_changed: %d events, want %d", n, 2*ReporterEventBurst)
	}
}

func TestSuppressionsEvictOldest(t *testing.T) {
	s := newSuppressions()
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	key := func(i int) suppressKey { return suppressKey{det: NewEdge, src: fmt.Sprint(i)} }
	for i := 0; i < MaxSuppressed; i++ {
		s.set(key(i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	s.set(key(0), t0.Add(time.Hour)) // raised again: now the newest
	s.set(key(-1), t0.Add(time.Hour))
	if _, ok := s.last(key(1)); ok || s.len() != MaxSuppressed {
		t.Fatalf("the least recently raised key kept (%v), %d keys", ok, s.len())
	}
	if at, ok := s.last(key(0)); !ok || !at.Equal(t0.Add(time.Hour)) {
		t.Fatal("a key raised again was evicted")
	}
	s.prune(t0.Add(time.Hour+time.Minute), func(Detection) time.Duration { return time.Hour })
	if s.len() != 2 {
		t.Fatalf("%d keys after prune, want 2", s.len())
	}
}

// BenchmarkEventAtSuppressionBound is the cost of one event while
// MaxSuppressed keys are remembered.
func BenchmarkEventAtSuppressionBound(b *testing.B) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	e, err := New(Config{Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	raise := func() {
		i++
		e.enqueueLocked(now, nil, Plaintext, spiffeid.ID{}, Event{Source: Party{IP: fmt.Sprint(i)}, Destination: &Party{Workload: "w"}})
		e.pending = e.pending[:0]
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.suppressed.len() < MaxSuppressed {
		raise()
	}
	for b.Loop() {
		raise()
	}
}

// boundedStore is a Store in memory with a bound.
type boundedStore struct {
	mu    sync.Mutex
	max   int
	saved *State
}

func (s *boundedStore) Load() (*State, error) { return nil, nil }
func (s *boundedStore) Save(st *State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saved = st
	return nil
}
func (s *boundedStore) MaxBytes() int { return s.max }

func TestSaveSkipsOversizedState(t *testing.T) {
	var logs bytes.Buffer
	store := &boundedStore{max: 2000}
	e, clk, _ := newTestEngine(t, Policy{}, func(c *Config) {
		c.Store = store
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	for i := 0; i < 20; i++ {
		e.ObserveReport(inbound(api, "api", edge(wid("load", fmt.Sprintf("c%d", i)), "c", 10, 0, servedRoutes(3)...)))
	}
	e.save()
	clk.Add(SaveInterval)
	e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 1, 0)))
	e.save()
	if store.saved != nil {
		t.Fatal("a state over the store's bound was built and saved")
	}
	if st := e.Stats(); st.SaveErrors != 2 {
		t.Errorf("save errors %d, want 2", st.SaveErrors)
	}
	if n := strings.Count(logs.String(), "baseline not saved"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	// The estimate never exceeds the real size.
	e.mu.Lock()
	est := e.estimateLocked()
	data, err := json.Marshal(e.stateLocked(clk.Now()))
	e.mu.Unlock()
	if err != nil || est > len(data) || est < len(data)/2 {
		t.Fatalf("estimate %d for %d bytes (%v)", est, len(data), err)
	}
	store.max = MaxStateBytes
	e.save()
	if store.saved == nil {
		t.Fatal("not saved once it fits")
	}
}
