package egress

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeResolver answers from a map it can change, and counts lookups. It
// behaves as a stub resolver whose search domain holds a wildcard record
// (ndots:5, as in Kubernetes): a name asked without a trailing dot is
// tried in the search domain first, and the wildcard answers it with
// searchAddr. While gate is not nil, lookups wait for it to close.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	lookups map[string]int
	gate    chan struct{}
}

const searchAddr = "10.96.0.99"

func (f *fakeResolver) LookupNetIP(ctx context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	name, rooted := strings.CutSuffix(host, ".")
	f.lookups[name]++
	gate := f.gate
	a, ok := f.answers[name]
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if !rooted {
		return []netip.Addr{netip.MustParseAddr(searchAddr)}, nil
	}
	if !ok {
		return nil, errors.New("no such host")
	}
	return a, nil
}

func (f *fakeResolver) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[host] = nil
	for _, a := range addrs {
		f.answers[host] = append(f.answers[host], netip.MustParseAddr(a))
	}
}

func (f *fakeResolver) count(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups[host]
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFake() (*fakeResolver, *fakeClock) {
	return &fakeResolver{answers: map[string][]netip.Addr{}, lookups: map[string]int{}}, &fakeClock{t: time.Unix(1e9, 0)}
}
func ip(s string) netip.Addr { return netip.MustParseAddr(s) }
func resolves(p *Pinner, name, addr string) error {
	return p.Resolves(context.Background(), name, ip(addr))
}

func TestPinner(t *testing.T) {
	r, clock := newFake()
	r.set("api.example.com", "203.0.113.10", "2001:db8::10")
	p := NewPinner(PinnerConfig{Resolver: r, TTL: 30 * time.Second, Refresh: time.Second, Now: clock.now})

	// The name's addresses pass, IPv4-mapped too; one lookup serves them.
	for _, a := range []string{"203.0.113.10", "2001:db8::10", "::ffff:203.0.113.10"} {
		if err := resolves(p, "api.example.com", a); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	if n := r.count("api.example.com"); n != 1 {
		t.Errorf("%d lookups, want 1", n)
	}
	// A forged name on another address is refused, and within Refresh
	// does not cause another lookup.
	for range 3 {
		if err := resolves(p, "api.example.com", "198.51.100.1"); !errors.Is(err, ErrNotPinned) {
			t.Errorf("other address: %v, want ErrNotPinned", err)
		}
	}
	if n := r.count("api.example.com"); n != 1 {
		t.Errorf("%d lookups, want 1: a miss within Refresh of a lookup looks up nothing", n)
	}
	// DNS rotates: past Refresh, a miss looks the name up again, and the
	// addresses seen before still pass until the TTL.
	r.set("api.example.com", "203.0.113.11")
	clock.add(2 * time.Second)
	if err := resolves(p, "api.example.com", "203.0.113.11"); err != nil {
		t.Errorf("rotated address: %v", err)
	}
	if err := resolves(p, "api.example.com", "203.0.113.10"); err != nil {
		t.Errorf("earlier address within the TTL: %v", err)
	}
	if n := r.count("api.example.com"); n != 2 {
		t.Errorf("%d lookups, want 2 (one refresh)", n)
	}
	// Past the TTL only the current answer counts.
	clock.add(31 * time.Second)
	if err := resolves(p, "api.example.com", "203.0.113.10"); !errors.Is(err, ErrNotPinned) {
		t.Errorf("earlier address past the TTL: %v, want ErrNotPinned", err)
	}
	// A name that does not resolve is refused with the lookup's error.
	if err := resolves(p, "missing.example.com", "203.0.113.10"); err == nil || errors.Is(err, ErrNotPinned) {
		t.Errorf("unresolvable name: %v, want the lookup error", err)
	}
}

// TestPinnerFullyQualified checks that names are looked up with a
// trailing dot: a wildcard record in a search domain must not pin its
// address to every allowed name.
func TestPinnerFullyQualified(t *testing.T) {
	r, clock := newFake()
	r.set("api.example.com", "203.0.113.10")
	p := NewPinner(PinnerConfig{Resolver: r, Now: clock.now})
	if err := resolves(p, "api.example.com", searchAddr); !errors.Is(err, ErrNotPinned) {
		t.Errorf("the search domain's wildcard address: %v, want ErrNotPinned", err)
	}
	if err := resolves(p, "api.example.com", "203.0.113.10"); err != nil {
		t.Errorf("the name's own address: %v", err)
	}
	if err := resolves(p, "missing.example.com", searchAddr); err == nil {
		t.Error("a name that does not resolve was pinned to the search domain's wildcard address")
	}
}

// TestPinnerReserved checks that no name is pinned to a loopback,
// link-local, unspecified, broadcast or multicast address, whatever it
// resolves to, and that the refusal costs no lookup.
func TestPinnerReserved(t *testing.T) {
	reserved := []string{"127.0.0.1", "127.1.2.3", "::1", "169.254.169.254", "fe80::1", "0.0.0.0", "0.1.2.3", "::",
		"255.255.255.255", "224.0.0.1", "239.1.2.3", "ff02::1", "ff05::2", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1"}
	r, clock := newFake()
	r.set("metadata.example.com", reserved...)
	p := NewPinner(PinnerConfig{Resolver: r, Now: clock.now})
	for _, a := range reserved {
		if !Reserved(ip(a)) {
			t.Errorf("Reserved(%s) = false", a)
		}
		if err := resolves(p, "metadata.example.com", a); !errors.Is(err, ErrReservedAddr) {
			t.Errorf("%s: %v, want ErrReservedAddr", a, err)
		}
	}
	if n := r.count("metadata.example.com"); n != 0 {
		t.Errorf("%d lookups, want none", n)
	}
	for _, a := range []string{"10.0.0.1", "203.0.113.10", "2001:db8::1", "fd00:ec2::254", "64:ff9b::cb00:710a", "100.64.0.1"} {
		if Reserved(ip(a)) {
			t.Errorf("Reserved(%s) = true", a)
		}
	}
}

// TestPinnerOneLookup checks that connections needing the same name at
// once share one lookup.
func TestPinnerOneLookup(t *testing.T) {
	r, _ := newFake()
	r.set("api.example.com", "203.0.113.10")
	r.gate = make(chan struct{})
	p := NewPinner(PinnerConfig{Resolver: r})
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		addr := "203.0.113.10"
		if i%2 == 1 {
			addr = "198.51.100.1"
		}
		go func() { errs <- resolves(p, "api.example.com", addr) }()
	}
	// Every caller is either looking the name up or waiting for a lookup.
	deadline := time.Now().Add(10 * time.Second)
	for r.count("api.example.com")+p.waiting("api.example.com") < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d lookups and %d waiting, want %d in all", r.count("api.example.com"), p.waiting("api.example.com"), n)
		}
		time.Sleep(time.Millisecond)
	}
	close(r.gate)
	var ok, refused int
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrNotPinned):
			refused++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != n/2 || refused != n/2 {
		t.Errorf("%d passed and %d refused, want %d each", ok, refused, n/2)
	}
	if got := r.count("api.example.com"); got != 1 {
		t.Errorf("%d lookups for %d concurrent connections, want 1", got, n)
	}
}

