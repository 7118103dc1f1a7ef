package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// Resolver looks a name up; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// PinnerConfig configures a Pinner. The zero value is usable.
type PinnerConfig struct {
	// Resolver looks names up; nil is net.DefaultResolver.
	Resolver Resolver
	// TTL is how long an answer is kept; default 30s.
	TTL time.Duration
	// Refresh is how soon a name may be looked up again when the address
	// a connection goes to is not among its kept answer (DNS answers
	// rotate); default 1s.
	Refresh time.Duration
	// MaxNames bounds the names kept; default 1024. Past it, expired
	// answers are dropped, then any.
	MaxNames int
	// Timeout bounds one lookup; default 2s.
	Timeout time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Pinner tells whether a name resolves to an address, from the proxy's
// own lookups, so that a connection whose TLS server name or HTTP host is
// admitted reaches only an address of that name: an app that names an
// allowed host but dials another address is refused. Names are looked up
// fully qualified (with a trailing dot), so that no search domain of the
// resolver's configuration applies: a wildcard record in a search domain
// would otherwise answer for every name. One lookup per name is in flight
// at a time; the connections that need it meanwhile wait for its answer.
// It is safe for concurrent use.
type Pinner struct {
	cfg PinnerConfig

	mu      sync.Mutex
	entries map[string]*pinEntry
	flights map[string]*flight // lookups in progress, by name
}

type pinEntry struct {
	addrs   map[netip.Addr]bool // every address seen within the TTL
	expires time.Time
	looked  time.Time // the last lookup
	err     error     // of the last lookup, when it found nothing
}

// flight is a lookup in progress; done is closed when its answer is kept.
type flight struct {
	done    chan struct{}
	waiters int // callers waiting for it, besides the one looking up
}

// NewPinner returns a Pinner with cfg's defaults filled.
func NewPinner(cfg PinnerConfig) *Pinner {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Second
	}
	if cfg.MaxNames <= 0 {
		cfg.MaxNames = 1024
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Pinner{cfg: cfg, entries: make(map[string]*pinEntry), flights: make(map[string]*flight)}
}

// ErrNotPinned is the error of Resolves when name does not resolve to the
// address.
var ErrNotPinned = errors.New("egress: the destination address is not one the name resolves to")

// ErrReservedAddr is the error of Resolves for an address no host rule
// may pin a name to: see Reserved.
var ErrReservedAddr = errors.New("egress: a host rule never admits loopback, link-local, unspecified, broadcast or multicast addresses; list the address in a rule's cidrs to admit it")

// Reserved reports whether a is an address that a name from DNS must not
// admit a connection to: loopback, link-local (169.254.169.254 is the
// metadata service of most clouds), unspecified or "this network"
// (0.0.0.0/8), broadcast, multicast, or one of these inside the NAT64
// prefix 64:ff9b::/96. Whoever controls a zone a wildcard rule admits
// could otherwise point a name there.
func Reserved(a netip.Addr) bool {
	a = a.Unmap()
	if a.Is6() && nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		a.Is4() && (thisNetwork.Contains(a) || a == broadcast)
}

var (
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	broadcast   = netip.AddrFrom4([4]byte{255, 255, 255, 255})
)

// Resolves returns nil when name (canonical: lower case, no trailing dot)
// resolves to addr: from the kept answer, or from a new lookup when none
// is kept, the kept one expired, or it lacks addr and was looked up more
// than Refresh ago. It returns ErrNotPinned, the lookup's error, or ctx's
// when it ends first, otherwise (fail closed). Addresses seen for a name
// accumulate until its TTL passes, so that rotating DNS answers do not
// refuse connections made with an earlier one. A Reserved address is
// refused with ErrReservedAddr, without a lookup.
func (p *Pinner) Resolves(ctx context.Context, name string, addr netip.Addr) error {
	addr = addr.Unmap()
	if Reserved(addr) {
		return ErrReservedAddr
	}
	now := p.cfg.Now()
	p.mu.Lock()
	e := p.entries[name]
	if e != nil && now.Before(e.expires) && (e.addrs[addr] || now.Sub(e.looked) < p.cfg.Refresh) {
		err := decide(e, addr)
		p.mu.Unlock()
		return err
	}
	if f := p.flights[name]; f != nil {
		// Another connection is looking the name up: take its answer.
		f.waiters++
		p.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("egress: resolving %s: %w", name, ctx.Err())
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return decide(p.entries[name], addr)
	}
	f := &flight{done: make(chan struct{})}
	p.flights[name] = f
	p.mu.Unlock()

	// The lookup serves every connection waiting for it, so the first
	// one's end does not cut it short; Timeout bounds it.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
	defer cancel()
	addrs, err := p.cfg.Resolver.LookupNetIP(lctx, "ip", name+".")

	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.flights, name)
	close(f.done)
	e = p.entries[name]
	if e == nil || !now.Before(e.expires) {
		if e == nil {
			p.makeRoomLocked(now)
		}
		e = &pinEntry{addrs: make(map[netip.Addr]bool)}
		p.entries[name] = e
		e.expires = now.Add(p.cfg.TTL)
	}
	e.looked = now
	e.err = nil
	for _, a := range addrs {
		e.addrs[a.Unmap()] = true
	}
	if err != nil && len(e.addrs) == 0 {
		e.err = fmt.Errorf("egress: resolving %s: %w", name, err)
	}
	return decide(e, addr)
}

