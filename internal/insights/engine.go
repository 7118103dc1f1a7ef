package insights

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// Bounds of the engine's memory. What does not fit is dropped, counted in
// Stats and, for the baseline, flagged in the Snapshot.
const (
	// MaxWorkloads bounds the destination workloads of the baseline.
	MaxWorkloads = 4096
	// MaxCallersPerWorkload bounds the callers kept per workload
	// (WorkloadBaseline.CallersOverflow).
	MaxCallersPerWorkload = 1024
	// MaxRoutesPerCaller bounds the routes kept per caller
	// (Caller.RoutesOverflow).
	MaxRoutesPerCaller = 256
	// MaxServicesPerCaller bounds the services listed per caller.
	MaxServicesPerCaller = 16
	// MaxDigests bounds the code digests kept per workload, the most
	// recent last.
	MaxDigests = 8
	// MaxTrackedSources bounds each of the short-term trackers: sources
	// counted for denial bursts, source and destination pairs counted
	// for route scans, presented identities or addresses counted for TLS
	// and plaintext refusals. Observations past it are dropped (and
	// counted) until entries expire.
	MaxTrackedSources = 4096
	// MaxPathsPerPair bounds the distinct paths counted for one pair's
	// route scan; past it the pair counts as MaxPathsPerPair paths.
	MaxPathsPerPair = 256
	// MaxReporters bounds the identities remembered as reporting, which
	// decide whether an outbound edge is needed (its destination never
	// reports) or left to the destination's inbound report, and the
	// reporters whose shares are counted (reporters.go; past it, they
	// share one).
	MaxReporters = 16384
	// MaxSuppressed bounds the (detection, source, destination) keys
	// remembered to repeat no event within its window.
	MaxSuppressed = 16384
	// MaxPending bounds the events waiting for Config.OnEvent; past it
	// new events are dropped and counted.
	MaxPending = 4096
)

// Timing of the engine.
const (
	// SampleInterval is the span of one sample of an edge's bands: the
	// requests and failures counted over it make one rate and one error
	// share. Spans without a report count as zero rate, up to
	// maxIdleSamples of them.
	SampleInterval = 10 * time.Second
	// MinErrorSample is the fewest requests a sample needs to count in
	// the error-share band (fewer make the share noise).
	MinErrorSample = 10
	// AdaptHalfLife is the half-life of the exponential weighting with
	// which bands keep adapting after learning, from samples of spans
	// that raised no event on the edge.
	AdaptHalfLife = time.Hour
	// SaveInterval is how often Run saves a changed state.
	SaveInterval = 30 * time.Second
	// RateFloor is the least rate (requests per second) a rate spike
	// needs, whatever the band.
	RateFloor = 1.0
	// MinErrorRequests is the fewest requests in the window an error
	// spike needs.
	MinErrorRequests = 20
	// ScanRefusedShare is the least share of a source's distinct paths
	// that must have been answered only 4xx for a route scan.
	ScanRefusedShare = 0.8
	// BandSigmas is how many standard deviations above its mean a band
	// admits.
	BandSigmas = 4
	// MinRateSamples is the fewest samples a rate band needs before
	// rate spikes are looked for on its edge: a caller seen only at the
	// end of learning has no band yet, and gains one as it adapts.
	MinRateSamples = 6

	maxIdleSamples = 6
	gcInterval     = 10 * time.Second
)

