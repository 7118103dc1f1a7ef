package insights

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// clock is a test clock moved by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var td = spiffeid.RequireTrustDomainFromString("mesh.test")

func wid(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ns, "sa", sa)
}

var (
	frontend = wid("shop", "frontend")
	api      = wid("shop", "api")
	db       = wid("shop", "db")
	intruder = wid("shop", "intruder")
)

// recorder collects events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) of(d Detection) []Event {
	var out []Event
	for _, ev := range r.all() {
		if ev.Detection == d {
			out = append(out, ev)
		}
	}
	return out
}

func newTestEngine(t *testing.T, pol Policy, mod func(*Config)) (*Engine, *clock, *recorder) {
	t.Helper()
	clk := newClock()
	rec := &recorder{}
	cfg := Config{Now: clk.Now, Policy: pol, OnEvent: rec.add}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e, clk, rec
}

// inbound is a report of dst's proxy: requests from src.
func inbound(dst spiffeid.ID, dstName string, edges ...graph.EdgeReport) graph.Report {
	ns, _, _ := identity.ParseWorkloadID(dst)
	for i := range edges {
		edges[i].Direction = graph.Inbound
	}
	return graph.Report{Instance: dstName + "-0", ID: dst, Namespace: ns, Workload: dstName, Interval: 5 * time.Second, Edges: edges}
}

// outbound is src's own report of its outbound edges.
func outbound(src spiffeid.ID, srcName string, edges ...graph.EdgeReport) graph.Report {
	ns, _, _ := identity.ParseWorkloadID(src)
	for i := range edges {
		edges[i].Direction = graph.Outbound
	}
	return graph.Report{Instance: srcName + "-0", ID: src, Namespace: ns, Workload: srcName, Interval: 5 * time.Second, Edges: edges}
}

func edge(src spiffeid.ID, srcName string, requests, failures uint64, routes ...graph.RouteCount) graph.EdgeReport {
	return graph.EdgeReport{PeerID: src, PeerWorkload: srcName, MTLS: true, Service: "shop/api", Counts: graph.Counts{Requests: requests, Failures: failures}, Routes: routes}
}

// learn feeds the steady edge frontend → api (50 requests, 1 failure per
// 5 s) until learning is over.
func learn(t *testing.T, e *Engine, clk *clock) {
	t.Helper()
	for i := 0; i < 12*61; i++ {
		e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 50, 0, graph.RouteCount{Method: "GET", Path: "/items", StatusClass: 2, Count: 50})))
		clk.Add(5 * time.Second)
	}
	if e.Snapshot().Learning {
		t.Fatal("still learning after the learning period")
	}
}

func TestNewEdgeAfterLearningOnly(t *testing.T) {
	e, clk, rec := newTestEngine(t, Policy{}, nil)
	e.ObserveReport(inbound(api, "api", edge(intruder, "intruder", 1, 0)))
	if n := len(rec.all()); n != 0 {
		t.Fatalf("events while learning: %d", n)
	}
	learn(t, e, clk)
	if n := len(rec.all()); n != 0 {
		t.Fatalf("events from learnt traffic: %+v", rec.all())
	}
	// A caller first seen while learning is known.
	e.ObserveReport(inbound(api, "api", edge(intruder, "intruder", 1, 0)))
	if n := len(rec.of(NewEdge)); n != 0 {
		t.Fatalf("new_edge for a caller learnt: %d", n)
	}
	e.ObserveReport(inbound(db, "db", edge(frontend, "frontend", 3, 0)))
	e.ObserveReport(inbound(db, "db", edge(frontend, "frontend", 3, 0)))
	evs := rec.of(NewEdge)
	if len(evs) != 1 {
		t.Fatalf("new_edge events: %d, want 1 (repeats suppressed)", len(evs))
	}
	ev := evs[0]
	if ev.Source.SPIFFEID != frontend.String() || ev.Destination == nil || ev.Destination.SPIFFEID != db.String() ||
		ev.Severity != SeverityMedium || ev.Action != ActionAlert || len(ev.ID) != 16 || ev.Source.Namespace != "shop" {
		t.Errorf("event: %+v", ev)
	}
	// After the window, the same edge fires again.
	clk.Add(time.Hour)
	e.ObserveReport(inbound(db, "db", edge(frontend, "frontend", 3, 0)))
	if n := len(rec.of(NewEdge)); n != 2 {
		t.Errorf("new_edge after the window: %d events, want 2", n)
	}
	// New callers are not added to the baseline after learning.
	for _, w := range e.Snapshot().Workloads {
		if w.Workload == "db" && len(w.Callers) != 0 {
			t.Errorf("caller added after learning: %+v", w.Callers)
		}
	}
}

