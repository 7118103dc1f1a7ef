package egress

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeResolver answers from a map it can change, and counts lookups.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	lookups map[string]int
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups[host]++
	a, ok := f.answers[host]
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
	got, err := h.LookupNetIP(context.Background(), "ip", "api.example.com")
	if err != nil || len(got) != 2 || got[0] != ip("10.0.0.5") || got[1] != ip("2001:db8::5") {
		t.Errorf("lookup = %v, %v", got, err)
	}
	if _, err := h.LookupNetIP(context.Background(), "ip", "other.example.com"); err == nil {
		t.Error("a name not in the file resolved without a fallback")
	}
	r, _ := newFake()
	r.set("other.example.com", "10.0.0.9")
	h.Fallback = r
	if got, err := h.LookupNetIP(context.Background(), "ip", "other.example.com"); err != nil || len(got) != 1 {
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
