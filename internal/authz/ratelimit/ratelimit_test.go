package ratelimit

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/authz"
)

const (
	idA = "spiffe://rampart.test/ns/shop/sa/a"
	idB = "spiffe://rampart.test/ns/shop/sa/b"
)

// clock is a fake clock tests move by hand.
type clock struct{ ns atomic.Int64 }

var epoch = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func (c *clock) Now() time.Time          { return epoch.Add(time.Duration(c.ns.Load())) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func req(id, path string) *authz.Request {
	return &authz.Request{
		Source: id, Authenticated: id != "", SourceIP: netip.MustParseAddr("10.0.0.1"),
		Port: 8080, Protocol: authz.ProtocolHTTP, Method: "GET", Path: path, Host: "orders.shop",
	}
}

func fromIP(ip string) *authz.Request {
	r := req("", "/")
	r.SourceIP = netip.MustParseAddr(ip)
	return r
}

func newLimiter(t testing.TB, c *clock, maxKeys int, limits ...authz.RateLimit) *Limiter {
	t.Helper()
	l, err := New(limits, Options{Now: c.Now, MaxKeys: maxKeys})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

func mkLimit(name string, per authz.RateLimitKey, rps, burst uint32) authz.RateLimit {
	return authz.RateLimit{Policy: "shop/rl", Name: name, Per: per, RequestsPerSecond: rps, Burst: burst}
}

// allowed counts how many of n requests r the limiter allows now.
func allowed(l *Limiter, r *authz.Request, n int) int {
	k := 0
	for range n {
		if l.Allow(r).Allowed {
			k++
		}
	}
	return k
}

func TestTokenBucket(t *testing.T) {
	c := &clock{}
	l := newLimiter(t, c, 0, mkLimit("overall", authz.PerOverall, 10, 5))
	r := req(idA, "/")
	if n := allowed(l, r, 20); n != 5 {
		t.Fatalf("burst: %d allowed, want 5", n)
	}
	res := l.Allow(r)
	if res.Allowed || res.Limit != "shop/rl/overall" || res.CoolingDown || res.RetryAfter != 100*time.Millisecond {
		t.Errorf("over the limit: %+v", res)
	}
	c.Advance(100 * time.Millisecond)
	if n := allowed(l, r, 5); n != 1 {
		t.Errorf("after 100ms at 10/s: %d allowed, want 1", n)
	}
	c.Advance(250 * time.Millisecond)
	if n := allowed(l, r, 5); n != 2 {
		t.Errorf("after 250ms at 10/s: %d allowed, want 2", n)
	}
	c.Advance(time.Hour)
	if n := allowed(l, r, 20); n != 5 {
		t.Errorf("after an hour: %d allowed, want the burst of 5", n)
	}
	// Steady traffic at the rate is always allowed.
	for i := range 100 {
		c.Advance(100 * time.Millisecond)
		if !l.Allow(r).Allowed {
			t.Fatalf("steady request %d refused", i)
		}
	}
}

func TestPerSource(t *testing.T) {
	c := &clock{}
	l := newLimiter(t, c, 0, mkLimit("per-source", authz.PerSource, 1, 3))
	if n := allowed(l, req(idA, "/"), 10); n != 3 {
		t.Errorf("a: %d allowed, want 3", n)
	}
	if n := allowed(l, req(idB, "/"), 10); n != 3 {
		t.Errorf("b is not affected by a: %d allowed, want 3", n)
	}
	// Plaintext sources are keyed by address.
	if n := allowed(l, fromIP("10.0.0.7"), 10); n != 3 {
		t.Errorf("10.0.0.7: %d allowed, want 3", n)
	}
	if n := allowed(l, fromIP("::ffff:10.0.0.7"), 10); n != 0 {
		t.Errorf("the same address, v4-mapped: %d allowed, want 0", n)
	}
	if n := allowed(l, fromIP("10.0.0.8"), 10); n != 3 {
		t.Errorf("10.0.0.8: %d allowed, want 3", n)
	}
	// A source set but not authenticated is keyed by address, not by the
	// identity it claims.
	r := req(idB, "/")
	r.Authenticated = false
	r.SourceIP = netip.MustParseAddr("10.0.0.9")
	if n := allowed(l, r, 10); n != 3 {
		t.Errorf("unauthenticated claim of b: %d allowed, want 3", n)
	}
	// An IPv6 source is keyed by its /64: a host that picks a new
	// address for each request gets no fresh bucket.
	if n := allowed(l, fromIP("2001:db8:1:2::1"), 2); n != 2 {
		t.Errorf("2001:db8:1:2::1: %d allowed, want 2", n)
	}
	if n := allowed(l, fromIP("2001:db8:1:2:ffff::9"), 10); n != 1 {
		t.Errorf("another address of the same /64: %d allowed, want the 1 token left", n)
	}
	if n := allowed(l, fromIP("2001:db8:1:3::1"), 10); n != 3 {
		t.Errorf("another /64: %d allowed, want 3", n)
	}
	if l.Keys("shop/rl/per-source") != 7 {
		t.Errorf("keys = %d, want 7", l.Keys("shop/rl/per-source"))
	}
}

func TestPerRoute(t *testing.T) {
	c := &clock{}
	rl := mkLimit("per-route", authz.PerRoute, 1, 2)
	rl.To = []authz.Operation{{Paths: []string{"/login"}}, {Paths: []string{"/api/**"}}}
	l := newLimiter(t, c, 0, rl)
	if n := allowed(l, req(idA, "/login"), 5); n != 2 {
		t.Errorf("/login: %d allowed, want 2", n)
	}
	if n := allowed(l, req(idB, "/login"), 5); n != 0 {
		t.Errorf("/login from b shares the route's bucket: %d allowed, want 0", n)
	}
	if n := allowed(l, req(idA, "/api/x"), 5); n != 2 {
		t.Errorf("/api/x: %d allowed, want 2", n)
	}
	if n := allowed(l, req(idA, "/other"), 5); n != 5 {
		t.Errorf("/other is not limited: %d allowed, want 5", n)
	}
}

func TestSeveralLimits(t *testing.T) {
	c := &clock{}
	login := mkLimit("login", authz.PerSource, 1, 1)
	login.To = []authz.Operation{{Paths: []string{"/login"}}}
	l := newLimiter(t, c, 0, login, mkLimit("overall", authz.PerOverall, 1, 3))
	if !l.Allow(req(idA, "/login")).Allowed {
		t.Fatal("first login refused")
	}
	if res := l.Allow(req(idA, "/login")); res.Allowed || res.Limit != "shop/rl/login" {
		t.Errorf("second login: %+v", res)
	}
	if n := allowed(l, req(idB, "/"), 5); n != 2 {
		t.Errorf("overall after one login: %d allowed, want 2", n)
	}
	if res := l.Allow(req(idB, "/login")); res.Allowed || res.Limit != "shop/rl/overall" {
		t.Errorf("b's login over the overall limit: %+v", res)
	}
}

func TestCoolDown(t *testing.T) {
	c := &clock{}
	rl := mkLimit("cool", authz.PerSource, 2, 2)
	rl.CoolDown, rl.CoolDownAfter = 30*time.Second, 3
	l := newLimiter(t, c, 0, rl)
	a, b := req(idA, "/"), req(idB, "/")

	// Exceeding in two consecutive windows, then a quiet window, resets
	// the streak.
	allowed(l, a, 5)
	c.Advance(time.Second)
	allowed(l, a, 5)
	c.Advance(2 * time.Second)
	if n := allowed(l, a, 5); n != 2 {
		t.Fatalf("after a gap: %d allowed, want 2", n)
	}
	// Three windows in a row: cut off.
	c.Advance(time.Second)
	allowed(l, a, 5)
	c.Advance(time.Second)
	allowed(l, a, 2)
	res := l.Allow(a)
	if res.Allowed || !res.CoolingDown || res.RetryAfter != 30*time.Second {
		t.Fatalf("third window: %+v, want a cool-down", res)
	}
	// During the cool-down everything is refused, even at a slow rate;
	// b is not affected.
	for range 5 {
		c.Advance(5 * time.Second)
		if res := l.Allow(a); res.Allowed || !res.CoolingDown {
			t.Fatalf("during cool-down: %+v", res)
		}
		if !l.Allow(b).Allowed {
			t.Fatal("b refused during a's cool-down")
		}
	}
	c.Advance(5 * time.Second)
	if n := allowed(l, a, 5); n != 2 {
		t.Errorf("after the cool-down: %d allowed, want the burst of 2", n)
	}
}

func TestCoolDownAfterOneWindow(t *testing.T) {
	c := &clock{}
	rl := mkLimit("cool", authz.PerSource, 1, 1)
	rl.CoolDown, rl.CoolDownAfter = time.Minute, 1
	l := newLimiter(t, c, 0, rl)
	l.Allow(req(idA, "/"))
	if res := l.Allow(req(idA, "/")); !res.CoolingDown {
		t.Errorf("first refusal: %+v, want a cool-down", res)
	}
}

func TestMaxKeys(t *testing.T) {
	c := &clock{}
	l := newLimiter(t, c, 64, mkLimit("src", authz.PerSource, 1, 1))
	for i := range 10000 {
		l.Allow(req("spiffe://rampart.test/ns/n/sa/s"+itoa(i), "/"))
	}
	if n := l.Keys("shop/rl/src"); n > 64 || n < 16 {
		t.Errorf("%d keys after 10000 sources, want at most 64", n)
	}
	// A source in constant use stays tracked while others come and go.
	hot := req(idA, "/")
	l.Allow(hot)
	for i := range 1000 {
		l.Allow(req("spiffe://rampart.test/ns/m/sa/s"+itoa(i), "/"))
		if l.Allow(hot).Allowed {
			t.Fatalf("the hot source got a fresh bucket after %d new sources: it was evicted", i)
		}
	}
}

func TestReconfigureKeepsBuckets(t *testing.T) {
	c := &clock{}
	l := newLimiter(t, c, 0, mkLimit("src", authz.PerSource, 1, 2), mkLimit("all", authz.PerOverall, 1, 2))
	allowed(l, req(idA, "/"), 2)
	l2, err := l.Reconfigure([]authz.RateLimit{mkLimit("src", authz.PerSource, 1, 2), mkLimit("all", authz.PerOverall, 5, 2), mkLimit("new", authz.PerOverall, 1, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if res := l2.Allow(req(idA, "/")); res.Allowed {
		t.Errorf("a got a fresh burst after reconfiguration")
	}
	if res := l2.Allow(req(idB, "/")); res.Allowed || res.Limit != "shop/rl/all" {
		t.Errorf("overall limit lost its state: %+v", res)
	}
	// A limit whose keying changes starts afresh.
	l3, err := l2.Reconfigure([]authz.RateLimit{mkLimit("src", authz.PerOverall, 1, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if !l3.Allow(req(idA, "/")).Allowed {
		t.Errorf("rekeyed limit kept the per-source state")
	}
}

func TestNewErrors(t *testing.T) {
	bad := mkLimit("x", authz.PerRoute, 1, 1)
	_, err := New([]authz.RateLimit{mkLimit("ok", authz.PerOverall, 1, 1), bad, mkLimit("ok", authz.PerOverall, 1, 1)}, Options{})
	var fes authz.FieldErrors
	if !errors.As(err, &fes) || len(fes) != 2 {
		t.Fatalf("New: %v", err)
	}
	if !strings.HasPrefix(fes[0].Error(), "[1].to: per route needs routes") || !strings.HasPrefix(fes[1].Error(), "[2].name: duplicate limit shop/rl/ok") {
		t.Errorf("New: %v", err)
	}
}

func TestNilAndEmpty(t *testing.T) {
	var l *Limiter
	if !l.Allow(req(idA, "/")).Allowed {
		t.Error("nil Limiter refused")
	}
	l, err := New(nil, Options{})
	if err != nil || !l.Allow(req(idA, "/")).Allowed {
		t.Errorf("empty Limiter: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	c := &clock{}
	l := newLimiter(t, c, 100, mkLimit("src", authz.PerSource, 1000, 100), mkLimit("all", authz.PerOverall, 1000, 1000))
	var wg sync.WaitGroup
	var total atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				r := req("spiffe://rampart.test/ns/n/sa/s"+itoa((g*7+i)%300), "/")
				if l.Allow(r).Allowed {
					total.Add(1)
				}
				if i%100 == 0 {
					c.Advance(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	// The overall bucket holds 1000 and refills 1 per ms; 160 ms passed.
	if n := total.Load(); n > 1000+160+8 {
		t.Errorf("%d allowed, more than the overall limit lets through", n)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	c := &clock{}
	route := mkLimit("route", authz.PerRoute, 1e6, 1e6)
	route.To = []authz.Operation{{Paths: []string{"/api/**"}}}
	l := newLimiter(t, c, 0, mkLimit("src", authz.PerSource, 1e6, 1e6), mkLimit("all", authz.PerOverall, 1e6, 1e6), route)
	for _, r := range []*authz.Request{req(idA, "/api/x"), fromIP("10.9.9.9")} {
		l.Allow(r) // first sight of the source allocates its bucket
		if n := testing.AllocsPerRun(100, func() { l.Allow(r) }); n != 0 {
			t.Errorf("Allow allocates %v times for a known source", n)
		}
	}
}

func BenchmarkAllowPerSource(b *testing.B) {
	l, _ := New([]authz.RateLimit{mkLimit("src", authz.PerSource, 1e6, 1e6)}, Options{})
	r := req(idA, "/")
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(r)
	}
}

func BenchmarkAllowOverall(b *testing.B) {
	l, _ := New([]authz.RateLimit{mkLimit("all", authz.PerOverall, 1e6, 1e6)}, Options{})
	r := req(idA, "/")
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(r)
	}
}

func BenchmarkAllowPerSourceParallel(b *testing.B) {
	l, _ := New([]authz.RateLimit{mkLimit("src", authz.PerSource, 1e6, 1e6)}, Options{})
	ids := make([]*authz.Request, 64)
	for i := range ids {
		ids[i] = req("spiffe://rampart.test/ns/n/sa/s"+itoa(i), "/")
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(ids[i%len(ids)])
			i++
		}
	})
}