func TestRateSpike(t *testing.T) {
	for _, tc := range []struct {
		name    string
		perStep uint64 // requests per 5 s for a minute
		fire    bool
	}{
		{"steady", 50, false},
		{"near miss ×2.8", 140, false},
		{"spike ×3.5", 175, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk, rec := newTestEngine(t, Policy{}, nil)
			learn(t, e, clk)
			for i := 0; i < 12; i++ {
				e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", tc.perStep, 0)))
				clk.Add(5 * time.Second)
			}
			evs := rec.of(RateSpike)
			if got := len(evs) > 0; got != tc.fire {
				t.Fatalf("rate_spike fired %v, want %v: %+v", got, tc.fire, evs)
			}
			if tc.fire {
				ev := evs[0]
				if len(evs) != 1 {
					t.Errorf("%d events within one window, want 1", len(evs))
				}
				if ev.Evidence.Rate <= ev.Evidence.BandHigh || ev.Evidence.BaselineRate < 9 || ev.Evidence.BaselineRate > 11 || ev.Evidence.WindowSeconds != 60 {
					t.Errorf("evidence: %+v", ev.Evidence)
				}
				if ev.Source.SPIFFEID != frontend.String() || ev.Destination.Workload != "api" {
					t.Errorf("parties: %+v %+v", ev.Source, ev.Destination)
				}
			}
		})
	}
}

func TestRateSpikeFloor(t *testing.T) {
	e, clk, rec := newTestEngine(t, Policy{}, nil)
	// 0.1 req/s while learning.
	for i := 0; i < 12*61; i++ {
		n := uint64(0)
		if i%2 == 0 {
			n = 1
		}
		e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", n, 0)))
		clk.Add(5 * time.Second)
	}
	// 0.9 req/s: far above the band, below the floor.
	for i := 0; i < 12; i++ {
		e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 4, 0)))
		clk.Add(5 * time.Second)
	}
	if evs := rec.of(RateSpike); len(evs) != 0 {
		t.Fatalf("rate_spike below the floor: %+v", evs)
	}
}

func TestErrorSpike(t *testing.T) {
	for _, tc := range []struct {
		name              string
		requests, failing uint64 // per 5 s
		fire              bool
	}{
		{"15% below the threshold", 50, 8, false},
		{"too few requests", 1, 1, false},
		{"30%", 50, 15, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk, rec := newTestEngine(t, Policy{}, nil)
			learn(t, e, clk)
			for i := 0; i < 12; i++ {
				e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", tc.requests, tc.failing)))
				clk.Add(5 * time.Second)
			}
			evs := rec.of(ErrorSpike)
			if got := len(evs) > 0; got != tc.fire {
				t.Fatalf("error_spike fired %v, want %v: %+v", got, tc.fire, evs)
			}
			if tc.fire && (evs[0].Severity != SeverityLow || evs[0].Evidence.ErrorRate <= 0.2 || evs[0].Evidence.Requests < MinErrorRequests) {
				t.Errorf("event: %+v", evs[0])
			}
		})
	}
}

func TestDenialBurst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		denied []uint64 // per 5 s
		fire   bool
	}{
		{"19 in 30 s", []uint64{5, 5, 5, 4}, false},
		{"20 spread over 40 s", []uint64{4, 4, 4, 4, 0, 0, 0, 4}, false},
		{"20 in 30 s", []uint64{5, 5, 5, 5}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk, rec := newTestEngine(t, Policy{}, nil)
			for _, n := range tc.denied {
				er := edge(intruder, "intruder", n, 0)
				er.Denied = n
				// Half to api, half to db: one source over all destinations.
				e.ObserveReport(inbound(api, "api", er))
				clk.Add(5 * time.Second)
			}
			evs := rec.of(DenialBurst)
			if got := len(evs) > 0; got != tc.fire {
				t.Fatalf("denial_burst fired %v, want %v: %+v", got, tc.fire, evs)
			}
			if tc.fire {
				if ev := evs[0]; ev.Source.SPIFFEID != intruder.String() || ev.Evidence.Denied != 20 || ev.Severity != SeverityHigh || ev.Destination != nil {
					t.Errorf("event: %+v", ev)
				}
			}
		})
	}
}

