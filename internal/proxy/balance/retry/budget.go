// Package retry decides whether a request that failed may be sent again,
// and limits how much retrying a proxy does, so that retries never turn a
// partial outage into a full one:
//
//   - Budget allows retries up to a ratio of the requests over a sliding
//     window plus a minimum rate (the retry budget of Finagle and
//     Linkerd);
//   - Policy says which failures are retried: any request that failed
//     before a byte of it was sent; idempotent requests (RFC 9110) that
//     broke or were answered 502, 503 or 504; gRPC requests answered with
//     a configured status (UNAVAILABLE by default). It combines that with
//     a maximum number of attempts, the budget, the request's deadline and
//     a jittered exponential backoff (Backoff);
//   - Replay keeps the first bytes of a request body (64 KiB by default)
//     so that it can be sent again, and says when it cannot.
//
// Time comes from an injectable clock, randomness from an injectable
// source. The proxy links this package: it must depend on the standard
// library only (no Kubernetes, no api/, no controller packages).
package retry

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/balance/internal/window"
)

// Defaults of BudgetConfig, as in Finagle and Linkerd.
const (
	DefaultRatio        = 0.2
	DefaultMinPerSecond = 10
	DefaultWindow       = 10 * time.Second
)

// BudgetConfig configures a Budget. The zero value gives the defaults.
type BudgetConfig struct {
	// Ratio is how many retries each request allows: 0.2 is one retry for
	// every five requests. Zero means DefaultRatio; negative means none,
	// leaving only the minimum rate.
	Ratio float64
	// MinPerSecond is the rate of retries allowed whatever the number of
	// requests, for clients that send few: MinPerSecond×Window retries per
	// window. Zero means DefaultMinPerSecond; negative means none.
	MinPerSecond float64
	// Window is how long a request counts toward the budget, and a retry
	// against it; it is forgotten in tenths. Zero means DefaultWindow;
	// otherwise from 1s to 60s.
	Window time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Validate reports a setting out of range.
func (c *BudgetConfig) Validate() error {
	if c.Window != 0 && (c.Window < time.Second || c.Window > time.Minute) {
		return fmt.Errorf("retry: budget window %v is not within 1s..60s", c.Window)
	}
	if math.IsNaN(c.Ratio) || math.IsInf(c.Ratio, 0) || math.IsNaN(c.MinPerSecond) || math.IsInf(c.MinPerSecond, 0) {
		return errors.New("retry: budget ratio and minimum rate must be finite")
	}
	return nil
}

// Budget limits retries to a share of requests. Call Deposit for each
// request (not for its retries), TryWithdraw before each retry. Over
// every window of Window that starts on a tenth of Window since the
// budget was made, retries never exceed Ratio×requests + MinPerSecond×
// Window. It is safe for concurrent use.
type Budget struct {
	ratio   float64
	reserve float64 // retries allowed per window whatever the requests
	now     func() time.Time
	epoch   time.Time

	mu     sync.Mutex
	counts window.Counter // A: requests, B: retries
}

// NewBudget returns a budget with nothing deposited.
func NewBudget(cfg BudgetConfig) (*Budget, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Ratio == 0 {
		cfg.Ratio = DefaultRatio
	}
	if cfg.MinPerSecond == 0 {
		cfg.MinPerSecond = DefaultMinPerSecond
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &Budget{
		ratio:   max(cfg.Ratio, 0),
		reserve: max(cfg.MinPerSecond, 0) * cfg.Window.Seconds(),
		now:     cfg.Now,
		epoch:   cfg.Now(),
		counts:  window.New(cfg.Window),
	}
	return b, nil
}

func (b *Budget) nanotime() int64 { return int64(b.now().Sub(b.epoch)) }

// Deposit counts one request.
func (b *Budget) Deposit() {
	now := b.nanotime()
	b.mu.Lock()
	b.counts.Add(now, 1, 0)
	b.mu.Unlock()
}

// TryWithdraw reports whether one more retry fits the budget, and if so
// counts it.
func (b *Budget) TryWithdraw() bool {
	now := b.nanotime()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.availableLocked(now) < 1 {
		return false
	}
	b.counts.Add(now, 0, 1)
	return true
}

// Available returns how many retries the budget would allow now.
func (b *Budget) Available() int {
	now := b.nanotime()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.availableLocked(now)
}

// epsilon keeps a product such as 0.2×5 from rounding below the whole
// retry it means.
const epsilon = 1e-9

func (b *Budget) availableLocked(now int64) int {
	reqs, retries := b.counts.Sum(now)
	allowed := math.Floor(b.ratio*float64(reqs) + b.reserve + epsilon)
	return max(0, int(allowed)-int(retries))
}
