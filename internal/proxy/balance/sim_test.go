package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/balance/outlier"
)

// A deterministic simulation: requests arrive at random (a Poisson
// process) and each endpoint answers after its latency, jittered by ±20%.
// The clock is fake and moves from event to event; the same seed gives
// the same run.

// simClock is the simulation's clock.
type simClock struct{ ns int64 }

func (c *simClock) Now() time.Time { return epoch.Add(time.Duration(c.ns)) }

// completion is a request that ends at a time.
type completion struct {
	at   int64
	h    Handle[string]
	lat  time.Duration
	fail bool
}

// completions is a min-heap of completions by time.
type completions []completion

func (q *completions) push(c completion) {
	*q = append(*q, c)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			break
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (q *completions) pop() completion {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		m, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h[l].at < h[m].at {
			m = l
		}
		if r < len(h) && h[r].at < h[m].at {
			m = r
		}
		if m == i {
			break
		}
		h[m], h[i] = h[i], h[m]
		i = m
	}
	*q = h
	return top
}

// simEndpoint says how an endpoint answers: with its latency, and
// failing when fails says so at that time.
type simEndpoint struct {
	name    string
	latency func(at time.Duration) time.Duration
	fails   func(at time.Duration) bool
}

func fixed(d time.Duration) func(time.Duration) time.Duration {
	return func(time.Duration) time.Duration { return d }
}

// sim runs a balancer over endpoints with requests arriving at rate per
// second, and calls observe for every pick.
type sim struct {
	cfg       Config
	seed      uint64
	endpoints []simEndpoint
	rate      float64 // requests per second
	duration  time.Duration
	// changes, if set, is called before each arrival and may Update the
	// balancer; it returns the endpoints the simulation knows from then.
	changes func(at time.Duration, b *Balancer[string]) []simEndpoint
}

func (s sim) run(t testing.TB, observe func(at time.Duration, endpoint string)) {
	t.Helper()
	clock := &simClock{}
	rng := rand.New(rand.NewPCG(s.seed, 0x5eed))
	cfg := s.cfg
	cfg.Now = clock.Now
	cfg.Rand = rand.New(rand.NewPCG(s.seed, 0xba1)).Uint64
	b, err := New[string](cfg)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]simEndpoint{}
	setEndpoints := func(eps []simEndpoint) {
		names := make([]string, len(eps))
		for i, e := range eps {
			names[i] = e.name
			byName[e.name] = e
		}
		b.Update(names)
	}
	setEndpoints(s.endpoints)
	var q completions
	next := int64(0)
	end := int64(s.duration)
	for next < end {
		if len(q) > 0 && q[0].at <= next {
			c := q.pop()
			clock.ns = c.at
			o := Success
			if c.fail {
				o = Failure
			}
			c.h.Done(c.lat, o)
			continue
		}
		clock.ns = next
		at := time.Duration(next)
		if s.changes != nil {
			if eps := s.changes(at, b); eps != nil {
				setEndpoints(eps)
			}
		}
		h, ok := b.Pick()
		if !ok {
			t.Fatal("no endpoint to pick")
		}
		e := byName[h.Endpoint()]
		observe(at, e.name)
		lat := time.Duration(float64(e.latency(at)) * (0.8 + 0.4*rng.Float64()))
		fail := e.fails != nil && e.fails(at)
		q.push(completion{at: next + int64(lat), h: h, lat: lat, fail: fail})
		next += int64(rng.ExpFloat64() / s.rate * float64(time.Second))
	}
}

// shares runs the simulation and returns each endpoint's share of the
// picks made from `from` on.
func (s sim) shares(t testing.TB, from time.Duration) map[string]float64 {
	counts := map[string]int{}
	total := 0
	s.run(t, func(at time.Duration, e string) {
		if at >= from {
			counts[e]++
			total++
		}
	})
	out := map[string]float64{}
	for e, n := range counts {
		out[e] = float64(n) / float64(total)
	}
	return out
}

// withSlow returns n endpoints answering in 10ms but the first, which
// answers in 100ms.
func withSlow(n int) []simEndpoint {
	eps := make([]simEndpoint, n)
	for i := range eps {
		eps[i] = simEndpoint{name: fmt.Sprintf("ep%d", i), latency: fixed(10 * time.Millisecond)}
	}
	eps[0].latency = fixed(100 * time.Millisecond)
	return eps
}