func TestDenialBurstOverDestinations(t *testing.T) {
	e, _, rec := newTestEngine(t, Policy{}, nil)
	for _, dst := range []struct {
		id   spiffeid.ID
		name string
	}{{api, "api"}, {db, "db"}} {
		er := edge(intruder, "intruder", 10, 0)
		er.Denied = 10
		e.ObserveReport(inbound(dst.id, dst.name, er))
	}
	if n := len(rec.of(DenialBurst)); n != 1 {
		t.Fatalf("denial_burst events: %d, want 1", n)
	}
}

func scanRoutes(paths int, status uint8) []graph.RouteCount {
	var rs []graph.RouteCount
	for i := 0; i < paths; i++ {
		rs = append(rs, graph.RouteCount{Method: "GET", Path: fmt.Sprintf("/admin/%d", i), StatusClass: status, Count: 2})
	}
	return rs
}

func TestRouteScan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routes []graph.RouteCount
		fire   bool
	}{
		{"14 paths", scanRoutes(14, 4), false},
		{"15 paths answered 2xx", scanRoutes(15, 2), false},
		{"15 refused paths of 20 (75%)", append(scanRoutes(15, 4), servedRoutes(5)...), false},
		{"15 paths answered 4xx", scanRoutes(15, 4), true},
		// Normal traffic to a few busy routes does not dilute a scan:
		// 15 refused paths of 17 fire, whatever the requests per path.
		{"15 refused paths beside busy routes", append(scanRoutes(15, 4),
			graph.RouteCount{Method: "GET", Path: "/items", StatusClass: 2, Count: 500},
			graph.RouteCount{Method: "GET", Path: "/cart", StatusClass: 2, Count: 500}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk, rec := newTestEngine(t, Policy{}, nil)
			// Spread over three reports within the window.
			for i := 0; i < 3; i++ {
				var part []graph.RouteCount
				for j, r := range tc.routes {
					if j%3 == i {
						part = append(part, r)
					}
				}
				var n uint64
				for _, r := range part {
					n += r.Count
				}
				e.ObserveReport(inbound(api, "api", edge(intruder, "intruder", n, 0, part...)))
				clk.Add(5 * time.Second)
			}
			evs := rec.of(RouteScan)
			if got := len(evs) > 0; got != tc.fire {
				t.Fatalf("route_scan fired %v, want %v: %+v", got, tc.fire, evs)
			}
			if tc.fire {
				ev := evs[0]
				if ev.Evidence.DistinctPaths < 15 || len(ev.Evidence.Paths) != 10 || ev.Evidence.RefusedShare < ScanRefusedShare || ev.Source.SPIFFEID != intruder.String() {
					t.Errorf("event: %+v", ev)
				}
			}
		})
	}
}

// servedRoutes is n paths answered 2xx.
func servedRoutes(n int) []graph.RouteCount {
	rs := make([]graph.RouteCount, n)
	for i := range rs {
		rs[i] = graph.RouteCount{Method: "GET", Path: fmt.Sprintf("/items/%d", i), StatusClass: 2, Count: 3}
	}
	return rs
}

func TestSecurityRefusals(t *testing.T) {
	pol := DefaultPolicy()
	for _, d := range []Detection{UnknownCA, RevokedPeer, Plaintext} {
		r := pol.Rules[d]
		r.Action = ActionQuarantine
		pol.Rules[d] = r
	}
	var quarantined []spiffeid.ID
	e, _, rec := newTestEngine(t, pol, func(c *Config) {
		c.Quarantine = func(id spiffeid.ID, _ time.Time, _ string) error {
			quarantined = append(quarantined, id)
			return nil
		}
	})
	obs := func(kind SecurityKind, presented spiffeid.ID, ip string) SecurityObservation {
		return SecurityObservation{Reporter: api, Namespace: "shop", Workload: "api", Kind: kind, PeerIP: ip, PresentedID: presented, Serial: "0a1b", Issuer: "CN=evil", Port: 8443, Count: 1}
	}
	e.ObserveSecurity([]SecurityObservation{
		obs(TLSUnknownCA, intruder, "10.0.0.9"),
		obs(TLSRevoked, frontend, "10.0.0.7"),
		obs(PlaintextOnStrict, spiffeid.ID{}, "10.0.0.8"),
		obs(TLSBadCertificate, spiffeid.ID{}, "10.0.0.5"),
		obs(TLSUnknownCA, intruder, "10.0.0.9"), // same source: suppressed
	})
	evs := rec.all()
	if len(evs) != 3 {
		t.Fatalf("events: %d, want 3: %+v", len(evs), evs)
	}
	want := []struct {
		d   Detection
		sev Severity
		id  string
		ip  string
	}{
		{UnknownCA, SeverityHigh, intruder.String(), "10.0.0.9"},
		{RevokedPeer, SeverityCritical, frontend.String(), "10.0.0.7"},
		{Plaintext, SeverityMedium, "", "10.0.0.8"},
	}
	for i, w := range want {
		ev := evs[i]
		if ev.Detection != w.d || ev.Severity != w.sev || ev.Source.SPIFFEID != w.id || ev.Source.IP != w.ip ||
			ev.Destination.SPIFFEID != api.String() || ev.Evidence.Port != 8443 || ev.Evidence.Handshakes != 1 {
			t.Errorf("event %d: %+v", i, ev)
		}
		if w.id != "" && !ev.Source.Claimed {
			t.Errorf("event %d: presented identity not marked claimed", i)
		}
		if ev.Action != ActionAlert {
			t.Errorf("event %d: claimed or absent identity quarantined: %+v", i, ev)
		}
	}
	if len(quarantined) != 0 {
		t.Errorf("quarantined %v, want none", quarantined)
	}
}