// TestPinnerWaiterGivesUp checks that a caller waiting for another's
// lookup returns when its own context ends, refused.
func TestPinnerWaiterGivesUp(t *testing.T) {
	r, _ := newFake()
	r.set("api.example.com", "203.0.113.10")
	r.gate = make(chan struct{})
	defer close(r.gate)
	p := NewPinner(PinnerConfig{Resolver: r, Timeout: time.Minute})
	go resolves(p, "api.example.com", "203.0.113.10") //nolint:errcheck // the lookup the waiter waits for
	deadline := time.Now().Add(10 * time.Second)
	for r.count("api.example.com") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no lookup started")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Resolves(ctx, "api.example.com", ip("203.0.113.10")); !errors.Is(err, context.Canceled) {
		t.Errorf("waiter with an ended context: %v, want context.Canceled", err)
	}
}

// waiting returns how many callers wait for a lookup of name.
func (p *Pinner) waiting(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.flights[name]; f != nil {
		return f.waiters
	}
	return 0
}

func TestPinnerBounded(t *testing.T) {
	r, clock := newFake()
	p := NewPinner(PinnerConfig{Resolver: r, MaxNames: 10, Now: clock.now})
	for i := range 100 {
		name := "h" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".example.com"
		r.set(name, "203.0.113.1")
		if err := resolves(p, name, "203.0.113.1"); err != nil {
			t.Fatal(err)
		}
		if p.Len() > 10 {
			t.Fatalf("%d names kept, want at most 10", p.Len())
		}
	}
}

func TestHosts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("# test names\n10.0.0.5 API.example.com. api2.example.com\n\n2001:db8::5 api.example.com # both families\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := LoadHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	// As the Pinner asks, fully qualified, and without the dot.
	for _, name := range []string{"api.example.com.", "api.example.com"} {
		got, err := h.LookupNetIP(context.Background(), "ip", name)
		if err != nil || len(got) != 2 || got[0] != ip("10.0.0.5") || got[1] != ip("2001:db8::5") {
			t.Errorf("lookup of %q = %v, %v", name, got, err)
		}
	}
	if _, err := h.LookupNetIP(context.Background(), "ip", "other.example.com"); err == nil {
		t.Error("a name not in the file resolved without a fallback")
	}
	r, _ := newFake()
	r.set("other.example.com", "10.0.0.9")
	h.Fallback = r
	if got, err := h.LookupNetIP(context.Background(), "ip", "other.example.com."); err != nil || len(got) != 1 {
		t.Errorf("fallback lookup = %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.5\n", "not-an-ip a.example.com\n", "10.0.0.5 bad_name!\n"} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadHosts(path); err == nil {
			t.Errorf("LoadHosts accepted %q", bad)
		}
	}
}
