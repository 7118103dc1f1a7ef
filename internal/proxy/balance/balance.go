// Package balance picks an endpoint of a service for each request (or
// each connection, for opaque TCP), preferring endpoints that answer fast
// and are not busy, and keeps endpoints that fail out of the way.
//
// The default mode is the power of two choices over a peak-EWMA cost, as
// Finagle and Linkerd balance: each pick draws two endpoints at random and
// takes the one whose latency estimate times (requests in flight + 1) is
// lower. The latency estimate jumps to any answer slower than it, moves
// toward faster ones with an exponentially weighted moving average, and
// decays toward zero while the endpoint gets no answers, so that an
// endpoint that was slow is tried again in time. An endpoint without an
// estimate (new, or back from ejection) takes one request at a time until
// it answers, then warms up: its cost is divided by a weight that ramps
// from WarmUpMinWeight to 1 over WarmUp. Round-robin is the alternative.
//
// Failures feed an outlier.Detector; ejected endpoints are skipped until
// their ejection ends. See docs/traffic.md.
//
// Time comes from an injectable clock, randomness from an injectable
// source. The proxy links this package: it must depend on the standard
// library and its own subpackages only (no Kubernetes, no api/, no
// controller packages, nothing of the proxy's own either, so that it
// stays a library the proxy calls).
package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/balance/outlier"
)

// Mode is how a Balancer picks.
type Mode uint8

const (
	// PeakEWMA picks the cheaper of two random endpoints, the cost being
	// the peak-EWMA latency estimate times (requests in flight + 1).
	PeakEWMA Mode = iota
	// RoundRobin takes the endpoints in turn.
	RoundRobin
)