func TestCodeChanged(t *testing.T) {
	e, _, rec := newTestEngine(t, Policy{}, nil)
	e.ObserveAttestation(api, "api", "sha256:aaaa")
	e.ObserveAttestation(api, "api", "sha256:aaaa")
	if n := len(rec.all()); n != 0 {
		t.Fatalf("events for a first or unchanged digest: %d", n)
	}
	e.ObserveAttestation(api, "api", "sha256:bbbb")
	evs := rec.of(CodeChanged)
	if len(evs) != 1 || evs[0].Evidence.Digest != "sha256:bbbb" || evs[0].Evidence.PreviousDigest != "sha256:aaaa" || evs[0].Severity != SeverityHigh {
		t.Fatalf("code_changed: %+v", evs)
	}
	e.ObserveAttestation(api, "api", "sha256:aaaa")
	if n := len(rec.of(CodeChanged)); n != 2 {
		t.Errorf("rolling back fired %d events in all, want 2", n)
	}
	snap := e.Snapshot()
	if len(snap.Workloads) != 1 || strings.Join(snap.Workloads[0].Digests, ",") != "sha256:bbbb,sha256:aaaa" {
		t.Errorf("digests: %+v", snap.Workloads)
	}
}

func TestQuarantineResponse(t *testing.T) {
	type call struct {
		id     spiffeid.ID
		until  time.Time
		reason string
	}
	for _, tc := range []struct {
		name    string
		source  spiffeid.ID
		exempt  bool
		failErr error
		want    Action
	}{
		{"quarantined", intruder, false, nil, ActionQuarantine},
		{"exempt", intruder, true, nil, ActionAlert},
		{"controller", identity.ControllerID(td), false, nil, ActionAlert},
		{"quarantine fails", intruder, false, errors.New("store full"), ActionAlert},
		// The destination's word alone: a workload must not get another
		// quarantined by reporting lies about it.
		{"uncorroborated", intruder, false, nil, ActionAlert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := DefaultPolicy()
			pol.QuarantineDuration = 10 * time.Minute
			r := pol.Rules[DenialBurst]
			r.Action = ActionQuarantine
			pol.Rules[DenialBurst] = r
			if tc.exempt {
				pol.Exempt = []spiffeid.ID{tc.source}
			}
			var calls []call
			var e *Engine
			rec := &recorder{}
			e, clk, _ := newTestEngine(t, pol, func(c *Config) {
				c.Quarantine = func(id spiffeid.ID, until time.Time, reason string) error {
					calls = append(calls, call{id, until, reason})
					return tc.failErr
				}
				// OnEvent runs outside the engine's locks: it may call it.
				c.OnEvent = func(ev Event) {
					_ = e.Snapshot()
					rec.add(ev)
				}
			})
			if tc.name != "uncorroborated" {
				// The source's own proxy reports the denials it got.
				out := edge(api, "api", 25, 0)
				out.Denied = 25
				e.ObserveReport(outbound(tc.source, "x", out))
			}
			er := edge(tc.source, "x", 25, 0)
			er.Denied = 25
			e.ObserveReport(inbound(api, "api", er))
			if got := e.Stats().Uncorroborated; (tc.name == "uncorroborated") != (got == 1) {
				t.Errorf("uncorroborated quarantines: %d", got)
			}
			evs := rec.of(DenialBurst)
			if len(evs) != 1 {
				t.Fatalf("events: %+v", rec.all())
			}
			ev := evs[0]
			if ev.Action != tc.want {
				t.Errorf("action %s, want %s", ev.Action, tc.want)
			}
			if tc.want == ActionQuarantine {
				until := clk.Now().Add(10 * time.Minute)
				if len(calls) != 1 || calls[0].id != intruder || !calls[0].until.Equal(until) || calls[0].reason != "denial_burst "+ev.ID {
					t.Errorf("quarantine calls: %+v", calls)
				}
				if ev.QuarantinedUntil == nil || !ev.QuarantinedUntil.Equal(until) {
					t.Errorf("quarantinedUntil: %v", ev.QuarantinedUntil)
				}
			} else if ev.QuarantinedUntil != nil {
				t.Errorf("quarantinedUntil set on an alert")
			}
			if tc.failErr != nil && e.Stats().QuarantineErrors != 1 {
				t.Errorf("quarantine error not counted")
			}
		})
	}
}

