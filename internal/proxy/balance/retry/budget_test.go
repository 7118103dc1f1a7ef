package retry

import (
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a fake clock tests move by hand.
type clock struct{ ns atomic.Int64 }

var epoch = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func (c *clock) Now() time.Time          { return epoch.Add(time.Duration(c.ns.Load())) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *clock) Elapsed() time.Duration  { return time.Duration(c.ns.Load()) }

func newBudget(t testing.TB, c *clock, cfg BudgetConfig) *Budget {
	t.Helper()
	cfg.Now = c.Now
	b, err := NewBudget(cfg)
	if err != nil {
		t.Fatalf("NewBudget: %v", err)
	}
	return b
}

// withdrawAll withdraws until the budget refuses and returns how many it
// allowed.
func withdrawAll(b *Budget) int {
	n := 0
	for b.TryWithdraw() {
		n++
	}
	return n
}

func TestBudgetAllows(t *testing.T) {
	tests := []struct {
		name     string
		cfg      BudgetConfig
		requests int
		want     int
	}{
		{"defaults, no requests: the minimum rate over the window", BudgetConfig{}, 0, 100},
		{"defaults: a fifth of the requests on top", BudgetConfig{}, 1000, 300},
		{"ratio only", BudgetConfig{MinPerSecond: -1}, 50, 10},
		{"ratio only, rounded down", BudgetConfig{MinPerSecond: -1}, 4, 0},
		{"ratio only, exact", BudgetConfig{MinPerSecond: -1}, 5, 1},
		{"ratio above one", BudgetConfig{Ratio: 1.5, MinPerSecond: -1}, 10, 15},
		{"minimum only", BudgetConfig{Ratio: -1, MinPerSecond: 1, Window: 5 * time.Second}, 1000, 5},
		{"fractional minimum", BudgetConfig{Ratio: -1, MinPerSecond: 0.5, Window: 3 * time.Second}, 0, 1},
		{"nothing", BudgetConfig{Ratio: -1, MinPerSecond: -1}, 1000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{}
			b := newBudget(t, c, tt.cfg)
			for range tt.requests {
				b.Deposit()
			}
			if got := b.Available(); got != tt.want {
				t.Errorf("Available() = %d, want %d", got, tt.want)
			}
			if got := withdrawAll(b); got != tt.want {
				t.Errorf("withdrew %d, want %d", got, tt.want)
			}
			if b.Available() != 0 {
				t.Errorf("Available() = %d after withdrawing all", b.Available())
			}
		})
	}
}

func TestBudgetForgets(t *testing.T) {
	c := &clock{}
	b := newBudget(t, c, BudgetConfig{MinPerSecond: -1, Ratio: 0.5})
	for range 10 {
		b.Deposit()
	}
	c.Advance(5 * time.Second)
	if got := withdrawAll(b); got != 5 {
		t.Fatalf("withdrew %d, want 5", got)
	}
	for range 10 {
		b.Deposit()
	}
	if got := withdrawAll(b); got != 5 {
		t.Fatalf("after 10 more requests: withdrew %d, want 5", got)
	}
	// The first requests and retries leave the window together.
	c.Advance(5 * time.Second)
	if got := b.Available(); got != 0 {
		t.Fatalf("Available() = %d when the first half left, want 0", got)
	}
	// Then the rest.
	c.Advance(5 * time.Second)
	for range 2 {
		b.Deposit()
	}
	if got := withdrawAll(b); got != 1 {
		t.Fatalf("withdrew %d after the window, want 1", got)
	}
}

