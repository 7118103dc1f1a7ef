package balance

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/rampart-mesh/rampart/internal/proxy/balance/outlier"
)

// endpoint is one endpoint's state.
type endpoint[E comparable] struct {
	key      E
	inflight atomic.Int64
	out      *outlier.Endpoint // nil without outlier ejection

	// The latency estimate: est is a float64's bits, in nanoseconds, 0
	// without an estimate; stamp is when it was last set, in nanoseconds
	// since the balancer's epoch. Writers hold mu and make seq odd while
	// they write, so that readers, who take no lock, see a consistent
	// pair (a sequence lock).
	mu    sync.Mutex
	seq   atomic.Uint32
	est   atomic.Uint64
	stamp atomic.Int64

	// warmStart is when the endpoint started to warm up, in nanoseconds
	// since the balancer's epoch, or noWarmUp.
	warmStart atomic.Int64

	ejected bool // out as of the last view; guarded by the balancer's mu
}

// load returns the estimate and when it was set. A reader that keeps
// meeting writers takes what it read after a few tries: one pick
// misjudged is cheaper than a reader spinning behind a preempted writer.
func (ep *endpoint[E]) load() (est float64, stamp int64) {
	for range 4 {
		s := ep.seq.Load()
		if s&1 != 0 {
			continue
		}
		est, stamp = math.Float64frombits(ep.est.Load()), ep.stamp.Load()
		if ep.seq.Load() == s {
			return est, stamp
		}
	}
	return math.Float64frombits(ep.est.Load()), ep.stamp.Load()
}

// storeLocked sets the estimate; ep.mu must be held.
func (ep *endpoint[E]) storeLocked(est float64, stamp int64) {
	ep.seq.Add(1)
	ep.est.Store(math.Float64bits(est))
	ep.stamp.Store(stamp)
	ep.seq.Add(1)
}

// observe folds an answer's latency s (nanoseconds, positive) at now into
// the estimate. The estimate as picks see it, decayed since it was set,
// jumps to s if s is higher (the peak); otherwise s weighs in as
// 1-e^(-Δt/τ).
func (ep *endpoint[E]) observe(b *Balancer[E], now int64, s float64, failed bool) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	est := math.Float64frombits(ep.est.Load())
	stamp := ep.stamp.Load()
	now = max(now, stamp)
	w := math.Exp(-float64(now-stamp) / b.tau)
	cur := est * w
	if failed {
		s = max(s, cur*b.penalty)
	}
	if s >= cur {
		est = s
	} else {
		est = est*w + s*(1-w)
	}
	ep.storeLocked(est, now)
}

// reset forgets the estimate of an endpoint back from ejection at t, and
// starts its warm-up then.
func (ep *endpoint[E]) reset(t int64, warm bool) {
	ep.mu.Lock()
	ep.storeLocked(0, t)
	ep.mu.Unlock()
	if warm {
		ep.warmStart.Store(t)
	}
}
