package balance

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/balance/outlier"
)

var epoch = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// clock is a fake clock tests move by hand.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return epoch.Add(time.Duration(c.ns.Load())) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newBalancer(t testing.TB, c *clock, cfg Config, keys ...string) *Balancer[string] {
	t.Helper()
	cfg.Now = c.Now
	b, err := New[string](cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if keys != nil {
		b.Update(keys)
	}
	return b
}

// endpointOf returns the state of key.
func endpointOf(t testing.TB, b *Balancer[string], key string) *endpoint[string] {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ep := range b.eps {
		if ep.key == key {
			return ep
		}
	}
	t.Fatalf("no endpoint %q", key)
	return nil
}

// record makes key answer one request now, as if it had been picked
// latency ago.
func record(t testing.TB, b *Balancer[string], key string, latency time.Duration, o Outcome) {
	t.Helper()
	ep := endpointOf(t, b, key)
	ep.inflight.Add(1)
	Handle[string]{b: b, ep: ep, start: b.nanotime() - int64(max(latency, 1))}.Done(latency, o)
}

func statusOf(t testing.TB, b *Balancer[string], key string) Status[string] {
	t.Helper()
	for _, s := range b.Endpoints() {
		if s.Endpoint == key {
			return s
		}
	}
	t.Fatalf("no endpoint %q", key)
	return Status[string]{}
}

func TestEstimate(t *testing.T) {
	const ms = time.Millisecond
	type step struct {
		advance time.Duration
		latency time.Duration
		outcome Outcome
		want    time.Duration // the estimate right after
	}
	invE := 1 / math.E
	tests := []struct {
		name  string
		steps []step
	}{
		{"first answer", []step{{0, 10 * ms, Success, 10 * ms}}},
		{"a slower answer is the new peak", []step{{0, 10 * ms, Success, 10 * ms}, {ms, 50 * ms, Success, 50 * ms}}},
		{"a faster answer weighs in with time", []step{
			{0, 100 * ms, Success, 100 * ms},
			// After τ the estimate reads 100/e; 10ms weighs in as 1-1/e.
			{10 * time.Second, 10 * ms, Success, time.Duration(float64(100*ms)*invE + float64(10*ms)*(1-invE))},
		}},
		{"a faster answer right away barely moves it", []step{
			{0, 100 * ms, Success, 100 * ms},
			{ms, 10 * ms, Success, time.Duration(100*float64(ms)*math.Exp(-1e-4) + 10*float64(ms)*(1-math.Exp(-1e-4)))},
		}},
		{"the estimate decays without answers", []step{
			{0, 100 * ms, Success, 100 * ms},
			{10 * time.Second, 0, Abandoned, time.Duration(float64(100*ms) * invE)},
			{10 * time.Second, 0, Abandoned, time.Duration(float64(100*ms) * invE * invE)},
		}},
		{"a fast failure counts double", []step{{0, 10 * ms, Success, 10 * ms}, {0, ms, Failure, 20 * ms}, {0, ms, Failure, 40 * ms}}},
		{"a slow failure counts as its latency", []step{{0, 10 * ms, Success, 10 * ms}, {0, 100 * ms, Failure, 100 * ms}}},
		{"a first failure counts as its latency", []step{{0, 3 * ms, Failure, 3 * ms}}},
		{"abandoned requests say nothing", []step{{0, 10 * ms, Success, 10 * ms}, {0, time.Hour, Abandoned, 10 * ms}}},
		{"a zero latency still makes an estimate", []step{{0, 0, Success, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{}
			b := newBalancer(t, c, Config{Outlier: outlier.Config{ConsecutiveFailures: -1, FailureRate: -1}}, "a")
			for i, st := range tt.steps {
				c.Advance(st.advance)
				record(t, b, "a", st.latency, st.outcome)
				got := statusOf(t, b, "a").Latency
				if d := got - st.want; d < -time.Microsecond || d > time.Microsecond {
					t.Fatalf("step %d: estimate %v, want %v", i, got, st.want)
				}
			}
		})
	}
}

func TestPeakEWMAPicksTheLowerCost(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name               string
		latA, latB         time.Duration // 0: no estimate
		inflightA, inflite int64
		want               string
	}{
		{"faster", 10 * ms, 20 * ms, 0, 0, "a"},
		{"faster but busy", 10 * ms, 20 * ms, 2, 0, "b"},   // 30 against 20
		{"slower but idle", 100 * ms, 10 * ms, 0, 10, "a"}, // 100 against 110
		{"unmeasured and idle", 0, ms, 0, 0, "a"},
		{"unmeasured with one in flight", 0, time.Second, 1, 50, "b"},
		{"both unmeasured: the idler", 0, 0, 3, 2, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{}
			b := newBalancer(t, c, Config{}, "a", "b")
			if tt.latA > 0 {
				record(t, b, "a", tt.latA, Success)
			}
			if tt.latB > 0 {
				record(t, b, "b", tt.latB, Success)
			}
			endpointOf(t, b, "a").inflight.Add(tt.inflightA)
			endpointOf(t, b, "b").inflight.Add(tt.inflite)
			for range 100 {
				h, ok := b.Pick()
				if !ok || h.Endpoint() != tt.want {
					t.Fatalf("picked %q (%v), want %q", h.Endpoint(), ok, tt.want)
				}
				h.Done(0, Abandoned)
			}
		})
	}
}