// Engine learns the baseline, detects, responds and keeps the ledger. It
// is safe for concurrent use. Build it with New and run it with Run.
type Engine struct {
	now        func() time.Time
	log        *slog.Logger
	store      Store
	onEvent    func(Event)
	quarantine func(spiffeid.ID, time.Time, string) error
	running    atomic.Bool

	// emitMu is held by the goroutine delivering events (and the
	// quarantines they ask for), so that OnEvent sees them in order, one
	// at a time; mu is never taken while waiting for it.
	emitMu sync.Mutex

	mu         sync.Mutex
	pol        policy
	started    bool
	learnStart time.Time
	learnEnds  time.Time
	workloads  map[workloadKey]*workload
	names      map[string]int // workloads per SPIFFE ID
	callers    int            // callers of all workloads
	routes     int            // routes of all callers
	reporters  map[string]bool
	// shares counts, per reporter, the entries it created and its event
	// bucket (reporters.go); sharedReporter stands for the reporters
	// past MaxReporters.
	shares         map[string]*reporter
	sharedReporter *reporter
	denials        map[string]*window // source SPIFFE ID → denied counts
	// selfOut is what sources reported of their own outbound traffic,
	// per (source, destination SPIFFE ID) and, under destination
	// anySelfDst, over all destinations: requests and denials. A
	// quarantine needs it to corroborate its event (corroboratedLocked).
	selfOut    map[scanKey]*window
	scans      map[scanKey]*scanState // source and destination → paths
	refusals   map[refusalKey]*window // detection and presented ID or IP → counts
	suppressed *suppressions
	ledger     ledger
	pending    []pendingEvent
	lastGC     time.Time
	gen        uint64 // bumped at every change worth saving
	savedGen   uint64
	// oversize says the last save was skipped because the state would
	// exceed the store's bound (logged once until a save succeeds).
	oversize bool
	stats    Stats
}

// Stats are the engine's counters since New, for the controller's metrics.
type Stats struct {
	// Learning says the baseline is still being learnt.
	Learning bool
	// Workloads and Callers are the sizes of the baseline.
	Workloads, Callers int
	// Events counts the events raised, by detection; Suppressed those
	// not repeated within their window; DroppedEvents those dropped
	// because MaxPending were waiting.
	Events        map[Detection]uint64
	Suppressed    uint64
	DroppedEvents uint64
	// Quarantined counts quarantines made; QuarantineErrors those that
	// failed (the event then says Alert).
	Quarantined, QuarantineErrors uint64
	// Uncorroborated counts quarantines not made because the source's
	// own proxy did not report the traffic the event rests on (the event
	// then says Alert).
	Uncorroborated uint64
	// Overflow counts observations dropped at a bound: workloads,
	// callers (per workload, and MaxCallers), routes per caller, tracker
	// entries, ledger edges.
	WorkloadsOverflow, CallersOverflow, RoutesOverflow, TrackerOverflow, LedgerOverflow uint64
	// TrackerShareOverflow and BaselineShareOverflow count the tracker
	// entries, and the baseline workloads and callers, not created
	// because their reporter had used up its share of the bound
	// (reporters.go).
	TrackerShareOverflow, BaselineShareOverflow uint64
	// NamesOverflow counts workloads not learnt because their identity
	// already owned MaxWorkloadsPerIdentity workloads.
	NamesOverflow uint64
	// BaselineRoutesOverflow counts routes not kept because the baseline
	// held MaxBaselineRoutes.
	BaselineRoutesOverflow uint64
	// RateLimitedEvents counts events dropped because their reporter had
	// used up its bucket (ReporterEventsPerMinute).
	RateLimitedEvents uint64
	// LoadErrors counts saved states that could not be loaded (learning
	// then starts afresh); SaveErrors failed saves.
	LoadErrors, SaveErrors uint64
}

type pendingEvent struct {
	ev         Event
	quarantine bool
	source     spiffeid.ID
	until      time.Time
}

type suppressKey struct {
	det      Detection
	src, dst string
}

type refusalKey struct {
	det Detection
	key string
}

// New returns an Engine configured by cfg.
func New(cfg Config) (*Engine, error) {
	pol := cfg.Policy
	if pol.LearningPeriod == 0 && pol.QuarantineDuration == 0 && pol.Exempt == nil && pol.Rules == nil {
		pol = DefaultPolicy()
	}
	if err := pol.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		now:        cfg.Now,
		log:        cfg.Logger,
		store:      cfg.Store,
		onEvent:    cfg.OnEvent,
		quarantine: cfg.Quarantine,
		pol:        compilePolicy(pol),
		workloads:  make(map[workloadKey]*workload),
		names:      make(map[string]int),
		reporters:  make(map[string]bool),
		shares:     make(map[string]*reporter),
		denials:    make(map[string]*window),
		selfOut:    make(map[scanKey]*window),
		scans:      make(map[scanKey]*scanState),
		refusals:   make(map[refusalKey]*window),
		suppressed: newSuppressions(),
		ledger:     newLedger(),
		stats:      Stats{Events: make(map[Detection]uint64)},
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e, nil
}

