// Package ratelimit enforces the rate limits of a workload's
// authorization policy (authz.RateLimit): token buckets per source
// identity, per route or overall, with a bounded number of keys, and a
// cool-down that cuts off a source that keeps exceeding its limit.
//
// The proxy links this package: like internal/authz, it must not depend
// on Kubernetes packages, on api/, or on any controller package.
package ratelimit

import (
	"errors"
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rampart-mesh/rampart/internal/authz"
)

// DefaultMaxKeys is the number of sources a per-source limit tracks when
// Options.MaxKeys is zero.
const DefaultMaxKeys = 10000

// window is the length of the windows in which a source counts as having
// exceeded its limit, for the cool-down.
const window = time.Second

// numShards is how many locks a per-source limit spreads its keys over.
const numShards = 16

// Options configure a Limiter. The zero value is usable.
type Options struct {
	// MaxKeys bounds the number of sources each per-source limit keeps a
	// bucket for (the keys are spread over 16 shards of MaxKeys/16, rounded
	// up, each); when a new source would overflow its shard, the source of
	// that shard idle the longest is forgotten. Zero means DefaultMaxKeys.
	MaxKeys int
	// Now is the clock; nil means time.Now. Buckets measure time with
	// Now().Sub, so the monotonic clock of time.Now keeps them right when
	// the wall clock jumps.
	Now func() time.Time
}

// Result is the outcome of Limiter.Allow.
type Result struct {
	// Allowed is false when a limit refused the request: answer 429 to
	// an HTTP request, close a TCP connection.
	Allowed bool
	// Limit names the limit that refused, "namespace/policy/limit".
	Limit string
	// CoolingDown is true when the source is cut off for a cool-down
	// rather than merely over its rate.
	CoolingDown bool
	// RetryAfter is how long until the limit would allow the request,
	// for a Retry-After header.
	RetryAfter time.Duration
}

// Limiter applies the rate limits of one workload. It is safe for
// concurrent use.
type Limiter struct {
	limits []*limit
	now    func() time.Time
	epoch  time.Time
}

// limit is one compiled authz.RateLimit with its buckets.
type limit struct {
	id       string // "namespace/policy/limit"
	spec     authz.RateLimit
	match    *authz.RateLimitMatcher
	interval int64 // nanoseconds per token
	burst    int64 // nanoseconds of credit a full bucket holds: interval*Burst
	state    *state
}

// state is a limit's buckets, shared between Limiters that Reconfigure
// hands it down to.
type state struct {
	// Per overall and per route: the theoretical arrival time of each
	// bucket (GCRA), in nanoseconds since the epoch.
	tats []atomic.Int64
	// Per source.
	sources *table
	// per and routes say which limits can share this state.
	per    authz.RateLimitKey
	routes int
}

// New compiles limits into a Limiter. The error is authz.FieldErrors, with
// fields named "[2].to[0].paths[1]" after the index of the limit.
func New(limits []authz.RateLimit, opts Options) (*Limiter, error) {
	return build(limits, opts, nil)
}

// Reconfigure returns a Limiter for new limits, which keeps the buckets of
// the limits that keep their identity (Policy and Name) and their keying
// (Per and, per route, the number of routes), so that pushing a new
// configuration does not give every source a fresh burst. l keeps working
// and shares those buckets with the new Limiter.
func (l *Limiter) Reconfigure(limits []authz.RateLimit) (*Limiter, error) {
	return build(limits, Options{MaxKeys: l.maxKeys(), Now: l.now}, l)
}

func (l *Limiter) maxKeys() int {
	for _, li := range l.limits {
		if li.state.sources != nil {
			return li.state.sources.maxKeys
		}
	}
	return 0
}

