// Package outlier decides when an endpoint of a service fails enough to be
// taken out of balancing for a while (outlier ejection), and when it comes
// back.
//
// An endpoint is ejected after ConsecutiveFailures failures in a row, or
// when at least MinRequests requests over Window failed at FailureRate or
// more. Its N-th ejection lasts N×BaseEjection, capped at MaxEjection, and
// every BaseEjection it then stays in service takes one off N. No more
// than MaxEjectedPercent of a service's endpoints are out at once, and
// never all of them: a service is never emptied.
//
// Time comes from an injectable clock; Record takes the time of the result
// from its caller, who has read the clock already (the balancer reads it
// once per request). The proxy links this package: it must depend on the
// standard library only (no Kubernetes, no api/, no controller packages).
package outlier

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/balance/internal/window"
)

// Defaults of Config.
const (
	DefaultConsecutiveFailures = 5
	DefaultFailureRate         = 0.5
	DefaultMinRequests         = 20
	DefaultWindow              = 10 * time.Second
	DefaultBaseEjection        = 30 * time.Second
	DefaultMaxEjection         = 5 * time.Minute
	DefaultMaxEjectedPercent   = 50
)

// Config configures a Detector. The zero value gives the defaults.
type Config struct {
	// ConsecutiveFailures ejects an endpoint after this many failures in
	// a row. Zero means DefaultConsecutiveFailures; negative turns the
	// rule off.
	ConsecutiveFailures int
	// FailureRate ejects an endpoint whose failures over Window are at
	// least this fraction of its requests, once there were MinRequests.
	// Zero means DefaultFailureRate; negative turns the rule off; at most 1.
	FailureRate float64
	// MinRequests is how many requests over Window the failure rate needs
	// before it counts. Zero means DefaultMinRequests.
	MinRequests int
	// Window is the sliding window of the failure rate, forgotten in
	// tenths. Zero means DefaultWindow.
	Window time.Duration
	// BaseEjection is how long a first ejection lasts; the N-th lasts N
	// times as long. Zero means DefaultBaseEjection.
	BaseEjection time.Duration
	// MaxEjection caps how long one ejection lasts. Zero means
	// DefaultMaxEjection; it may not be shorter than BaseEjection.
	MaxEjection time.Duration
	// MaxEjectedPercent caps the share of endpoints out at once, rounded
	// down; whatever it says, at least one endpoint stays in. Zero means
	// DefaultMaxEjectedPercent; at most 100.
	MaxEjectedPercent int
	// Now is the clock, which the times given to Record must come from;
	// nil means time.Now.
	Now func() time.Time
}

// Enabled reports whether any ejection rule is on.
func (c *Config) Enabled() bool { return c.ConsecutiveFailures >= 0 || c.FailureRate >= 0 }