var seeds = []uint64{1, 2, 3, 4, 5}

// TestSlowEndpointGetsLessTraffic: one endpoint 10x slower than the others
// gets less than a third of its fair share, at light, medium and heavy
// load, with 3 and with 10 endpoints, whatever the seed. Round-robin, for
// comparison, gives it its fair share.
func TestSlowEndpointGetsLessTraffic(t *testing.T) {
	for _, n := range []int{3, 10} {
		for _, load := range []struct {
			name     string
			perEp    float64       // requests per second per endpoint
			duration time.Duration // measured after the first fifth
		}{
			{"light", 5, 60 * time.Second},
			{"medium", 100, 20 * time.Second},
			{"heavy", 1000, 5 * time.Second},
		} {
			t.Run(fmt.Sprintf("%d endpoints/%s", n, load.name), func(t *testing.T) {
				fair := 1 / float64(n)
				worst := 0.0
				for _, seed := range seeds {
					s := sim{seed: seed, endpoints: withSlow(n), rate: load.perEp * float64(n), duration: load.duration}
					share := s.shares(t, load.duration/5)["ep0"]
					worst = max(worst, share)
					if share > fair/3 {
						t.Errorf("seed %d: the slow endpoint got %.2f%% of requests, fair share %.2f%%, bound a third of it", seed, 100*share, 100*fair)
					}
				}
				t.Logf("slow endpoint: at most %.2f%% of requests (%.3f of its fair share)", 100*worst, worst/fair)

				s := sim{cfg: Config{Mode: RoundRobin}, seed: 1, endpoints: withSlow(n), rate: load.perEp * float64(n), duration: load.duration}
				if share := s.shares(t, 0)["ep0"]; math.Abs(share-fair) > 0.01 {
					t.Errorf("round-robin gave the slow endpoint %.2f%%, want its fair share %.2f%%", 100*share, 100*fair)
				}
			})
		}
	}
}

// TestSlowEndpointRecovers: an endpoint slow for a minute that becomes as
// fast as the others gets its fair share back: its estimate decays while
// it gets no answers, so it is tried again. (Under heavy load, requests in
// flight push traffic to it anyway.)
func TestSlowEndpointRecovers(t *testing.T) {
	for _, load := range []struct {
		name  string
		perEp float64
	}{{"light", 5}, {"medium", 100}} {
		t.Run(load.name, func(t *testing.T) {
			for _, seed := range seeds {
				eps := withSlow(3)
				eps[0].latency = func(at time.Duration) time.Duration {
					if at < time.Minute {
						return 100 * time.Millisecond
					}
					return 10 * time.Millisecond
				}
				s := sim{seed: seed, endpoints: eps, rate: 3 * load.perEp, duration: 3 * time.Minute}
				counts := map[bool]int{}
				total := map[bool]int{}
				s.run(t, func(at time.Duration, e string) {
					late := at >= 2*time.Minute
					if at >= 80*time.Second && at < 100*time.Second || late {
						total[late]++
						if e == "ep0" {
							counts[late]++
						}
					}
				})
				early := float64(counts[false]) / float64(total[false])
				late := float64(counts[true]) / float64(total[true])
				t.Logf("seed %d: share 20-40s after recovery %.1f%%, 60-120s after %.1f%%", seed, 100*early, 100*late)
				if late < 0.8/3 {
					t.Errorf("seed %d: a minute after recovering, the endpoint gets %.1f%% of requests, want its fair share (33%%)", seed, 100*late)
				}
			}
		})
	}
}

