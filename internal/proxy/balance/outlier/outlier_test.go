package outlier

import (
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

func newDetector(t *testing.T, c *clock, cfg Config) *Detector {
	t.Helper()
	cfg.Now = c.Now
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// feed records results ('f' failed, 's' succeeded) 10ms apart and returns
// the 1-based index of the result that ejected e, or 0.
func feed(c *clock, e *Endpoint, results string) int {
	for i, r := range results {
		c.Advance(10 * time.Millisecond)
		if e.Record(c.Now(), r == 'f') {
			return i + 1
		}
	}
	return 0
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func TestEjectionRules(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		results string
		want    int // index of the ejecting result, 0 for none
	}{
		{"five in a row", Config{}, "sfffff", 6},
		{"a success resets the run", Config{}, "ffffsffff" + "f", 10},
		{"three in a row when configured", Config{ConsecutiveFailures: 3, FailureRate: -1}, "fsfff", 5},
		{"consecutive rule off", Config{ConsecutiveFailures: -1, FailureRate: -1}, repeat("f", 200), 0},
		// Alternating failures never make five in a row; the rate rule
		// needs 20 requests, and judges on a failure: 11 of 21.
		{"failure rate", Config{}, repeat("fs", 20), 21},
		{"rate needs its minimum", Config{MinRequests: 50}, repeat("fs", 24), 0},
		{"rate below the threshold", Config{}, repeat("fss", 300), 0},
		{"rate threshold configured", Config{FailureRate: 0.3}, repeat("fss", 10), 22},
		{"rate rule off", Config{FailureRate: -1}, repeat("fs", 100), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{}
			d := newDetector(t, c, tt.cfg)
			e := d.Add()
			d.Add() // a second member, so that one may be ejected
			if got := feed(c, e, tt.results); got != tt.want {
				t.Errorf("ejected at result %d, want %d", got, tt.want)
			}
		})
	}
}

func TestFailureRateWindowForgets(t *testing.T) {
	c := &clock{}
	d := newDetector(t, c, Config{ConsecutiveFailures: -1, Window: 10 * time.Second})
	e := d.Add()
	d.Add()
	// 19 failures out of 19: not yet the minimum of 20.
	if got := feed(c, e, repeat("f", 19)); got != 0 {
		t.Fatalf("ejected at %d before the minimum", got)
	}
	c.Advance(10 * time.Second) // they leave the window
	if got := feed(c, e, repeat("s", 19)+"f"); got != 0 {
		t.Fatalf("ejected at %d on old failures", got)
	}
	if got := feed(c, e, repeat("f", 18)); got != 18 {
		t.Fatalf("ejected at %d, want 18 (19 of 38 failed)", got)
	}
}

func TestEjectionPeriodsGrow(t *testing.T) {
	c := &clock{}
	d := newDetector(t, c, Config{})
	e := d.Add()
	d.Add()
	var got []time.Duration
	for range 12 {
		if feed(c, e, "fffff") != 5 {
			t.Fatal("not ejected by five failures on return")
		}
		start := c.Now()
		if !e.Ejected() || d.Ejected() != 1 {
			t.Fatal("not out after ejection")
		}
		period := e.EjectedUntil().Sub(start)
		got = append(got, period)
		// Still out a moment before the end, back at the end.
		c.Advance(period - time.Nanosecond)
		if !e.Ejected() {
			t.Fatal("back before its period ended")
		}
		c.Advance(time.Nanosecond)
		if e.Ejected() || d.Ejected() != 0 {
			t.Fatal("still out after its period")
		}
	}
	for i, p := range got {
		want := min(time.Duration(i+1)*30*time.Second, 5*time.Minute)
		if p != want {
			t.Errorf("ejection %d lasted %v, want %v", i+1, p, want)
		}
	}
}

func TestEjectionsForgiven(t *testing.T) {
	tests := []struct {
		healthy time.Duration // time in service between the third and fourth ejection
		want    time.Duration // how long the fourth lasts
	}{
		{0, 4 * 30 * time.Second},
		{29 * time.Second, 4 * 30 * time.Second},
		{30 * time.Second, 3 * 30 * time.Second},
		{60 * time.Second, 2 * 30 * time.Second},
		{10 * time.Minute, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.healthy.String(), func(t *testing.T) {
			c := &clock{}
			d := newDetector(t, c, Config{ConsecutiveFailures: 1, FailureRate: -1})
			e := d.Add()
			d.Add()
			for range 3 {
				if !e.Record(c.Now(), true) {
					t.Fatal("not ejected")
				}
				c.Advance(e.EjectedUntil().Sub(c.Now()))
			}
			c.Advance(tt.healthy)
			if !e.Record(c.Now(), true) {
				t.Fatal("fourth failure did not eject")
			}
			if got := e.EjectedUntil().Sub(c.Now()); got != tt.want {
				t.Errorf("fourth ejection lasts %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCapNeverEmptiesTheService(t *testing.T) {
	tests := []struct {
		members, percent int
		want             int // how many of the members end up out when all fail
	}{
		{1, 0, 0},
		{1, 100, 0},
		{2, 0, 1},
		{2, 100, 1},
		{3, 0, 1},
		{4, 0, 2},
		{4, 25, 1},
		{4, 100, 3},
		{10, 0, 5},
		{10, 10, 1},
		{10, 5, 0},
	}
	for _, tt := range tests {
		c := &clock{}
		d := newDetector(t, c, Config{MaxEjectedPercent: tt.percent})
		var eps []*Endpoint
		for range tt.members {
			eps = append(eps, d.Add())
		}
		out := 0
		for range 20 {
			for _, e := range eps {
				c.Advance(time.Millisecond)
				if e.Record(c.Now(), true) {
					out++
				}
			}
		}
		if out != tt.want || d.Ejected() != tt.want {
			t.Errorf("%d members, %d%%: %d ejected (detector says %d), want %d", tt.members, tt.percent, out, d.Ejected(), tt.want)
		}
	}
}

func TestCapFreesWhenAnEndpointReturns(t *testing.T) {
	c := &clock{}
	d := newDetector(t, c, Config{ConsecutiveFailures: 1, FailureRate: -1})
	a, b, x := d.Add(), d.Add(), d.Add()
	if !a.Record(c.Now(), true) {
		t.Fatal("a not ejected")
	}
	c.Advance(time.Second)
	if b.Record(c.Now(), true) {
		t.Fatal("b ejected past the cap (1 of 3)")
	}
	c.Advance(29 * time.Second) // a comes back
	if a.Ejected() {
		t.Fatal("a still out")
	}
	if !b.Record(c.Now(), true) {
		t.Fatal("b not ejected once a came back")
	}
	if x.Record(c.Now(), true) || a.Record(c.Now(), true) {
		t.Fatal("ejected past the cap")
	}
	// Removing the ejected b frees the cap; x is then 1 of 2.
	d.Remove(b)
	if !x.Record(c.Now(), true) {
		t.Fatal("x not ejected after b left")
	}
	if b.Record(c.Now(), true) {
		t.Fatal("a removed endpoint was ejected")
	}
}

func TestResultsIgnoredWhileOut(t *testing.T) {
	c := &clock{}
	d := newDetector(t, c, Config{})
	e := d.Add()
	d.Add()
	if feed(c, e, "fffff") != 5 {
		t.Fatal("not ejected")
	}
	// Requests that were in flight fail while it is out: they count for
	// nothing, and it returns with a clean slate.
	feed(c, e, repeat("f", 50))
	c.Advance(e.EjectedUntil().Sub(c.Now()))
	if got := feed(c, e, "ffffsfffff"); got != 10 {
		t.Errorf("ejected at %d after return, want 10", got)
	}
}

func TestConcurrentRecordsKeepTheCap(t *testing.T) {
	c := &clock{}
	d := newDetector(t, c, Config{ConsecutiveFailures: 2, BaseEjection: time.Millisecond, MaxEjection: 3 * time.Millisecond})
	var eps []*Endpoint
	for range 8 {
		eps = append(eps, d.Add())
	}
	var wg sync.WaitGroup
	var over atomic.Bool
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				e := eps[(g+i)%len(eps)]
				e.Record(c.Now(), i%5 != 0)
				if g == 0 {
					c.Advance(100 * time.Microsecond)
				}
				if d.Ejected() > 4 {
					over.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if over.Load() {
		t.Error("more than half of the endpoints were out at once")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"rules off", Config{ConsecutiveFailures: -1, FailureRate: -1}, true},
		{"rate above 1", Config{FailureRate: 1.5}, false},
		{"negative minimum", Config{MinRequests: -1}, false},
		{"negative window", Config{Window: -time.Second}, false},
		{"negative base", Config{BaseEjection: -time.Second}, false},
		{"max below base", Config{BaseEjection: time.Minute, MaxEjection: time.Second}, false},
		{"max below default base", Config{MaxEjection: time.Second}, false},
		{"percent above 100", Config{MaxEjectedPercent: 101}, false},
		{"negative percent", Config{MaxEjectedPercent: -1}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if _, err := New(tt.cfg); (err == nil) != tt.ok {
			t.Errorf("%s: New: %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	if (&Config{ConsecutiveFailures: -1, FailureRate: -1}).Enabled() {
		t.Error("Enabled with both rules off")
	}
	if !(&Config{FailureRate: -1}).Enabled() {
		t.Error("not Enabled with the consecutive rule on")
	}
}