func TestDisabledRuleAndSeverity(t *testing.T) {
	pol := DefaultPolicy()
	pol.Rules[DenialBurst] = Rule{Disabled: true}
	pol.Rules[RouteScan] = Rule{Severity: SeverityCritical, Threshold: 3}
	e, _, rec := newTestEngine(t, pol, nil)
	er := edge(intruder, "intruder", 30, 0, scanRoutes(3, 4)...)
	er.Denied = 30
	e.ObserveReport(inbound(api, "api", er))
	evs := rec.all()
	if len(evs) != 1 || evs[0].Detection != RouteScan || evs[0].Severity != SeverityCritical {
		t.Fatalf("events: %+v", evs)
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		want string
	}{
		{"default", DefaultPolicy(), ""},
		{"zero", Policy{}, ""},
		{"negative learning", Policy{LearningPeriod: -time.Second}, "learning period"},
		{"long quarantine", Policy{QuarantineDuration: 8 * 24 * time.Hour}, "quarantine duration"},
		{"unknown detection", Policy{Rules: map[Detection]Rule{"port_scan": {}}}, "unknown detection"},
		{"bad action", Policy{Rules: map[Detection]Rule{NewEdge: {Action: "Block"}}}, "action"},
		{"bad severity", Policy{Rules: map[Detection]Rule{NewEdge: {Severity: "urgent"}}}, "severity"},
		{"error share over 1", Policy{Rules: map[Detection]Rule{ErrorSpike: {Threshold: 2}}}, "at most 1"},
		{"rate factor under 1", Policy{Rules: map[Detection]Rule{RateSpike: {Threshold: 0.5}}}, "at least 1"},
		{"short window", Policy{Rules: map[Detection]Rule{DenialBurst: {Window: time.Millisecond}}}, "window"},
		{"empty exempt", Policy{Exempt: []spiffeid.ID{{}}}, "exempt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one about %q", err, tc.want)
			}
			if _, err := New(Config{Policy: tc.p}); err == nil {
				t.Error("New accepted an invalid policy")
			}
		})
	}
}

func TestSetPolicyLearningPeriod(t *testing.T) {
	e, clk, _ := newTestEngine(t, Policy{}, nil)
	e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 1, 0)))
	start := clk.Now()
	if err := e.SetPolicy(Policy{LearningPeriod: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if s := e.Snapshot(); !s.LearningEnds.Equal(start.Add(2*time.Hour)) || !s.Learning {
		t.Fatalf("learning ends %v, want %v", s.LearningEnds, start.Add(2*time.Hour))
	}
	clk.Add(3 * time.Hour)
	if err := e.SetPolicy(Policy{LearningPeriod: 5 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if s := e.Snapshot(); s.Learning {
		t.Fatal("a finished baseline started learning again")
	}
	if err := e.SetPolicy(Policy{LearningPeriod: -1}); err == nil {
		t.Fatal("invalid policy accepted")
	}
}

func TestOutboundOnlyWhenDestinationSilent(t *testing.T) {
	e, _, _ := newTestEngine(t, Policy{}, nil)
	out := graph.Report{Instance: "frontend-0", ID: frontend, Namespace: "shop", Workload: "frontend", Edges: []graph.EdgeReport{
		{Direction: graph.Outbound, PeerID: api, PeerWorkload: "api", MTLS: true, Counts: graph.Counts{Requests: 7}},
		{Direction: graph.Outbound, Service: "shop/payments-external", Counts: graph.Counts{Requests: 3}},
		{Direction: graph.Overflow, Counts: graph.Counts{Requests: 100}},
	}}
	e.ObserveReport(out) // api has not reported yet: counted from frontend's side
	e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 7, 0)))
	e.ObserveReport(out) // now api reports: left to api's inbound view
	var apiReq, extReq uint64
	for _, tot := range e.Totals(time.Time{}) {
		switch tot.Destination.Workload {
		case "api":
			apiReq += tot.Requests
		case "shop/payments-external":
			extReq += tot.Requests
		}
	}
	if apiReq != 14 || extReq != 6 {
		t.Fatalf("totals: api %d (want 14), external %d (want 6)", apiReq, extReq)
	}
}