// TestBudgetOutage: every request fails and its client retries as often
// as the budget lets it; retries stay within ratio×requests plus the
// minimum in every window, whatever the request rate.
func TestBudgetOutage(t *testing.T) {
	tests := []struct {
		name     string
		cfg      BudgetConfig
		interval time.Duration // between requests
		attempts int           // the most each request makes
	}{
		{"defaults, 1000 requests/s", BudgetConfig{}, time.Millisecond, 3},
		{"defaults, 100 requests/s", BudgetConfig{}, 10 * time.Millisecond, 3},
		{"defaults, 5 requests/s", BudgetConfig{}, 200 * time.Millisecond, 3},
		{"defaults, retrying forever", BudgetConfig{}, 5 * time.Millisecond, 1000},
		{"10%, 1/s, 2s window", BudgetConfig{Ratio: 0.1, MinPerSecond: 1, Window: 2 * time.Second}, 3 * time.Millisecond, 5},
		{"ratio only", BudgetConfig{MinPerSecond: -1}, time.Millisecond, 10},
	}
	const runFor = 60 * time.Second
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{}
			b := newBudget(t, c, tt.cfg)
			win := b.counts.Width() * 10
			ratio := max(0, cmpOr(tt.cfg.Ratio, DefaultRatio))
			reserve := max(0, cmpOr(tt.cfg.MinPerSecond, DefaultMinPerSecond)) * win.Seconds()

			nb := int(runFor / b.counts.Width())
			reqs := make([]int, nb) // per tenth of a window
			retries := make([]int, nb)
			for c.Elapsed() < runFor {
				k := int(c.Elapsed() / b.counts.Width())
				b.Deposit()
				reqs[k]++
				for range tt.attempts - 1 {
					if !b.TryWithdraw() {
						break
					}
					retries[k]++
				}
				c.Advance(tt.interval)
			}
			totalReqs, totalRetries := 0, 0
			for k := range nb {
				totalReqs += reqs[k]
				totalRetries += retries[k]
				if k+10 > nb {
					continue
				}
				wr, wt := 0, 0
				for _, n := range reqs[k : k+10] {
					wr += n
				}
				for _, n := range retries[k : k+10] {
					wt += n
				}
				if bound := ratio*float64(wr) + reserve; float64(wt) > bound+1e-6 {
					t.Fatalf("window from %v: %d retries for %d requests, above the bound %.1f", time.Duration(k)*b.counts.Width(), wt, wr, bound)
				}
			}
			windows := math.Ceil(float64(runFor) / float64(win))
			if bound := ratio*float64(totalReqs) + reserve*windows; float64(totalRetries) > bound {
				t.Errorf("%d retries for %d requests in %v, above %.0f", totalRetries, totalReqs, runFor, bound)
			}
			// The budget is used, not just respected: what it allows in
			// a steady outage is what the clients got, give or take the
			// window edges.
			if want := min(ratio*float64(totalReqs)+reserve*windows, float64(totalReqs*(tt.attempts-1))); float64(totalRetries) < 0.85*want {
				t.Errorf("%d retries for %d requests: the budget allowed about %.0f", totalRetries, totalReqs, want)
			}
			t.Logf("%d requests, %d retries: %.3f attempts per request", totalReqs, totalRetries, float64(totalReqs+totalRetries)/float64(totalReqs))
		})
	}
}

func cmpOr(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

func TestBudgetConcurrent(t *testing.T) {
	c := &clock{}
	b := newBudget(t, c, BudgetConfig{Ratio: 0.25, MinPerSecond: 1})
	var deposits, withdrawals atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 5000 {
				if i%2 == 0 {
					b.Deposit()
					deposits.Add(1)
				} else if b.TryWithdraw() {
					withdrawals.Add(1)
				}
			}
		})
	}
	wg.Wait()
	bound := int64(0.25*float64(deposits.Load())) + 10
	if w := withdrawals.Load(); w > bound || w < bound-100 {
		t.Errorf("%d withdrawals for %d deposits, want at most %d and near it", w, deposits.Load(), bound)
	}
}

func TestBudgetValidate(t *testing.T) {
	tests := []struct {
		cfg BudgetConfig
		ok  bool
	}{
		{BudgetConfig{}, true},
		{BudgetConfig{Window: time.Second}, true},
		{BudgetConfig{Window: time.Minute}, true},
		{BudgetConfig{Window: 999 * time.Millisecond}, false},
		{BudgetConfig{Window: time.Minute + 1}, false},
		{BudgetConfig{Ratio: math.NaN()}, false},
		{BudgetConfig{MinPerSecond: math.Inf(1)}, false},
	}
	for _, tt := range tests {
		_, err := NewBudget(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%+v: %v, want ok=%v", tt.cfg, err, tt.ok)
		}
	}
}