// Validate reports a setting out of range.
func (c *Config) Validate() error {
	switch {
	case c.FailureRate > 1:
		return fmt.Errorf("outlier: failure rate %v is above 1", c.FailureRate)
	case c.MinRequests < 0:
		return fmt.Errorf("outlier: negative minimum request count %d", c.MinRequests)
	case c.Window < 0 || c.BaseEjection < 0 || c.MaxEjection < 0:
		return errors.New("outlier: negative duration")
	case c.MaxEjectedPercent < 0 || c.MaxEjectedPercent > 100:
		return fmt.Errorf("outlier: max ejected percent %d is not within 0..100", c.MaxEjectedPercent)
	}
	d := c.withDefaults()
	if d.MaxEjection < d.BaseEjection {
		return fmt.Errorf("outlier: max ejection %v is shorter than the base ejection %v", d.MaxEjection, d.BaseEjection)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if c.FailureRate == 0 {
		c.FailureRate = DefaultFailureRate
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.BaseEjection == 0 {
		c.BaseEjection = DefaultBaseEjection
	}
	if c.MaxEjection == 0 {
		c.MaxEjection = DefaultMaxEjection
	}
	if c.MaxEjectedPercent == 0 {
		c.MaxEjectedPercent = DefaultMaxEjectedPercent
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Detector tracks the endpoints of one service. It is safe for concurrent
// use.
type Detector struct {
	cfg   Config
	epoch time.Time
	maxN  int64 // the multiplier at which an ejection reaches MaxEjection

	mu      sync.Mutex
	members map[*Endpoint]struct{}
	// last is the latest time seen under mu: time never goes back for
	// the cap, whatever order callers that read the clock took the lock
	// in, so that the cap holds at every instant.
	last int64
}

// New returns a Detector without endpoints.
func New(cfg Config) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	base, maxd := int64(cfg.BaseEjection), int64(cfg.MaxEjection)
	return &Detector{
		cfg:     cfg,
		epoch:   cfg.Now(),
		maxN:    (maxd + base - 1) / base,
		members: make(map[*Endpoint]struct{}),
	}, nil
}

// nanotime is the time in nanoseconds since the detector's epoch.
func (d *Detector) nanotime() int64 { return int64(d.cfg.Now().Sub(d.epoch)) }

// Add makes a new endpoint a member of the service, in good standing.
func (d *Detector) Add() *Endpoint {
	e := &Endpoint{d: d, window: window.New(d.cfg.Window)}
	d.mu.Lock()
	d.members[e] = struct{}{}
	d.mu.Unlock()
	return e
}

// Remove takes an endpoint out of the service: it no longer counts toward
// the cap, and what is recorded for it afterwards is ignored.
func (d *Detector) Remove(e *Endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.members, e)
	e.removed = true
}

// Ejected returns how many endpoints are out now.
func (d *Detector) Ejected() int {
	now := d.nanotime()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ejectedLocked(d.monotonicLocked(now))
}

func (d *Detector) monotonicLocked(now int64) int64 {
	d.last = max(d.last, now)
	return d.last
}

func (d *Detector) ejectedLocked(now int64) int {
	n := 0
	for e := range d.members {
		if e.until.Load() > now {
			n++
		}
	}
	return n
}

// Endpoint is one endpoint's standing.
type Endpoint struct {
	d *Detector

	// until is when the current or last ejection ends, in nanoseconds
	// since the detector's epoch, or 0 if there was none; written under
	// d.mu.
	until atomic.Int64

	// Guarded by d.mu.
	ejections int64 // the multiplier of the last ejection, less what was forgiven
	removed   bool

	mu          sync.Mutex
	consecutive int
	window      window.Counter // A: requests, B: failures
}

// Record counts the result of one request to the endpoint, which ended at
// t, and reports whether it ejected the endpoint. Results that arrive
// while the endpoint is out, or after it was removed, are ignored.
func (e *Endpoint) Record(t time.Time, failed bool) bool {
	d := e.d
	cfg := &d.cfg
	now := int64(t.Sub(d.epoch))
	if now < e.until.Load() {
		return false
	}
	trip := false
	e.mu.Lock()
	if failed {
		e.consecutive++
	} else {
		e.consecutive = 0
	}
	if cfg.FailureRate >= 0 {
		var f uint64
		if failed {
			f = 1
		}
		e.window.Add(now, 1, f)
		if failed {
			reqs, fails := e.window.Sum(now)
			trip = reqs >= uint64(cfg.MinRequests) && float64(fails) >= cfg.FailureRate*float64(reqs)
		}
	}
	if cfg.ConsecutiveFailures >= 0 && e.consecutive >= cfg.ConsecutiveFailures {
		trip = true
	}
	e.mu.Unlock()
	if !trip {
		return false
	}
	return d.eject(e, now)
}

// eject takes e out unless the cap forbids it; e keeps its counts then, so
// that its next failure tries again.
func (d *Detector) eject(e *Endpoint, now int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now = d.monotonicLocked(now)
	if e.removed || now < e.until.Load() {
		return false // gone, or a concurrent result ejected it first
	}
	n := len(d.members)
	if d.ejectedLocked(now) >= min(n*d.cfg.MaxEjectedPercent/100, n-1) {
		return false
	}
	base := int64(d.cfg.BaseEjection)
	if last := e.until.Load(); last != 0 {
		// Every base period back in service forgives one ejection.
		e.ejections = max(0, e.ejections-(now-last)/base)
	}
	e.ejections = min(e.ejections+1, d.maxN)
	e.until.Store(now + min(base*e.ejections, int64(d.cfg.MaxEjection)))
	e.mu.Lock()
	e.consecutive = 0
	e.window.Reset()
	e.mu.Unlock()
	return true
}

// EjectedUntil returns when the endpoint's current or last ejection ends;
// the zero time if it was never ejected. The endpoint is out while the
// clock reads before that time.
func (e *Endpoint) EjectedUntil() time.Time {
	until := e.until.Load()
	if until == 0 {
		return time.Time{}
	}
	return e.d.epoch.Add(time.Duration(until))
}

// Ejected reports whether the endpoint is out now.
func (e *Endpoint) Ejected() bool { return e.d.nanotime() < e.until.Load() }