func (m Mode) String() string {
	switch m {
	case PeakEWMA:
		return "peak-ewma"
	case RoundRobin:
		return "round-robin"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Outcome is how a request to a picked endpoint ended.
type Outcome uint8

const (
	// Success: the endpoint answered; its latency counts.
	Success Outcome = iota
	// Failure: the endpoint failed (see retry.Result.Failed); its latency
	// counts, at least FailurePenalty times the estimate, and outlier
	// detection counts a failure.
	Failure
	// Abandoned: the request says nothing about the endpoint (the caller
	// gave up first): only its in-flight count is released.
	Abandoned
)

// Defaults of Config.
const (
	DefaultDecay           = 10 * time.Second
	DefaultWarmUp          = 10 * time.Second
	DefaultWarmUpMinWeight = 0.1
	DefaultFailurePenalty  = 2
)

// Config configures a Balancer. The zero value gives the defaults.
type Config struct {
	// Mode is how endpoints are picked; the zero value is PeakEWMA.
	Mode Mode
	// Decay is the time constant of the latency estimate: an answer
	// weighs in as 1-e^(-Δt/Decay) when Δt passed since the previous
	// one, and an estimate without answers falls to 1/e of itself in
	// Decay. Zero means DefaultDecay.
	Decay time.Duration
	// WarmUp is how long an endpoint added to a service that had
	// endpoints, or back from ejection, takes to reach its full weight.
	// Zero means DefaultWarmUp; negative means none. The first endpoints
	// of a service do not warm up, and RoundRobin ignores it.
	WarmUp time.Duration
	// WarmUpMinWeight is the weight a warming endpoint starts at, in
	// (0, 1]: its cost is divided by it. Zero means
	// DefaultWarmUpMinWeight.
	WarmUpMinWeight float64
	// FailurePenalty: a failure counts as a latency of at least this
	// many times the endpoint's estimate, so that an endpoint that fails
	// fast does not look fast. Zero means DefaultFailurePenalty; at
	// least 1.
	FailurePenalty float64
	// Outlier configures outlier ejection; its zero value gives its
	// defaults, and turning both of its rules off turns ejection off.
	// Its clock is Now.
	Outlier outlier.Config
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand returns uniformly random numbers; nil means math/rand/v2's
	// global source. It must be safe for concurrent use if the Balancer
	// is used concurrently.
	Rand func() uint64
}

// Validate reports a setting out of range.
func (c *Config) Validate() error {
	switch {
	case c.Mode > RoundRobin:
		return fmt.Errorf("balance: unknown mode %d", c.Mode)
	case c.Decay < 0:
		return errors.New("balance: negative decay")
	case !(c.WarmUpMinWeight >= 0 && c.WarmUpMinWeight <= 1):
		return fmt.Errorf("balance: warm-up minimum weight %v is not within (0, 1]", c.WarmUpMinWeight)
	case c.FailurePenalty != 0 && !(c.FailurePenalty >= 1 && !math.IsInf(c.FailurePenalty, 1)):
		return fmt.Errorf("balance: failure penalty %v is not a finite number of at least 1", c.FailurePenalty)
	}
	if err := c.Outlier.Validate(); err != nil {
		return fmt.Errorf("balance: %w", err)
	}
	return nil
}

// noWarmUp is the warm-up start of an endpoint that does not warm up:
// far enough in the past, and far enough from overflowing.
const noWarmUp = math.MinInt64 / 2

// Balancer picks endpoints of type E among a set that changes. It is safe
// for concurrent use.
type Balancer[E comparable] struct {
	mode     Mode
	tau      float64 // Decay in nanoseconds
	warmUp   int64   // nanoseconds; 0 for none
	minW     float64
	penalty  float64
	now      func() time.Time
	epoch    time.Time
	rand     func() uint64
	detector *outlier.Detector // nil without outlier ejection

	view atomic.Pointer[view[E]]
	rr   atomic.Uint64

	mu  sync.Mutex     // serializes changes of the set and of the view
	eps []*endpoint[E] // the set, in the order Update gave; guarded by mu
}

// view is what picks read: the endpoints not ejected, and when the next
// ejected one returns.
type view[E comparable] struct {
	ready []*endpoint[E]
	next  int64 // nanoseconds since epoch; math.MaxInt64 for never
}

// New returns a Balancer without endpoints.
func New[E comparable](cfg Config) (*Balancer[E], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Decay == 0 {
		cfg.Decay = DefaultDecay
	}
	if cfg.WarmUp == 0 {
		cfg.WarmUp = DefaultWarmUp
	}
	if cfg.WarmUpMinWeight == 0 {
		cfg.WarmUpMinWeight = DefaultWarmUpMinWeight
	}
	if cfg.FailurePenalty == 0 {
		cfg.FailurePenalty = DefaultFailurePenalty
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Uint64
	}
	b := &Balancer[E]{
		mode:    cfg.Mode,
		tau:     float64(cfg.Decay),
		warmUp:  int64(max(cfg.WarmUp, 0)),
		minW:    cfg.WarmUpMinWeight,
		penalty: cfg.FailurePenalty,
		now:     cfg.Now,
		epoch:   cfg.Now(),
		rand:    cfg.Rand,
	}
	if cfg.Outlier.Enabled() {
		oc := cfg.Outlier
		oc.Now = cfg.Now
		d, err := outlier.New(oc)
		if err != nil {
			return nil, fmt.Errorf("balance: %w", err)
		}
		b.detector = d
	}
	b.view.Store(&view[E]{next: math.MaxInt64})
	return b, nil
}

// nanotime is the time in nanoseconds since the balancer's epoch.
func (b *Balancer[E]) nanotime() int64 { return int64(b.now().Sub(b.epoch)) }

// Update replaces the set of endpoints. Endpoints that stay keep their
// estimates, requests in flight and standing; new ones start without an
// estimate and, unless the set was empty, warm up. A key given twice
// counts once.
func (b *Balancer[E]) Update(keys []E) {
	now := b.nanotime()
	b.mu.Lock()
	defer b.mu.Unlock()
	old := make(map[E]*endpoint[E], len(b.eps))
	for _, ep := range b.eps {
		old[ep.key] = ep
	}
	warmStart := now
	if len(b.eps) == 0 || b.warmUp == 0 {
		warmStart = noWarmUp
	}
	seen := make(map[E]bool, len(keys))
	eps := make([]*endpoint[E], 0, len(keys))
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		ep, ok := old[k]
		if ok {
			delete(old, k)
		} else {
			ep = &endpoint[E]{key: k}
			ep.stamp.Store(now)
			ep.warmStart.Store(warmStart)
			if b.detector != nil {
				ep.out = b.detector.Add()
			}
		}
		eps = append(eps, ep)
	}
	for _, ep := range old {
		if ep.out != nil {
			b.detector.Remove(ep.out)
		}
	}
	b.eps = eps
	b.rebuildLocked(now)
}

// Handle is one picked endpoint. Call Done exactly once when the request
// is answered (response headers, or a tunnel stream established) or
// fails.
type Handle[E comparable] struct {
	b     *Balancer[E]
	ep    *endpoint[E]
	start int64 // when it was picked, in nanoseconds since the balancer's epoch
}

// Endpoint returns the picked endpoint.
func (h Handle[E]) Endpoint() E { return h.ep.key }

// Elapsed returns the time since the pick on the balancer's clock: the
// latency to give Done.
func (h Handle[E]) Elapsed() time.Duration { return time.Duration(h.b.nanotime() - h.start) }

// Done records how the request ended and how long it took to be answered,
// from about when it was picked, and reports whether this answer ejected
// the endpoint. It reads no clock: the answer came at the time of the pick
// plus latency.
func (h Handle[E]) Done(latency time.Duration, o Outcome) (ejected bool) {
	ep, b := h.ep, h.b
	ep.inflight.Add(-1)
	if o == Abandoned {
		return false
	}
	latency = max(latency, 1)
	now := h.start + int64(latency)
	ep.observe(b, now, float64(latency), o == Failure)
	if ep.out != nil && ep.out.Record(b.epoch.Add(time.Duration(now)), o == Failure) {
		b.mu.Lock()
		b.rebuildLocked(now)
		b.mu.Unlock()
		return true
	}
	return false
}

// Pick picks an endpoint for a request; false when the set is empty.
func (b *Balancer[E]) Pick() (Handle[E], bool) { return b.pick(nil) }

// Repick picks an endpoint for a retry of the request prev was picked
// for: another endpoint than prev's, unless it is the only one to pick.
func (b *Balancer[E]) Repick(prev Handle[E]) (Handle[E], bool) { return b.pick(prev.ep) }

func (b *Balancer[E]) pick(avoid *endpoint[E]) (Handle[E], bool) {
	v := b.view.Load()
	now := b.nanotime()
	if now >= v.next {
		v = b.refresh(now, v)
	}
	eps := v.ready
	var ep *endpoint[E]
	switch n := uint64(len(eps)); {
	case n == 0:
		return Handle[E]{}, false
	case n == 1:
		ep = eps[0]
	case b.mode == RoundRobin:
		i := b.rr.Add(1)
		if ep = eps[i%n]; ep == avoid {
			ep = eps[(i+1)%n]
		}
	default:
		// Two distinct endpoints, from the two halves of one random
		// number (Lemire's multiply-shift reduction).
		r := b.rand()
		i := uint64(uint32(r)) * n >> 32
		j := uint64(uint32(r>>32)) * (n - 1) >> 32
		if j >= i {
			j++
		}
		x, y := eps[i], eps[j]
		switch {
		case x == avoid:
			ep = y
		case y == avoid:
			ep = x
		case b.cheaper(x, y, now):
			ep = x
		default:
			ep = y
		}
	}
	ep.inflight.Add(1)
	return Handle[E]{b: b, ep: ep, start: now}, true
}

// cheaper reports whether x costs no more than y now. The cost is the
// estimate decayed since it was set, times (requests in flight + 1),
// divided by the warm-up weight. An endpoint without an estimate costs
// nothing while it has no request in flight and more than any measured
// one while it has (between two such, fewer in flight is cheaper), so
// that it takes one request at a time until it answers.
func (b *Balancer[E]) cheaper(x, y *endpoint[E], now int64) bool {
	ex, sx := x.load()
	ey, sy := y.load()
	kx, ky := x.inflight.Load(), y.inflight.Load()
	switch {
	case ex == 0 && ey == 0:
		return kx <= ky
	case ex == 0:
		return kx == 0
	case ey == 0:
		return ky != 0
	}
	cx := ex * float64(kx+1) / b.weight(x, now)
	cy := ey * float64(ky+1) / b.weight(y, now)
	// Both estimates decay by e^(-now/τ): one exponential compares them.
	return cx*math.Exp(float64(sx-sy)/b.tau) <= cy
}

// weight is the warm-up weight of ep at now, in [minW, 1].
func (b *Balancer[E]) weight(ep *endpoint[E], now int64) float64 {
	age := now - ep.warmStart.Load()
	if age >= b.warmUp {
		return 1
	}
	return b.minW + (1-b.minW)*float64(max(age, 0))/float64(b.warmUp)
}

// refresh rebuilds the view when an ejection has ended, unless another
// goroutine is changing it: the old view serves meanwhile.
func (b *Balancer[E]) refresh(now int64, v *view[E]) *view[E] {
	if !b.mu.TryLock() {
		return v
	}
	defer b.mu.Unlock()
	if cur := b.view.Load(); now < cur.next {
		return cur
	}
	return b.rebuildLocked(now)
}

// rebuildLocked makes the view of now: endpoints out are left out, those
// back are measured afresh and warm up again. When every endpoint is out
// (the detector never ejects the last, but the set may have shrunk to
// ejected ones), all of them are picked from.
func (b *Balancer[E]) rebuildLocked(now int64) *view[E] {
	v := &view[E]{next: math.MaxInt64}
	for _, ep := range b.eps {
		if ep.out != nil {
			var until int64
			if t := ep.out.EjectedUntil(); !t.IsZero() {
				until = int64(t.Sub(b.epoch))
			}
			if now < until {
				ep.ejected = true
				v.next = min(v.next, until)
				continue
			}
			if ep.ejected {
				ep.ejected = false
				ep.reset(until, b.warmUp != 0)
			}
		}
		v.ready = append(v.ready, ep)
	}
	if len(v.ready) == 0 {
		v.ready = b.eps
	}
	b.view.Store(v)
	return v
}

// Status is one endpoint's state, for display.
type Status[E comparable] struct {
	Endpoint E
	// InFlight is the number of requests picked for it and not Done.
	InFlight int
	// Latency is the latency estimate now; zero before the first answer.
	Latency time.Duration
	// Weight is the warm-up weight, 1 when warm.
	Weight float64
	// EjectedUntil is when its ejection ends; zero when it is in.
	EjectedUntil time.Time
}

// Endpoints returns the state of every endpoint, in the order of the last
// Update.
func (b *Balancer[E]) Endpoints() []Status[E] {
	now := b.nanotime()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Status[E], 0, len(b.eps))
	for _, ep := range b.eps {
		est, stamp := ep.load()
		s := Status[E]{
			Endpoint: ep.key,
			InFlight: int(ep.inflight.Load()),
			Latency:  time.Duration(est * math.Exp(-float64(max(now-stamp, 0))/b.tau)),
			Weight:   b.weight(ep, now),
		}
		if ep.out != nil && ep.out.Ejected() {
			s.EjectedUntil = ep.out.EjectedUntil()
		}
		out = append(out, s)
	}
	return out
}
