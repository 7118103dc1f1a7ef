package insights

import (
	"container/list"
	"time"
)

// Shares of the bounds. Every short-term tracker entry and every baseline
// workload and caller is created on behalf of one reporter: the proxy
// whose verified identity sent the report or the security count. A
// reporter may create at most a share of each bound, so that one proxy
// (compromised, or lying) cannot fill a bound and leave the others
// unobserved. Past its share its new entries are dropped and counted
// (Stats.TrackerShareOverflow, Stats.BaselineShareOverflow); entries
// others created are never evicted for it. An entry's count is given
// back when it expires. Baseline entries loaded from the saved state
// count towards no reporter's share.
const (
	// ShareDivisor divides a bound into reporter shares: a reporter may
	// create at most 1/ShareDivisor of the entries of each bound ...
	ShareDivisor = 16
	// MinShare ... and at least MinShare of them.
	MinShare = 64
	// MaxCallers bounds the callers of the baseline, over all workloads
	// (each also bounded by MaxCallersPerWorkload).
	MaxCallers = 65536
	// MaxWorkloadsPerIdentity bounds the workloads (names) of the
	// baseline that one SPIFFE ID owns: a proxy names its own workload
	// in its reports.
	MaxWorkloadsPerIdentity = 64
	// MaxBaselineRoutes bounds the routes held over all callers of the
	// baseline; past it new routes are not kept (Caller.RoutesOverflow).
	MaxBaselineRoutes = 262144
	// ReporterEventsPerMinute and ReporterEventBurst are the token
	// bucket of the events whose evidence one reporter sent: past it,
	// its events are dropped and counted (Stats.RateLimitedEvents).
	// code_changed is exempt: it rests on the controller's attestation.
	ReporterEventsPerMinute = 30
	ReporterEventBurst      = 60
)

// share is a reporter's share of bound.
func share(bound int) int { return max(bound/ShareDivisor, MinShare) }

// tracker names what a reporter creates entries of.
type tracker int

const (
	trackDenials tracker = iota
	trackScans
	trackRefusals
	trackSelfOut
	trackWorkloads
	trackCallers
	numTrackers
)

// trackerShares are the shares of each tracker's bound.
var trackerShares = [numTrackers]int{
	trackDenials:   share(MaxTrackedSources),
	trackScans:     share(MaxTrackedSources),
	trackRefusals:  share(MaxTrackedSources),
	trackSelfOut:   share(MaxSelfReports),
	trackWorkloads: share(MaxWorkloads),
	trackCallers:   share(MaxCallers),
}

// reporter is what the engine counts of one reporting proxy: the entries
// it created, per tracker, and its event bucket.
type reporter struct {
	id      string
	entries [numTrackers]int
	tokens  float64
	refill  time.Time
}

// reporterLocked returns id's state, creating it. When MaxReporters are
// tracked and none is idle, the reporters past it share one state.
func (e *Engine) reporterLocked(now time.Time, id string) *reporter {
	if r := e.shares[id]; r != nil {
		return r
	}
	if len(e.shares) >= MaxReporters {
		if e.sharedReporter == nil {
			e.sharedReporter = &reporter{tokens: ReporterEventBurst, refill: now}
		}
		return e.sharedReporter
	}
	r := &reporter{id: id, tokens: ReporterEventBurst, refill: now}
	e.shares[id] = r
	return r
}

// claim counts an entry of t created on behalf of r; it says false (and
// counts the overflow) when r's share is used up. A nil r (the
// controller's own observations, saved state) is not counted.
func (e *Engine) claim(r *reporter, t tracker) bool {
	if r == nil {
		return true
	}
	if r.entries[t] >= trackerShares[t] {
		if t == trackWorkloads || t == trackCallers {
			e.stats.BaselineShareOverflow++
		} else {
			e.stats.TrackerShareOverflow++
		}
		return false
	}
	r.entries[t]++
	return true
}

// release gives back an entry of t that r created.
func release(r *reporter, t tracker) {
	if r != nil && r.entries[t] > 0 {
		r.entries[t]--
	}
}

const reporterRefillRate = ReporterEventsPerMinute / 60.0 // per second

func (r *reporter) refillTokens(now time.Time) {
	if d := now.Sub(r.refill); d > 0 {
		r.tokens = min(ReporterEventBurst, r.tokens+d.Seconds()*reporterRefillRate)
	}
	r.refill = now
}

// allowEvent takes a token from r's bucket; a nil r is not limited.
func (r *reporter) allowEvent(now time.Time) bool {
	if r == nil {
		return true
	}
	r.refillTokens(now)
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

// idle says r holds no entry and a full bucket: it can be forgotten.
func (r *reporter) idle(now time.Time) bool {
	for _, n := range r.entries {
		if n > 0 {
			return false
		}
	}
	r.refillTokens(now)
	return r.tokens >= ReporterEventBurst
}

// gcReportersLocked forgets idle reporters.
func (e *Engine) gcReportersLocked(now time.Time) {
	for id, r := range e.shares {
		if r.idle(now) {
			delete(e.shares, id)
		}
	}
}

// suppression is one remembered (detection, source, destination) key, in
// the order the keys were last raised, the oldest first.
type suppression struct {
	key suppressKey
	at  time.Time
}

// suppressions remembers when each key last raised an event; eviction at
// MaxSuppressed takes the least recently raised key, in O(1).
type suppressions struct {
	byKey map[suppressKey]*list.Element
	order list.List // of suppression, oldest first
}

func newSuppressions() *suppressions {
	return &suppressions{byKey: make(map[suppressKey]*list.Element)}
}

func (s *suppressions) len() int { return len(s.byKey) }

func (s *suppressions) last(k suppressKey) (time.Time, bool) {
	el, ok := s.byKey[k]
	if !ok {
		return time.Time{}, false
	}
	return el.Value.(*suppression).at, true
}

// set records that k raised an event at now; at MaxSuppressed it first
// drops the least recently raised key.
func (s *suppressions) set(k suppressKey, now time.Time) {
	if el, ok := s.byKey[k]; ok {
		el.Value.(*suppression).at = now
		s.order.MoveToBack(el)
		return
	}
	if len(s.byKey) >= MaxSuppressed {
		s.remove(s.order.Front())
	}
	s.byKey[k] = s.order.PushBack(&suppression{key: k, at: now})
}

func (s *suppressions) remove(el *list.Element) {
	delete(s.byKey, el.Value.(*suppression).key)
	s.order.Remove(el)
}

// prune drops the keys whose window (window(detection)) has passed.
func (s *suppressions) prune(now time.Time, window func(Detection) time.Duration) {
	for el := s.order.Front(); el != nil; {
		next := el.Next()
		if x := el.Value.(*suppression); now.Sub(x.at) >= window(x.key.det) {
			s.remove(el)
		}
		el = next
	}
}