// SetPolicy puts p in force from now on. A baseline still learning takes
// the new learning period (counted from its start); a finished one stays
// finished.
func (e *Engine) SetPolicy(p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	c := compilePolicy(p)
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pol = c
	if e.started && now.Before(e.learnEnds) {
		e.learnEnds = e.learnStart.Add(c.learning)
		e.gen++
	}
	return nil
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Events = make(map[Detection]uint64, len(e.stats.Events))
	for d, n := range e.stats.Events {
		s.Events[d] = n
	}
	s.Learning = e.learningLocked(now)
	s.Workloads = len(e.workloads)
	s.Callers = e.callers
	return s
}

// learningLocked says whether the baseline is still being learnt at now.
func (e *Engine) learningLocked(now time.Time) bool {
	return !e.started || now.Before(e.learnEnds)
}

// startLocked starts learning at now, at the first report.
func (e *Engine) startLocked(now time.Time) {
	if e.started {
		return
	}
	e.started = true
	e.learnStart = now
	e.learnEnds = now.Add(e.pol.learning)
	e.gen++
	e.log.Info("insights: learning the baseline", "until", e.learnEnds)
}

// Run loads the saved state (a state that cannot be loaded is logged,
// counted and replaced by a fresh baseline), then saves the state every
// SaveInterval when it changed, and once more when ctx ends. It returns
// nil when ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("insights: engine already running")
	}
	defer e.running.Store(false)
	e.load()
	t := time.NewTicker(SaveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			e.save()
			return nil
		case <-t.C:
			e.save()
		}
	}
}

func (e *Engine) load() {
	if e.store == nil {
		return
	}
	st, err := e.store.Load()
	if err == nil && st != nil {
		err = e.restore(st)
	}
	if err != nil {
		e.mu.Lock()
		e.stats.LoadErrors++
		e.mu.Unlock()
		e.log.Error("insights: saved baseline not loaded; learning afresh", "error", err)
		return
	}
	if st != nil {
		e.log.Info("insights: baseline loaded", "workloads", len(st.Baseline.Workloads), "learning", st.Baseline.Learning, "ledgerEntries", len(st.Ledger))
	}
}

// save writes the state when it changed since the last save; the state is
// copied under the lock and written outside it. A state that the store's
// bound (BoundedStore) would refuse, by the estimate of estimateLocked,
// is not copied: the save is skipped and counted as a SaveError, and
// logged once until a save succeeds.
func (e *Engine) save() {
	if e.store == nil {
		return
	}
	now := e.now()
	e.mu.Lock()
	if e.gen == e.savedGen {
		e.mu.Unlock()
		return
	}
	if b, ok := e.store.(BoundedStore); ok {
		if size, limit := e.estimateLocked(), b.MaxBytes(); size > limit {
			e.stats.SaveErrors++
			logged := e.oversize
			e.oversize = true
			e.mu.Unlock()
			if !logged {
				e.log.Error("insights: baseline not saved: it would exceed the store's bound; saves are skipped until it fits",
					"estimatedBytes", size, "maxBytes", limit)
			}
			return
		}
	}
	gen := e.gen
	st := e.stateLocked(now)
	e.mu.Unlock()
	if err := e.store.Save(st); err != nil {
		e.mu.Lock()
		e.stats.SaveErrors++
		e.mu.Unlock()
		e.log.Error("insights: baseline not saved", "error", err)
		return
	}
	e.mu.Lock()
	e.oversize = false
	if gen > e.savedGen {
		e.savedGen = gen
	}
	e.mu.Unlock()
}

// Least sizes, in bytes of JSON, of the parts of a saved State without
// their strings: estimateLocked adds them up so as never to exceed the
// real size, so that a state that would fit is never skipped.
const (
	minWorkloadJSON = 57  // {"spiffeId":"","namespace":"","workload":"","callers":[]}
	minCallerJSON   = 223 // mtls, two times, three counts, two bands
	minRouteJSON    = 36  // {"method":"","path":"","requests":0}
	minLedgerJSON   = 126 // hour, two parties, mtls, four counts
)