func TestWarmUpWeight(t *testing.T) {
	c := &clock{}
	b := newBalancer(t, c, Config{}, "a")
	if w := statusOf(t, b, "a").Weight; w != 1 {
		t.Fatalf("first endpoint's weight %v, want 1: the first set does not warm up", w)
	}
	c.Advance(time.Minute)
	b.Update([]string{"a", "b"})
	for _, st := range []struct {
		advance time.Duration
		want    float64
	}{{0, 0.1}, {5 * time.Second, 0.55}, {4 * time.Second, 0.91}, {time.Second, 1}, {time.Hour, 1}} {
		c.Advance(st.advance)
		if w := statusOf(t, b, "b").Weight; math.Abs(w-st.want) > 1e-9 {
			t.Errorf("weight %v, want %v", w, st.want)
		}
	}
	// A warming endpoint's cost is divided by its weight.
	c.Advance(time.Minute)
	b.Update([]string{"a", "b", "c"})
	record(t, b, "a", 10*time.Millisecond, Success)
	record(t, b, "c", 5*time.Millisecond, Success) // 5/0.1 = 50 against 10
	for range 20 {
		h, _ := b.Pick()
		if h.Endpoint() == "c" {
			t.Fatal("picked the warming endpoint over a warm one half as fast")
		}
		h.Done(0, Abandoned)
	}

	off := newBalancer(t, c, Config{WarmUp: -1}, "a")
	off.Update([]string{"a", "b"})
	if w := statusOf(t, off, "b").Weight; w != 1 {
		t.Errorf("weight %v without warm-up, want 1", w)
	}
}

func TestUpdateKeepsState(t *testing.T) {
	c := &clock{}
	b := newBalancer(t, c, Config{}, "a", "b")
	record(t, b, "a", 10*time.Millisecond, Success)
	record(t, b, "b", 20*time.Millisecond, Success)
	endpointOf(t, b, "a").inflight.Add(2)
	gone := Handle[string]{b: b, ep: endpointOf(t, b, "b"), start: b.nanotime()}
	gone.ep.inflight.Add(1)

	b.Update([]string{"c", "a", "a"})
	got := b.Endpoints()
	if len(got) != 2 || got[0].Endpoint != "c" || got[1].Endpoint != "a" {
		t.Fatalf("endpoints %+v, want c then a", got)
	}
	if got[0].Latency != 0 || got[0].InFlight != 0 || got[0].Weight != DefaultWarmUpMinWeight {
		t.Errorf("new endpoint %+v, want no estimate, nothing in flight, warming up", got[0])
	}
	if got[1].Latency != 10*time.Millisecond || got[1].InFlight != 2 || got[1].Weight != 1 {
		t.Errorf("kept endpoint %+v, want its estimate and requests in flight", got[1])
	}
	// A request to a removed endpoint ends without harm.
	gone.Done(time.Second, Failure)
	for range 100 {
		h, _ := b.Pick()
		if h.Endpoint() == "b" {
			t.Fatal("picked a removed endpoint")
		}
		h.Done(0, Abandoned)
	}
}