func TestTotalsHourGranularity(t *testing.T) {
	e, clk, _ := newTestEngine(t, Policy{}, nil)
	clk.Add(30 * time.Minute) // 09:30
	e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 10, 1)))
	clk.Add(time.Hour) // 10:30
	er := edge(frontend, "frontend", 5, 0)
	er.Denied, er.RateLimited, er.MTLS = 2, 1, false
	e.ObserveReport(inbound(api, "api", er))
	e.ObserveReport(inbound(db, "db", edge(api, "api", 4, 0)))

	all := e.Totals(clk.Now().Add(-2 * time.Hour))
	if len(all) != 2 {
		t.Fatalf("totals: %+v", all)
	}
	fa := all[0] // shop/api sorts before shop/db
	if fa.Destination.Workload != "api" || fa.Requests != 15 || fa.Failures != 1 || fa.Denied != 2 || fa.RateLimited != 1 || fa.MTLS ||
		!fa.First.Equal(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)) || !fa.Last.Equal(time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC)) {
		t.Errorf("frontend → api: %+v", fa)
	}
	// Since 10:45 covers the hour from 10:00.
	late := e.Totals(time.Date(2026, 3, 2, 10, 45, 0, 0, time.UTC))
	if len(late) != 2 || late[0].Requests != 5 {
		t.Errorf("totals since 10:45: %+v", late)
	}
	// Hours past retention are dropped.
	clk.Add(LedgerRetention + 2*time.Hour)
	e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 1, 0)))
	if got := e.Totals(time.Time{}); len(got) != 1 || got[0].Requests != 1 {
		t.Errorf("totals after retention: %+v", got)
	}
}

func TestBounds(t *testing.T) {
	e, _, _ := newTestEngine(t, Policy{}, nil)
	var edges []graph.EdgeReport
	for i := 0; i < MaxCallersPerWorkload+5; i++ {
		edges = append(edges, edge(wid("load", fmt.Sprintf("c%d", i)), "c", 1, 0))
	}
	var routes []graph.RouteCount
	for i := 0; i < MaxRoutesPerCaller+5; i++ {
		routes = append(routes, graph.RouteCount{Method: "GET", Path: fmt.Sprintf("/r/%d", i), StatusClass: 2, Count: 1})
	}
	edges = append(edges, edge(frontend, "frontend", uint64(len(routes)), 0, routes...))
	e.ObserveReport(inbound(api, "api", edges...))
	snap := e.Snapshot()
	w := snap.Workloads[0]
	if len(w.Callers) != MaxCallersPerWorkload || !w.CallersOverflow {
		t.Errorf("callers %d overflow %v", len(w.Callers), w.CallersOverflow)
	}
	e2, _, _ := newTestEngine(t, Policy{}, nil)
	e2.ObserveReport(inbound(api, "api", edge(frontend, "frontend", uint64(len(routes)), 0, routes...)))
	c := e2.Snapshot().Workloads[0].Callers[0]
	if len(c.Routes) != MaxRoutesPerCaller || !c.RoutesOverflow {
		t.Errorf("routes %d overflow %v", len(c.Routes), c.RoutesOverflow)
	}
	if st := e2.Stats(); st.RoutesOverflow != 5 {
		t.Errorf("routes overflow counted %d, want 5", st.RoutesOverflow)
	}
	// Requests the proxy could not attribute to a route flag the caller.
	e3, _, _ := newTestEngine(t, Policy{}, nil)
	e3.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 10, 0, graph.RouteCount{Method: "GET", Path: "/a", StatusClass: 2, Count: 4})))
	if c := e3.Snapshot().Workloads[0].Callers[0]; !c.RoutesOverflow {
		t.Error("unattributed requests not flagged")
	}
	// Tracked sources: reporters, each within its share, fill the bound.
	e4, _, _ := newTestEngine(t, Policy{}, nil)
	var obs []SecurityObservation
	per := trackerShares[trackRefusals]
	for i := 0; i < MaxTrackedSources+3; i++ {
		obs = append(obs, SecurityObservation{Reporter: wid("load", fmt.Sprintf("r%d", i/per)), Kind: PlaintextOnStrict, PeerIP: fmt.Sprintf("10.1.%d.%d", i/256, i%256), Count: 1})
	}
	e4.ObserveSecurity(obs)
	if st := e4.Stats(); st.TrackerOverflow != 3 || st.TrackerShareOverflow != 0 || len(e4.refusals) != MaxTrackedSources {
		t.Errorf("tracker overflow %d, share overflow %d, tracked %d", st.TrackerOverflow, st.TrackerShareOverflow, len(e4.refusals))
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "insights.json")
	e, clk, _ := newTestEngine(t, Policy{}, func(c *Config) { c.Store = NewFileStore(path) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	learn(t, e, clk)
	e.ObserveAttestation(api, "api", "sha256:aaaa")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	before := e.Snapshot()

	// A new engine (a restarted controller) continues.
	e2, _, rec := newTestEngine(t, Policy{}, func(c *Config) {
		c.Store = NewFileStore(path)
		c.Now = clk.Now
	})
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- e2.Run(ctx2) }()
	defer func() {
		cancel2()
		if err := <-done2; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, func() bool { return e2.Snapshot().LearningStarted.Equal(before.LearningStarted) })
	after := e2.Snapshot()
	if after.Learning || len(after.Workloads) != 1 || len(after.Workloads[0].Callers) != 1 {
		t.Fatalf("restored: %+v", after)
	}
	bc, ac := before.Workloads[0].Callers[0], after.Workloads[0].Callers[0]
	if ac.Requests != bc.Requests || ac.Rate.Samples != bc.Rate.Samples || ac.Rate.Mean != bc.Rate.Mean || len(ac.Routes) != 1 {
		t.Errorf("caller restored as %+v, was %+v", ac, bc)
	}
	if len(e2.Totals(time.Time{})) != 1 {
		t.Error("ledger not restored")
	}
	// Learning stays finished: a new caller is an event at once, and the
	// digest attested before the restart is remembered.
	e2.ObserveReport(inbound(api, "api", edge(intruder, "intruder", 1, 0)))
	e2.ObserveAttestation(api, "api", "sha256:bbbb")
	if len(rec.of(NewEdge)) != 1 || len(rec.of(CodeChanged)) != 1 {
		t.Errorf("events after restart: %+v", rec.all())
	}
}