// estimateLocked is a lower bound of the size of the saved state, in
// bytes, counted without building it.
func (e *Engine) estimateLocked() int {
	n := 0
	for _, w := range e.workloads {
		n += minWorkloadJSON + len(w.key.id) + len(w.key.name) + len(w.namespace)
		for _, d := range w.digests {
			n += len(d) + 3
		}
		for _, c := range w.callers {
			n += minCallerJSON + len(c.key.id) + len(c.key.name)
			for s := range c.services {
				n += len(s) + 3
			}
			for k := range c.routes {
				n += minRouteJSON + len(k.method) + len(k.path)
			}
		}
	}
	for k := range e.ledger.hours {
		n += minLedgerJSON + len(k.edge.src.SPIFFEID) + len(k.edge.src.Namespace) + len(k.edge.src.Workload) +
			len(k.edge.dst.SPIFFEID) + len(k.edge.dst.Namespace) + len(k.edge.dst.Workload) + len(k.edge.service)
	}
	return n
}

// stateLocked is what the Store keeps.
func (e *Engine) stateLocked(now time.Time) *State {
	return &State{Baseline: *e.snapshotLocked(now), Ledger: e.ledger.entries()}
}

// restore replaces the engine's baseline and ledger by st's. Bounds are
// applied as if st had been observed.
func (e *Engine) restore(st *State) error {
	if st.Baseline.Version != snapshotVersion {
		return fmt.Errorf("insights: saved baseline has version %d, this controller reads version %d", st.Baseline.Version, snapshotVersion)
	}
	workloads := make(map[workloadKey]*workload, len(st.Baseline.Workloads))
	names := make(map[string]int)
	var callers, routes int
	for _, wb := range st.Baseline.Workloads {
		if len(workloads) >= MaxWorkloads {
			break
		}
		if wb.SPIFFEID != "" && names[wb.SPIFFEID] >= MaxWorkloadsPerIdentity {
			continue
		}
		w := restoreWorkload(wb, MaxCallers-callers, MaxBaselineRoutes-routes)
		workloads[w.key] = w
		if w.key.id != "" {
			names[w.key.id]++
		}
		callers += len(w.callers)
		for _, c := range w.callers {
			routes += len(c.routes)
		}
	}
	// Hours past retention, or later than the current one, are dropped.
	now := e.now()
	from, to := now.Add(-LedgerRetention).Add(-time.Hour), now.Add(time.Hour)
	l := newLedger()
	for _, h := range st.Ledger {
		if h.Hour.After(from) && h.Hour.Before(to) {
			l.restore(h)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.workloads = workloads
	e.names, e.callers, e.routes = names, callers, routes
	// The baseline loaded counts towards no reporter's share.
	for _, r := range e.shares {
		r.entries[trackWorkloads], r.entries[trackCallers] = 0, 0
	}
	if r := e.sharedReporter; r != nil {
		r.entries[trackWorkloads], r.entries[trackCallers] = 0, 0
	}
	e.ledger = l
	e.started = !st.Baseline.LearningStarted.IsZero()
	e.learnStart = st.Baseline.LearningStarted
	e.learnEnds = st.Baseline.LearningEnds
	if e.started && e.learnEnds.Before(e.learnStart) {
		e.learnEnds = e.learnStart
	}
	e.savedGen = e.gen
	return nil
}

// Snapshot returns the baseline, sorted: workloads by namespace then
// workload, callers by SPIFFE ID, routes by path then method.
func (e *Engine) Snapshot() *Snapshot {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.snapshotLocked(now)
}

func suppressionKey(d Detection, src Party, dst *Party) suppressKey {
	k := suppressKey{det: d, src: src.SPIFFEID + "|" + src.Workload + "|" + src.IP}
	if dst != nil {
		k.dst = dst.SPIFFEID + "|" + dst.Namespace + "/" + dst.Workload
	}
	return k
}

// quietLocked says whether an event of detection d between src and dst
// must not be raised now: the detection is disabled, or one was raised
// within the rule's window (counted as suppressed). Callers check it
// before building an event.
func (e *Engine) quietLocked(now time.Time, d Detection, src Party, dst *Party) bool {
	r := e.pol.rules[d]
	if !r.enabled {
		return true
	}
	if d == CodeChanged {
		return false
	}
	if last, ok := e.suppressed.last(suppressionKey(d, src, dst)); ok && now.Sub(last) < r.window {
		e.stats.Suppressed++
		return true
	}
	return false
}

// enqueueLocked raises an event for detection d unless quietLocked says
// not to or rep, the reporter whose report is the evidence, has used up
// its bucket (nil: the controller's own evidence, not limited). src is
// the source's verified identity (zero when unverified), which a
// quarantine needs.
func (e *Engine) enqueueLocked(now time.Time, rep *reporter, d Detection, src spiffeid.ID, ev Event) {
	if e.quietLocked(now, d, ev.Source, ev.Destination) {
		return
	}
	r := e.pol.rules[d]
	if d != CodeChanged {
		if !rep.allowEvent(now) {
			// Not remembered as raised: once the bucket refills, the
			// detection may fire.
			e.stats.RateLimitedEvents++
			return
		}
		e.suppressed.set(suppressionKey(d, ev.Source, ev.Destination), now)
	}
	if len(e.pending) >= MaxPending {
		e.stats.DroppedEvents++
		e.log.Warn("insights: event dropped, too many waiting", "detection", d)
		return
	}
	ev.ID = newEventID()
	ev.Time = now
	ev.Detection = d
	ev.Severity = r.severity
	ev.Action = ActionAlert
	e.stats.Events[d]++
	p := pendingEvent{ev: ev}
	if r.action == ActionQuarantine {
		switch {
		case src.IsZero() || ev.Source.Claimed:
			e.log.Warn("insights: not quarantining a source without a verified identity", "detection", d, "event", ev.ID)
		case !e.corroboratedLocked(now, d, src, ev):
			e.stats.Uncorroborated++
			e.log.Warn("insights: not quarantining: the source's own proxy did not report the traffic the event is about, so the evidence rests on the destination's word alone",
				"detection", d, "event", ev.ID, "spiffeId", src.String(), "reporter", ev.Evidence.Reporter)
		case e.pol.exempt[src.String()]:
			e.log.Info("insights: not quarantining an exempt identity", "detection", d, "event", ev.ID, "spiffeId", src.String())
		case src == identity.ControllerID(src.TrustDomain()):
			e.log.Warn("insights: not quarantining the controller", "detection", d, "event", ev.ID)
		default:
			p.quarantine = true
			p.source = src
			p.until = now.Add(e.pol.quarantine)
		}
	}
	e.pending = append(e.pending, p)
}

// anySelfDst is the destination under which selfOut sums a source's
// outbound traffic to every destination.
const anySelfDst = "*"

// MaxSelfReports bounds the (source, destination) pairs of selfOut.
const MaxSelfReports = 4 * MaxTrackedSources

// selfReportSpan is how long selfOut keeps what sources reported: the
// longest a corroborated detection looks back over (a longer window,
// such as new_edge's hour, is cut to it). Entries closer than an
// eighth of a minute are merged.
const selfReportSpan = 2 * time.Minute

// selfReportLocked records an outbound edge that the source's own proxy
// (rep) reported.
func (e *Engine) selfReportLocked(now time.Time, rep *reporter, src string, er *graph.EdgeReport) {
	if er.Requests == 0 && er.Denied == 0 {
		return
	}
	keys := [2]scanKey{{src: src, dst: anySelfDst}}
	n := 1
	if !er.PeerID.IsZero() {
		keys[1] = scanKey{src: src, dst: er.PeerID.String()}
		n = 2
	}
	for _, k := range keys[:n] {
		w := e.selfOut[k]
		if w == nil {
			if len(e.selfOut) >= MaxSelfReports {
				e.stats.TrackerOverflow++
				continue
			}
			if !e.claim(rep, trackSelfOut) {
				continue
			}
			w = &window{owner: rep}
			e.selfOut[k] = w
		}
		w.add(now, selfReportSpan, er.Requests, er.Denied)
	}
}

// corroboratedLocked reports whether the source's own proxy reported
// the traffic an event rests on, within the detection's window: the
// evidence of traffic detections comes from the destination's proxy,
// whose report the controller cannot check, and a workload must not be
// able to have another quarantined by reporting lies about it. A
// detection that counts requests needs the source to have reported at
// least half as many to the destination; a denial burst, half as many
// denials over all destinations; code_changed rests on the controller's
// own attestation.
func (e *Engine) corroboratedLocked(now time.Time, d Detection, src spiffeid.ID, ev Event) bool {
	if d == CodeChanged {
		return true
	}
	span := min(e.pol.rules[d].window, selfReportSpan)
	dst := anySelfDst
	if d != DenialBurst {
		if ev.Destination == nil || ev.Destination.SPIFFEID == "" {
			return false
		}
		dst = ev.Destination.SPIFFEID
	}
	w := e.selfOut[scanKey{src: src.String(), dst: dst}]
	if w == nil {
		return false
	}
	reqs, denied := w.sum(now, span)
	if d == DenialBurst {
		return denied > 0 && 2*denied >= ev.Evidence.Denied
	}
	return reqs > 0 && 2*reqs >= ev.Evidence.Requests
}

// flush delivers the waiting events in order, outside mu, quarantining
// their sources first where they ask for it. When another goroutine is
// delivering (or OnEvent itself called the engine), flush leaves the
// events to it: it checks for more after it lets go of emitMu.
func (e *Engine) flush() {
	for {
		if !e.emitMu.TryLock() {
			return
		}
		for {
			e.mu.Lock()
			batch := e.pending
			e.pending = nil
			e.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, p := range batch {
				ev := p.ev
				if p.quarantine {
					e.respond(&ev, p)
				}
				if e.onEvent != nil {
					e.onEvent(ev)
				}
			}
		}
		e.emitMu.Unlock()
		e.mu.Lock()
		more := len(e.pending) > 0
		e.mu.Unlock()
		if !more {
			return
		}
	}
}

func (e *Engine) respond(ev *Event, p pendingEvent) {
	if e.quarantine == nil {
		e.log.Warn("insights: quarantine not available; alerting only", "detection", ev.Detection, "event", ev.ID)
		return
	}
	reason := string(ev.Detection) + " " + ev.ID
	if err := e.quarantine(p.source, p.until, reason); err != nil {
		e.mu.Lock()
		e.stats.QuarantineErrors++
		e.mu.Unlock()
		e.log.Error("insights: quarantine failed; alerting only", "detection", ev.Detection, "event", ev.ID, "spiffeId", p.source.String(), "error", err)
		return
	}
	e.mu.Lock()
	e.stats.Quarantined++
	e.mu.Unlock()
	until := p.until
	ev.Action = ActionQuarantine
	ev.QuarantinedUntil = &until
	e.log.Warn("insights: source quarantined", "detection", ev.Detection, "event", ev.ID, "spiffeId", p.source.String(), "until", until)
}

// newEventID returns 16 lower-case hexadecimal digits from crypto/rand.
func newEventID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24+).
	return hex.EncodeToString(b[:])
}