func TestEmpty(t *testing.T) {
	c := &clock{}
	for _, mode := range []Mode{PeakEWMA, RoundRobin} {
		b := newBalancer(t, c, Config{Mode: mode})
		if _, ok := b.Pick(); ok {
			t.Errorf("%v: picked from an empty balancer", mode)
		}
		b.Update([]string{"a"})
		b.Update(nil)
		if _, ok := b.Pick(); ok {
			t.Errorf("%v: picked after the set emptied", mode)
		}
		if len(b.Endpoints()) != 0 {
			t.Errorf("%v: endpoints %v", mode, b.Endpoints())
		}
	}
}

func TestRoundRobin(t *testing.T) {
	c := &clock{}
	b := newBalancer(t, c, Config{Mode: RoundRobin}, "a", "b", "c")
	record(t, b, "a", time.Hour, Success) // latency plays no part
	counts := map[string]int{}
	prev := ""
	for range 300 {
		h, _ := b.Pick()
		if h.Endpoint() == prev {
			t.Fatalf("picked %q twice in a row", prev)
		}
		prev = h.Endpoint()
		counts[prev]++
		h.Done(time.Millisecond, Success)
	}
	if counts["a"] != 100 || counts["b"] != 100 || counts["c"] != 100 {
		t.Errorf("picks %v, want 100 each", counts)
	}
}

func TestEjection(t *testing.T) {
	for _, mode := range []Mode{PeakEWMA, RoundRobin} {
		t.Run(mode.String(), func(t *testing.T) {
			c := &clock{}
			b := newBalancer(t, c, Config{Mode: mode, Outlier: outlier.Config{ConsecutiveFailures: 2, FailureRate: -1}}, "a", "b", "c")
			for _, k := range []string{"a", "b", "c"} {
				record(t, b, k, 10*time.Millisecond, Success)
			}
			record(t, b, "a", 10*time.Millisecond, Failure)
			if !statusOf(t, b, "a").EjectedUntil.IsZero() {
				t.Fatal("ejected after one failure")
			}
			record(t, b, "a", 10*time.Millisecond, Failure)
			if got, want := statusOf(t, b, "a").EjectedUntil, c.Now().Add(30*time.Second); !got.Equal(want) {
				t.Fatalf("ejected until %v, want %v", got, want)
			}
			picks := func() map[string]int {
				counts := map[string]int{}
				for range 300 {
					h, _ := b.Pick()
					counts[h.Endpoint()]++
					h.Done(0, Abandoned)
				}
				return counts
			}
			if n := picks()["a"]; n != 0 {
				t.Fatalf("ejected endpoint picked %d times", n)
			}
			// The cap: b cannot go out too (1 of 3 with 50%).
			record(t, b, "b", 10*time.Millisecond, Failure)
			record(t, b, "b", 10*time.Millisecond, Failure)
			if !statusOf(t, b, "b").EjectedUntil.IsZero() {
				t.Fatal("b ejected past the cap")
			}
			c.Advance(30*time.Second - 1)
			if n := picks()["a"]; n != 0 {
				t.Fatalf("picked %d times a nanosecond before the ejection ends", n)
			}
			c.Advance(1)
			if n := picks()["a"]; n == 0 {
				t.Fatal("not picked once back")
			}
			// Back: measured afresh, warming up again.
			s := statusOf(t, b, "a")
			if !s.EjectedUntil.IsZero() || s.Latency != 0 || (mode == PeakEWMA && s.Weight != DefaultWarmUpMinWeight) {
				t.Errorf("back from ejection: %+v, want no estimate and the warm-up restarted", s)
			}
		})
	}
}

func TestEveryEndpointOut(t *testing.T) {
	c := &clock{}
	b := newBalancer(t, c, Config{Outlier: outlier.Config{ConsecutiveFailures: 1, FailureRate: -1}}, "a", "b")
	record(t, b, "a", time.Millisecond, Failure)
	if statusOf(t, b, "a").EjectedUntil.IsZero() {
		t.Fatal("not ejected")
	}
	// The set shrinks to the ejected endpoint: it is picked rather than
	// nothing.
	b.Update([]string{"a"})
	h, ok := b.Pick()
	if !ok || h.Endpoint() != "a" {
		t.Fatalf("picked %q, %v; want a", h.Endpoint(), ok)
	}
}