func TestCorruptState(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"garbage", "{not json", 0o600, "not a saved baseline"},
		{"version", `{"baseline":{"version":7}}`, 0o600, "version 7"},
		{"readable by others", `{"baseline":{"version":1}}`, 0o644, "chmod 600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".json")
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			if _, err := NewFileStore(path).Load(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("load: %v, want an error about %q", err, tc.want)
			}
			e, clk, _ := newTestEngine(t, Policy{}, func(c *Config) { c.Store = NewFileStore(path) })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx) }()
			waitFor(t, func() bool { return e.Stats().LoadErrors == 1 })
			e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 1, 0)))
			if s := e.Snapshot(); !s.Learning || !s.LearningStarted.Equal(clk.Now()) {
				t.Errorf("not learning afresh: %+v", s)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		path := filepath.Join(dir, "large.json")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(MaxStateBytes + 1); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := NewFileStore(path).Load(); err == nil || !strings.Contains(err.Error(), "more than") {
			t.Fatalf("load: %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		st, err := NewFileStore(filepath.Join(dir, "none.json")).Load()
		if st != nil || err != nil {
			t.Fatalf("load of a missing file: %v %v", st, err)
		}
	})
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrentUse(t *testing.T) {
	e, clk, rec := newTestEngine(t, Policy{LearningPeriod: time.Minute}, func(c *Config) {
		c.Quarantine = func(spiffeid.ID, time.Time, string) error { return nil }
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				src := wid("load", fmt.Sprintf("c%d", (g*7+i)%40))
				er := edge(src, "c", 20, 1, scanRoutes(3, 4)...)
				er.Denied = 3
				e.ObserveReport(inbound(api, "api", er))
				e.ObserveSecurity([]SecurityObservation{{Reporter: api, Kind: TLSUnknownCA, PeerIP: "10.0.0.1", Count: 1}})
				e.ObserveAttestation(src, "c", fmt.Sprintf("sha256:%d", i%3))
				if i%50 == 0 {
					_ = e.Snapshot()
					_ = e.Totals(time.Time{})
					_ = e.Stats()
					_ = e.SetPolicy(Policy{LearningPeriod: time.Minute})
				}
				clk.Add(100 * time.Millisecond)
			}
		}()
	}
	runDone := make(chan struct{})
	go func() { _ = e.Run(ctx); close(runDone) }()
	wg.Wait()
	cancel()
	<-runDone
	ids := map[string]bool{}
	for _, ev := range rec.all() {
		if ids[ev.ID] {
			t.Fatalf("duplicate event ID %s", ev.ID)
		}
		ids[ev.ID] = true
	}
	if len(ids) == 0 {
		t.Fatal("no events from a busy, hostile mesh")
	}
}