// gcLocked drops tracker entries whose windows are empty and ledger hours
// past retention, at most every gcInterval.
func (e *Engine) gcLocked(now time.Time) {
	if now.Sub(e.lastGC) < gcInterval && !e.lastGC.IsZero() {
		return
	}
	e.lastGC = now
	db := e.pol.rules[DenialBurst].window
	for k, w := range e.denials {
		if w.prune(now, db); len(w.entries) == 0 {
			delete(e.denials, k)
			release(w.owner, trackDenials)
		}
	}
	for k, w := range e.selfOut {
		if w.prune(now, selfReportSpan); len(w.entries) == 0 {
			delete(e.selfOut, k)
			release(w.owner, trackSelfOut)
		}
	}
	rs := e.pol.rules[RouteScan].window
	for k, s := range e.scans {
		if s.prune(now, rs); len(s.win.entries) == 0 && len(s.paths) == 0 {
			delete(e.scans, k)
			release(s.win.owner, trackScans)
		}
	}
	for k, w := range e.refusals {
		if w.prune(now, e.pol.rules[k.det].window); len(w.entries) == 0 {
			delete(e.refusals, k)
			release(w.owner, trackRefusals)
		}
	}
	e.suppressed.prune(now, func(d Detection) time.Duration { return e.pol.rules[d].window })
	e.gcReportersLocked(now)
	if e.ledger.prune(now) {
		e.gen++
	}
}