func TestRepick(t *testing.T) {
	for _, mode := range []Mode{PeakEWMA, RoundRobin} {
		c := &clock{}
		b := newBalancer(t, c, Config{Mode: mode}, "a", "b")
		record(t, b, "a", time.Millisecond, Success)
		record(t, b, "b", time.Second, Success)
		for range 50 {
			h, _ := b.Pick()
			again, ok := b.Repick(h)
			if !ok || again.Endpoint() == h.Endpoint() {
				t.Fatalf("%v: repicked %q after %q", mode, again.Endpoint(), h.Endpoint())
			}
			h.Done(0, Abandoned)
			again.Done(0, Abandoned)
		}
		b.Update([]string{"a"})
		h, _ := b.Pick()
		if again, ok := b.Repick(h); !ok || again.Endpoint() != "a" {
			t.Errorf("%v: with one endpoint, repicked %q, %v", mode, again.Endpoint(), ok)
		}
	}
}

// TestConcurrent picks, answers and updates from several goroutines; run
// with -race. Every request in flight is accounted for at the end.
func TestConcurrent(t *testing.T) {
	c := &clock{}
	b := newBalancer(t, c, Config{Outlier: outlier.Config{ConsecutiveFailures: 3, BaseEjection: time.Millisecond, MaxEjection: 5 * time.Millisecond}},
		"a", "b", "c", "d")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		sets := [][]string{{"a", "b", "c", "d"}, {"b", "c", "e"}, {"a", "e"}, {"a", "b", "c", "d", "e", "f"}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				b.Update(sets[0])
				return
			default:
			}
			b.Update(sets[i%len(sets)])
			c.Advance(time.Millisecond)
		}
	})
	var picks sync.WaitGroup
	for g := range 4 {
		picks.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var held []Handle[string]
			for i := range 5000 {
				h, ok := b.Pick()
				if !ok {
					t.Error("no endpoint")
					return
				}
				if i%3 == 0 {
					h2, _ := b.Repick(h)
					held = append(held, h2)
				}
				held = append(held, h)
				if len(held) > 8 {
					for _, h := range held {
						o := Outcome(rng.IntN(3))
						h.Done(time.Duration(rng.IntN(int(time.Millisecond))), o)
					}
					held = held[:0]
				}
				if i%100 == 0 {
					b.Endpoints()
				}
			}
			for _, h := range held {
				h.Done(time.Millisecond, Success)
			}
		})
	}
	picks.Wait()
	close(stop)
	wg.Wait()
	for _, s := range b.Endpoints() {
		if s.InFlight != 0 {
			t.Errorf("%s: %d in flight after every request ended", s.Endpoint, s.InFlight)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"round-robin", Config{Mode: RoundRobin}, true},
		{"unknown mode", Config{Mode: 7}, false},
		{"negative decay", Config{Decay: -time.Second}, false},
		{"weight above 1", Config{WarmUpMinWeight: 1.5}, false},
		{"negative weight", Config{WarmUpMinWeight: -0.1}, false},
		{"NaN weight", Config{WarmUpMinWeight: math.NaN()}, false},
		{"penalty below 1", Config{FailurePenalty: 0.5}, false},
		{"infinite penalty", Config{FailurePenalty: math.Inf(1)}, false},
		{"penalty 1", Config{FailurePenalty: 1}, true},
		{"bad outlier config", Config{Outlier: outlier.Config{FailureRate: 2}}, false},
		{"no ejection", Config{Outlier: outlier.Config{ConsecutiveFailures: -1, FailureRate: -1}}, true},
	}
	for _, tt := range tests {
		_, err := New[string](tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: New: %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	if PeakEWMA.String() != "peak-ewma" || RoundRobin.String() != "round-robin" || Mode(9).String() != "mode(9)" {
		t.Error("Mode.String")
	}
}