func TestNoSpikesWhileLearning(t *testing.T) {
	e, clk, rec := newTestEngine(t, Policy{}, nil)
	for i := 0; i < 12*10; i++ {
		e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 50, 0)))
		clk.Add(5 * time.Second)
	}
	for i := 0; i < 12; i++ {
		e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 1000, 500)))
		clk.Add(5 * time.Second)
	}
	if evs := rec.all(); len(evs) != 0 {
		t.Fatalf("events while learning: %+v", evs)
	}
	if !e.Snapshot().Learning || !e.Stats().Learning {
		t.Fatal("not learning")
	}
}

func TestQuarantineUnavailable(t *testing.T) {
	pol := DefaultPolicy()
	pol.Rules[NewEdge] = Rule{Action: ActionQuarantine}
	e, clk, rec := newTestEngine(t, pol, nil) // no Config.Quarantine
	learn(t, e, clk)
	e.ObserveReport(inbound(db, "db", edge(intruder, "intruder", 1, 0)))
	if evs := rec.of(NewEdge); len(evs) != 1 || evs[0].Action != ActionAlert {
		t.Fatalf("events: %+v", evs)
	}
}

func TestOnEventMayCallTheEngine(t *testing.T) {
	var e *Engine
	rec := &recorder{}
	e, _, _ = newTestEngine(t, Policy{}, func(c *Config) {
		c.OnEvent = func(ev Event) {
			rec.add(ev)
			if ev.Detection == CodeChanged {
				// Re-entrant: its own events are delivered after this one.
				e.ObserveAttestation(db, "db", "sha256:2")
			}
		}
	})
	e.ObserveAttestation(api, "api", "sha256:1")
	e.ObserveAttestation(db, "db", "sha256:1")
	e.ObserveAttestation(api, "api", "sha256:2")
	evs := rec.of(CodeChanged)
	if len(evs) != 2 || evs[0].Destination.Workload != "api" || evs[1].Destination.Workload != "db" {
		t.Fatalf("events: %+v", evs)
	}
}

func TestRateSpikeNeedsABand(t *testing.T) {
	e, clk, rec := newTestEngine(t, Policy{}, nil)
	learn(t, e, clk)
	// db's caller appeared in the last seconds of learning: no band yet.
	e2, clk2, rec2 := newTestEngine(t, Policy{}, nil)
	for i := 0; i < 12*60-1; i++ {
		e2.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 50, 0)))
		clk2.Add(5 * time.Second)
	}
	e2.ObserveReport(inbound(db, "db", edge(api, "api", 1, 0)))
	clk2.Add(10 * time.Second)
	for i := 0; i < 12; i++ {
		e2.ObserveReport(inbound(db, "db", edge(api, "api", 50, 0)))
		e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 500, 0)))
		clk2.Add(5 * time.Second)
		clk.Add(5 * time.Second)
	}
	if evs := rec2.all(); len(evs) != 0 {
		t.Errorf("events for an edge without a band: %+v", evs)
	}
	if n := len(rec.of(RateSpike)); n != 1 {
		t.Errorf("rate_spike on a learnt edge: %d events, want 1", n)
	}
}

func TestRefusalThreshold(t *testing.T) {
	pol := DefaultPolicy()
	pol.Rules[UnknownCA] = Rule{Threshold: 3, Window: 10 * time.Second}
	e, clk, rec := newTestEngine(t, pol, nil)
	o := SecurityObservation{Reporter: api, Namespace: "shop", Workload: "api", Kind: TLSUnknownCA, PeerIP: "10.0.0.9", Count: 1}
	e.ObserveSecurity([]SecurityObservation{o, o})
	clk.Add(11 * time.Second) // the first two leave the window
	e.ObserveSecurity([]SecurityObservation{o, o})
	if n := len(rec.all()); n != 0 {
		t.Fatalf("events below the threshold: %+v", rec.all())
	}
	e.ObserveSecurity([]SecurityObservation{o})
	if evs := rec.of(UnknownCA); len(evs) != 1 || evs[0].Evidence.Handshakes != 3 || evs[0].Source.IP != "10.0.0.9" {
		t.Fatalf("events: %+v", rec.all())
	}
}