// TestWarmUp: an endpoint added to a busy service takes traffic gradually
// over the warm-up, then its fair share.
func TestWarmUp(t *testing.T) {
	for _, load := range []struct {
		name  string
		perEp float64
	}{{"medium", 100}, {"heavy", 400}} {
		t.Run(load.name, func(t *testing.T) {
			for _, seed := range seeds {
				eps := withSlow(3)
				eps[0].latency = fixed(10 * time.Millisecond)
				added := false
				s := sim{seed: seed, endpoints: eps, rate: 4 * load.perEp, duration: 30 * time.Second,
					changes: func(at time.Duration, b *Balancer[string]) []simEndpoint {
						if added || at < 5*time.Second {
							return nil
						}
						added = true
						return append(eps, simEndpoint{name: "new", latency: fixed(10 * time.Millisecond)})
					}}
				var first, second, after [2]int // [picks of new, all picks]
				s.run(t, func(at time.Duration, e string) {
					var c *[2]int
					switch {
					case at >= 5*time.Second && at < 7*time.Second:
						c = &first
					case at >= 10*time.Second && at < 15*time.Second:
						c = &second
					case at >= 20*time.Second:
						c = &after
					default:
						return
					}
					c[1]++
					if e == "new" {
						c[0]++
					}
				})
				share := func(c [2]int) float64 { return float64(c[0]) / float64(c[1]) }
				t.Logf("seed %d: new endpoint's share: first 2s %.1f%%, 5-10s %.1f%%, after warm-up %.1f%% (fair 25%%)", seed, 100*share(first), 100*share(second), 100*share(after))
				if share(first) > 0.5*0.25 {
					t.Errorf("seed %d: %.1f%% in the first 2s of warm-up, want under half its fair share", seed, 100*share(first))
				}
				if share(second) <= share(first) {
					t.Errorf("seed %d: share did not grow during warm-up: %.1f%% then %.1f%%", seed, 100*share(first), 100*share(second))
				}
				if share(after) < 0.8*0.25 {
					t.Errorf("seed %d: %.1f%% after warm-up, want about its fair share", seed, 100*share(after))
				}
			}
		})
	}
}

// TestFailingEndpoint: an endpoint that fails every request fast neither
// attracts traffic by answering fast nor keeps getting it: it is ejected,
// and tried again (one request, then warm-up) when the ejection ends.
func TestFailingEndpoint(t *testing.T) {
	for _, seed := range seeds {
		eps := withSlow(3)
		eps[0].latency = fixed(time.Millisecond)
		eps[0].fails = func(time.Duration) bool { return true }
		s := sim{seed: seed, endpoints: eps, rate: 300, duration: 3 * time.Minute}
		var picks []time.Duration
		total := 0
		s.run(t, func(at time.Duration, e string) {
			total++
			if e == "ep0" {
				picks = append(picks, at)
			}
		})
		// Ejected after 5 failures, for 30s, 60s, 90s: in 3 minutes it
		// is tried at its start and for a few seconds after each
		// ejection (one request at a time, then warming up).
		t.Logf("seed %d: the failing endpoint got %d of %d requests", seed, len(picks), total)
		if len(picks) > 4*5 {
			t.Errorf("seed %d: the failing endpoint got %d requests, want at most 5 per ejection", seed, len(picks))
		}
		for _, at := range picks {
			for _, back := range []time.Duration{0, 30 * time.Second, 90 * time.Second, 180 * time.Second} {
				if at >= back && at < back+5*time.Second {
					at = -1
				}
			}
			if at >= 0 {
				t.Errorf("seed %d: picked at %v, while ejected", seed, at)
			}
		}
	}
}

// TestFailingFastDoesNotAttract: without ejection, an endpoint that fails
// every request in 1ms, ten times faster than the others answer, would
// draw most of the traffic if failures counted as their latency (penalty
// 1); the failure penalty keeps it under a third of its fair share.
func TestFailingFastDoesNotAttract(t *testing.T) {
	noEjection := outlier.Config{ConsecutiveFailures: -1, FailureRate: -1}
	for _, seed := range seeds {
		eps := withSlow(3)
		eps[0].latency = fixed(time.Millisecond)
		eps[0].fails = func(time.Duration) bool { return true }
		s := sim{cfg: Config{Outlier: noEjection}, seed: seed, endpoints: eps, rate: 300, duration: 60 * time.Second}
		if share := s.shares(t, 5*time.Second)["ep0"]; share > 1.0/9 {
			t.Errorf("seed %d: the failing endpoint got %.1f%% of requests, want under 11.1%%", seed, 100*share)
		}
		s.cfg.FailurePenalty = 1
		if share := s.shares(t, 5*time.Second)["ep0"]; share < 1.0/3 {
			t.Errorf("seed %d, no penalty: the failing endpoint got %.1f%% of requests; the test shows nothing", seed, 100*share)
		}
	}
}