func build(limits []authz.RateLimit, opts Options, prev *Limiter) (*Limiter, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	l := &Limiter{now: opts.Now, epoch: opts.Now()}
	if prev != nil {
		l.epoch = prev.epoch
	}
	var errs authz.FieldErrors
	seen := map[string]bool{}
	for i := range limits {
		spec := limits[i]
		m, err := authz.CompileRateLimit(&spec)
		var fes authz.FieldErrors
		if errors.As(err, &fes) {
			for _, fe := range fes {
				fe.Field = "[" + itoa(i) + "]" + prefixDot(fe.Field)
				errs = append(errs, fe)
			}
			continue
		} else if err != nil {
			return nil, err
		}
		li := &limit{
			id:       spec.Policy + "/" + spec.Name,
			spec:     spec,
			match:    m,
			interval: int64(time.Second) / int64(spec.RequestsPerSecond),
		}
		li.burst = li.interval * int64(spec.Burst)
		if seen[li.id] {
			errs = append(errs, authz.FieldError{Field: "[" + itoa(i) + "].name", Msg: "duplicate limit " + li.id})
			continue
		}
		seen[li.id] = true
		routes := 1
		if spec.Per == authz.PerRoute {
			routes = len(spec.To)
		}
		if prev != nil {
			for _, old := range prev.limits {
				if old.id == li.id && old.state.per == spec.Per && old.state.routes == routes {
					li.state = old.state
				}
			}
		}
		if li.state == nil {
			li.state = &state{per: spec.Per, routes: routes}
			if spec.Per == authz.PerSource {
				li.state.sources = newTable(opts.MaxKeys)
			} else {
				li.state.tats = make([]atomic.Int64, routes)
			}
		}
		l.limits = append(l.limits, li)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return l, nil
}

func prefixDot(s string) string {
	if s == "" || strings.HasPrefix(s, "[") {
		return s
	}
	return "." + s
}

func itoa(i int) string { return strconv.Itoa(i) }

// Allow counts r against every limit that matches it, in order, and
// refuses it at the first limit that has no token for it (the limits
// before have counted it). It does not allocate, except the first time it
// sees a source of a per-source limit.
func (l *Limiter) Allow(r *authz.Request) Result {
	if l == nil || len(l.limits) == 0 {
		return Result{Allowed: true}
	}
	now := int64(l.now().Sub(l.epoch))
	for _, li := range l.limits {
		ok, route := li.match.Match(r)
		if !ok {
			continue
		}
		var res Result
		if li.state.sources != nil {
			res = li.state.sources.take(li, r, now)
		} else {
			res = li.takeShared(&li.state.tats[route], now)
		}
		if !res.Allowed {
			res.Limit = li.id
			return res
		}
	}
	return Result{Allowed: true}
}

// gcra updates a bucket's theoretical arrival time for one request at
// now: the request conforms when, after it, the bucket would not be more
// than burst ahead of now.
func (li *limit) gcra(tat, now int64) (newTAT int64, ok bool, retry time.Duration) {
	tat = max(tat, now)
	next := tat + li.interval
	if over := next - now - li.burst; over > 0 {
		return tat, false, time.Duration(over)
	}
	return next, true, 0
}

// takeShared takes a token from an overall or route bucket, lock-free.
func (li *limit) takeShared(b *atomic.Int64, now int64) Result {
	for {
		old := b.Load()
		next, ok, retry := li.gcra(old, now)
		if !ok {
			return Result{RetryAfter: retry}
		}
		if b.CompareAndSwap(old, next) {
			return Result{Allowed: true}
		}
	}
}

// key identifies a source: its verified identity, or its address when it
// has none.
type key struct {
	id string
	ip netip.Addr
}

// sourceKey is the address a source without an identity is limited by: an
// IPv4 address, or the /64 of an IPv6 address, since one host commonly
// holds a whole /64 and could otherwise take a fresh bucket (and push
// other sources out of the table) with every address it picks.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if !a.Is6() {
		return a
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return a
	}
	return p.Addr()
}

// table holds the buckets of a per-source limit, in shards with a lock
// and an LRU list each.
type table struct {
	seed    maphash.Seed
	maxKeys int
	shards  [numShards]shard
}