// decide answers Resolves from a kept entry; nil (dropped to make room)
// refuses.
func decide(e *pinEntry, addr netip.Addr) error {
	switch {
	case e == nil:
		return ErrNotPinned
	case e.addrs[addr]:
		return nil
	case e.err != nil:
		return e.err
	}
	return ErrNotPinned
}

// makeRoomLocked drops entries until one more fits: expired ones first,
// then any.
func (p *Pinner) makeRoomLocked(now time.Time) {
	if len(p.entries) < p.cfg.MaxNames {
		return
	}
	for k, e := range p.entries {
		if !now.Before(e.expires) {
			delete(p.entries, k)
		}
	}
	for k := range p.entries {
		if len(p.entries) < p.cfg.MaxNames {
			return
		}
		delete(p.entries, k)
	}
}

// Len returns how many names are kept.
func (p *Pinner) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// Hosts is a Resolver that answers the names of a hosts file ("address
// name [name...]" lines, "#" comments) and hands every other name to
// Fallback (nil: those names do not resolve). It is the proxy's
// --egress-hosts-file: for tests, and for proxies that cannot reach DNS.
type Hosts struct {
	names    map[string][]netip.Addr
	Fallback Resolver
}

// LoadHosts reads a hosts file.
func LoadHosts(path string) (*Hosts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("egress: hosts file: %w", err)
	}
	defer f.Close()
	h := &Hosts{names: make(map[string][]netip.Addr)}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 2 {
			return nil, fmt.Errorf("egress: hosts file %s:%d: want an address and at least one name", path, n)
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil {
			return nil, fmt.Errorf("egress: hosts file %s:%d: %w", path, n, err)
		}
		for _, name := range fields[1:] {
			name = strings.ToLower(strings.TrimSuffix(name, "."))
			if !validName(name) {
				return nil, fmt.Errorf("egress: hosts file %s:%d: %q is not a DNS name", path, n, name)
			}
			h.names[name] = append(h.names[name], a.Unmap())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("egress: hosts file %s: %w", path, err)
	}
	return h, nil
}

// LookupNetIP answers from the file, else from Fallback. host may be
// fully qualified (a trailing dot), as the Pinner asks.
func (h *Hosts) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, ok := h.names[strings.ToLower(strings.TrimSuffix(host, "."))]; ok {
		return a, nil
	}
	if h.Fallback == nil {
		return nil, &net.DNSError{Err: "not in the hosts file", Name: host, IsNotFound: true}
	}
	return h.Fallback.LookupNetIP(ctx, network, host)
}