type shard struct {
	mu sync.Mutex
	// Guarded by mu:
	m          map[key]*entry
	head, tail *entry // most and least recently used
	max        int
}

// entry is the bucket of one source.
type entry struct {
	key        key
	tat        int64 // GCRA theoretical arrival time, ns since the epoch
	coolUntil  int64 // refuse everything before this, ns since the epoch
	lastWindow int64 // the last window in which the source exceeded
	streak     uint32
	prev, next *entry
}

func newTable(maxKeys int) *table {
	t := &table{seed: maphash.MakeSeed(), maxKeys: maxKeys}
	per := max(1, (maxKeys+numShards-1)/numShards)
	for i := range t.shards {
		t.shards[i].m = make(map[key]*entry)
		t.shards[i].max = per
	}
	return t
}

func (t *table) shard(k key) *shard {
	var h uint64
	if k.id != "" {
		h = maphash.String(t.seed, k.id)
	} else {
		b := k.ip.As16()
		h = maphash.Bytes(t.seed, b[:])
	}
	return &t.shards[h%numShards]
}

// take takes a token from r's source's bucket.
func (t *table) take(li *limit, r *authz.Request, now int64) Result {
	k := key{}
	if r.Authenticated && r.Source != "" {
		k.id = r.Source
	} else {
		k.ip = sourceKey(r.SourceIP)
	}
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.getLocked(k, li, now)

	if now < e.coolUntil {
		return Result{CoolingDown: true, RetryAfter: time.Duration(e.coolUntil - now)}
	}
	tat, ok, retry := li.gcra(e.tat, now)
	if ok {
		e.tat = tat
		return Result{Allowed: true}
	}
	if li.spec.CoolDown > 0 {
		w := now / int64(window)
		switch {
		case e.streak > 0 && w == e.lastWindow:
		case e.streak > 0 && w == e.lastWindow+1:
			e.streak++
		default:
			e.streak = 1
		}
		e.lastWindow = w
		if e.streak >= li.spec.CoolDownAfter {
			e.streak = 0
			e.coolUntil = now + int64(li.spec.CoolDown)
			return Result{CoolingDown: true, RetryAfter: li.spec.CoolDown}
		}
	}
	return Result{RetryAfter: retry}
}

// getLocked returns k's entry, most recently used first, making one (and
// forgetting the least recently used source if the shard is full).
func (s *shard) getLocked(k key, li *limit, now int64) *entry {
	if e, ok := s.m[k]; ok {
		s.moveToFrontLocked(e)
		return e
	}
	var e *entry
	if len(s.m) >= s.max && s.tail != nil {
		// Reuse the least recently used entry.
		e = s.tail
		s.unlinkLocked(e)
		delete(s.m, e.key)
		*e = entry{}
	} else {
		e = new(entry)
	}
	// Keep a copy of the identity: the request's string may point into a
	// buffer the proxy reuses.
	e.key = key{id: strings.Clone(k.id), ip: k.ip}
	e.tat = now
	s.m[e.key] = e
	s.pushFrontLocked(e)
	return e
}

func (s *shard) unlinkLocked(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (s *shard) pushFrontLocked(e *entry) {
	e.next = s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *shard) moveToFrontLocked(e *entry) {
	if s.head == e {
		return
	}
	s.unlinkLocked(e)
	s.pushFrontLocked(e)
}

// Keys returns the number of sources a limit tracks, for metrics and
// tests; -1 if the limit is not per source or does not exist.
func (l *Limiter) Keys(limitID string) int {
	for _, li := range l.limits {
		if li.id != limitID || li.state.sources == nil {
			continue
		}
		n := 0
		for i := range li.state.sources.shards {
			s := &li.state.sources.shards[i]
			s.mu.Lock()
			n += len(s.m)
			s.mu.Unlock()
		}
		return n
	}
	return -1
}
