// Package telemetry aggregates what the proxy carries per edge (direction,
// peer identity, peer workload, service, mTLS) and sends a summary of
// every interval to the controller over the Telemetry.Report stream, so
// that the controller knows the live traffic graph without a metrics
// server.
//
// The data path only touches atomics and, per request, one short per-edge
// lock around a bounded map of (method, path prefix, status class) counts;
// Collect, run by the Reporter, takes and resets each edge's counts.
// Refusals that no edge carries (failed handshakes, plaintext refused on a
// STRICT port) are counted apart, under a lock taken only when one
// happens (Security). The Reporter never blocks the data path: reports wait in a bounded queue that
// drops the oldest when full.
//
// It must not depend on Kubernetes packages or controller packages.
package telemetry

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/telemetry/sketch"
)

// Bounds.
const (
	// MaxRequestCounts is how many distinct (method, path, status class)
	// an edge counts per interval; requests past them are counted as
	// overflow.
	MaxRequestCounts = 64
	// MaxPathBytes is the longest path prefix kept, cut at a character
	// boundary.
	MaxPathBytes = 128
	// PathSegments is how many leading segments of a path are kept.
	PathSegments = 3
	// DefaultMaxEdges is the default bound on edges per report.
	DefaultMaxEdges = 2000
)

// EdgeKey names an edge as the proxy sees it.
type EdgeKey struct {
	Direction meshv1.Direction
	// PeerIdentity is the other side's SPIFFE ID; "" for a plaintext
	// client.
	PeerIdentity string
	// PeerWorkload is the other side's workload name, "" when unknown.
	PeerWorkload string
	// Service is "namespace/name", "" when unknown.
	Service string
	MTLS    bool
}

// Request is what an edge counts of one HTTP request, or of one opaque
// TCP stream (Method and Path empty, Seconds negative: no latency).
type Request struct {
	Method, Path string
	// Status is the final status code (a stream: 200 when opened, the
	// refusal's status otherwise).
	Status int
	// Seconds is the time to the end of the answer; negative for none.
	Seconds float64
	// Failed: a 5xx answer or a connection that failed.
	Failed bool
	// Denied and RateLimited: an authorization decision or a rate limit
	// refused the request (inbound: this proxy; outbound: the peer's).
	Denied, RateLimited bool
}

// Edge holds one edge's counts for the current interval. Its methods are
// safe for concurrent use and do not allocate once the interval's request
// kinds are known.
type Edge struct {
	key EdgeKey

	requests, failures, denied, rateLimited atomic.Uint64
	bytesSent, bytesReceived                atomic.Uint64
	buckets                                 [sketch.Buckets]atomic.Uint64
	sumNanos                                atomic.Uint64

	mu       sync.Mutex
	kinds    map[kindKey]*uint64 // guarded by mu, as are the counts
	overflow uint64              // guarded by mu
}

type kindKey struct {
	method, path string
	class        uint8
	// truncated: the request's path went on past path (CutPath).
	truncated bool
}

// Key returns the edge's key.
func (e *Edge) Key() EdgeKey { return e.key }

// Request counts one request.
func (e *Edge) Request(r Request) {
	if e == nil {
		return
	}
	e.requests.Add(1)
	if r.Failed {
		e.failures.Add(1)
	}
	if r.Denied {
		e.denied.Add(1)
	}
	if r.RateLimited {
		e.rateLimited.Add(1)
	}
	if r.Seconds >= 0 {
		e.buckets[sketch.Index(r.Seconds)].Add(1)
		if r.Seconds < 1e9 {
			e.sumNanos.Add(uint64(r.Seconds * 1e9))
		}
	}
	if r.Method == "" {
		return
	}
	path, truncated := CutPath(r.Path)
	k := kindKey{method: Method(r.Method), path: path, class: statusClass(r.Status), truncated: truncated}
	e.mu.Lock()
	if n := e.kinds[k]; n != nil {
		*n++
	} else if len(e.kinds) < MaxRequestCounts {
		if e.kinds == nil {
			e.kinds = make(map[kindKey]*uint64, 8)
		}
		// The path is part of the request: keep a copy, not the request's
		// memory.
		k.path = strings.Clone(k.path)
		one := uint64(1)
		e.kinds[k] = &one
	} else {
		e.overflow++
	}
	e.mu.Unlock()
}

// Bytes counts bytes sent towards the peer and received from it.
func (e *Edge) Bytes(sent, received uint64) {
	if e == nil {
		return
	}
	if sent > 0 {
		e.bytesSent.Add(sent)
	}
	if received > 0 {
		e.bytesReceived.Add(received)
	}
}

func statusClass(status int) uint8 {
	if status < 100 || status > 599 {
		return 0
	}
	return uint8(status / 100)
}

// Method returns the method as counted: the method itself when RFC 9110
// defines it (or PATCH), else "OTHER", so that a client cannot grow the
// counts with made-up methods.
func Method(m string) string {
	switch m {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "HEAD":
		return "HEAD"
	case "OPTIONS":
		return "OPTIONS"
	case "PATCH":
		return "PATCH"
	case "CONNECT":
		return "CONNECT"
	case "TRACE":
		return "TRACE"
	}
	return "OTHER"
}

// PathPrefix returns the part of a request path that is counted: no query
// string or fragment, at most the first PathSegments segments, made valid
// UTF-8 (each run of invalid bytes becomes U+FFFD) and then cut to at most
// MaxPathBytes bytes at a character boundary, so that what is reported is
// within the controller's bounds whatever the request's bytes. For a path
// of valid UTF-8 it returns a substring of p: it does not allocate.
func PathPrefix(p string) string {
	prefix, _ := CutPath(p)
	return prefix
}

// CutPath returns PathPrefix(p) and whether it cut anything off the path
// (the query string and fragment aside): segments past the first
// PathSegments, bytes past MaxPathBytes, or an absolute-form target
// counted as "/". A truncated prefix stands for the requests under it,
// not for requests to it alone.
func CutPath(p string) (prefix string, truncated bool) {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	segs := 0
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 {
			segs++
			if segs == PathSegments {
				p, truncated = p[:i], true
				break
			}
		}
	}
	if p != "" && p[0] != '/' {
		// Absolute-form or asterisk targets: count their shape only.
		if p == "*" {
			return "*", false
		}
		return "/", true
	}
	if len(p) > 4*MaxPathBytes {
		// The first MaxPathBytes bytes of the result come from at most
		// as many bytes of p: look no further.
		p, truncated = p[:4*MaxPathBytes], true
	}
	if !utf8.ValidString(p) {
		// Valid first, cut after: a replacement is three bytes for one.
		p = strings.ToValidUTF8(p, "\uFFFD")
	}
	if len(p) > MaxPathBytes {
		truncated = true
	}
	return cutUTF8(p, MaxPathBytes), truncated
}

// cutUTF8 cuts s to at most n bytes, not within a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Aggregator holds the edges of one proxy. The zero value is not usable;
// call NewAggregator.
type Aggregator struct {
	mu    sync.Mutex
	edges map[EdgeKey]*Edge // guarded by mu
	// lastCollect is when the interval being counted started, in Unix
	// nanoseconds.
	lastCollect atomic.Int64

	secMu            sync.Mutex
	security         map[securityKey]*securityCount // guarded by secMu
	securityOverflow uint64                         // guarded by secMu
}

// NewAggregator returns an empty aggregator whose first interval starts
// at now.
func NewAggregator(now time.Time) *Aggregator {
	a := &Aggregator{edges: make(map[EdgeKey]*Edge)}
	a.lastCollect.Store(now.UnixNano())
	return a
}

// Edge returns the edge of k, created on first use. Callers keep it for as
// long as the edge is current: an edge is never removed, so that the
// number of edges is bounded as the proxy's metric series are, by the
// peers and services of its configuration.
func (a *Aggregator) Edge(k EdgeKey) *Edge {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.edges[k]
	if e == nil {
		e = &Edge{key: k}
		a.edges[k] = e
	}
	return e
}

// edgeCounts is one edge's counts taken for a report.
type edgeCounts struct {
	key                                     EdgeKey
	requests, failures, denied, rateLimited uint64
	bytesSent, bytesReceived                uint64
	latency                                 sketch.Sketch
	kinds                                   map[kindKey]uint64
	overflow                                uint64
}

func (c *edgeCounts) empty() bool {
	return c.requests == 0 && c.bytesSent == 0 && c.bytesReceived == 0 && c.overflow == 0 && len(c.kinds) == 0
}

// take returns the edge's counts since the last take and resets them.
// The counters are read one after the other while requests go on, so a
// request that ends meanwhile may have its failure, denial or latency in
// this report and the request itself in the next: the controller allows
// for that (controlplane's straddle).
func (e *Edge) take() *edgeCounts {
	c := &edgeCounts{
		key:           e.key,
		requests:      e.requests.Swap(0),
		failures:      e.failures.Swap(0),
		denied:        e.denied.Swap(0),
		rateLimited:   e.rateLimited.Swap(0),
		bytesSent:     e.bytesSent.Swap(0),
		bytesReceived: e.bytesReceived.Swap(0),
	}
	var counts [sketch.Buckets]uint64
	for i := range e.buckets {
		counts[i] = e.buckets[i].Swap(0)
	}
	c.latency = sketchOf(counts, float64(e.sumNanos.Swap(0))/1e9)
	e.mu.Lock()
	if len(e.kinds) > 0 {
		c.kinds = make(map[kindKey]uint64, len(e.kinds))
		for k, n := range e.kinds {
			c.kinds[k] = *n
		}
		clear(e.kinds)
	}
	c.overflow, e.overflow = e.overflow, 0
	e.mu.Unlock()
	return c
}

// sketchOf builds a sketch from bucket counts and a sum.
func sketchOf(counts [sketch.Buckets]uint64, sum float64) sketch.Sketch {
	p := &meshv1.LatencySketch{Counts: counts[:], SumSeconds: sum}
	s, err := sketch.Decode(p.GetCounts(), p.GetSumSeconds())
	if err != nil {
		// Not reached: the counts are on the scheme and the sum is finite
		// and non-negative.
		return sketch.Sketch{}
	}
	return *s
}

// Collect takes every edge's counts since the last Collect, resets them,
// and returns the report of the interval [last Collect, now): the edges
// with traffic, busiest first, at most maxEdges (<= 0: DefaultMaxEdges) of
// them, the rest folded into one overflow edge; and the security counts
// (Security), most frequent first.
func (a *Aggregator) Collect(workload string, now time.Time, maxEdges int) *meshv1.TelemetryReport {
	if maxEdges <= 0 {
		maxEdges = DefaultMaxEdges
	}
	a.mu.Lock()
	edges := make([]*Edge, 0, len(a.edges))
	for _, e := range a.edges {
		edges = append(edges, e)
	}
	a.mu.Unlock()
	start := time.Unix(0, a.lastCollect.Swap(now.UnixNano()))

	var busy []*edgeCounts
	for _, e := range edges {
		if c := e.take(); !c.empty() {
			busy = append(busy, c)
		}
	}
	// Busiest first, then by key, so that what is folded is the quiet
	// tail and the order is stable.
	sort.Slice(busy, func(i, j int) bool {
		if busy[i].requests != busy[j].requests {
			return busy[i].requests > busy[j].requests
		}
		return keyLess(busy[i].key, busy[j].key)
	})
	rep := &meshv1.TelemetryReport{
		Workload: workload,
		Start:    timestamppb.New(start),
		Interval: durationpb.New(now.Sub(start)),
	}
	var over *edgeCounts
	for i, c := range busy {
		if i < maxEdges {
			rep.Edges = append(rep.Edges, c.proto())
			continue
		}
		if over == nil {
			over = &edgeCounts{kinds: map[kindKey]uint64{}}
		}
		over.merge(c)
		rep.OverflowEdges++
	}
	if over != nil {
		s := over.proto()
		s.Overflow = true
		rep.Edges = append(rep.Edges, s)
	}
	if sec, n := a.takeSecurity(); len(sec) > 0 || n > 0 {
		rep.Security, rep.SecurityOverflow = sec, n
	}
	return rep
}

func keyLess(a, b EdgeKey) bool {
	switch {
	case a.Direction != b.Direction:
		return a.Direction < b.Direction
	case a.PeerIdentity != b.PeerIdentity:
		return a.PeerIdentity < b.PeerIdentity
	case a.PeerWorkload != b.PeerWorkload:
		return a.PeerWorkload < b.PeerWorkload
	case a.Service != b.Service:
		return a.Service < b.Service
	}
	return !a.MTLS && b.MTLS
}

// merge adds o's counts to c; request kinds past MaxRequestCounts go to
// the overflow.
func (c *edgeCounts) merge(o *edgeCounts) {
	c.requests += o.requests
	c.failures += o.failures
	c.denied += o.denied
	c.rateLimited += o.rateLimited
	c.bytesSent += o.bytesSent
	c.bytesReceived += o.bytesReceived
	c.latency.Merge(&o.latency)
	c.overflow += o.overflow
	for k, n := range o.kinds {
		if _, ok := c.kinds[k]; ok || len(c.kinds) < MaxRequestCounts {
			c.kinds[k] += n
		} else {
			c.overflow += n
		}
	}
}

func (c *edgeCounts) proto() *meshv1.EdgeSummary {
	s := &meshv1.EdgeSummary{
		Direction:        c.key.Direction,
		PeerSpiffeId:     validUTF8(c.key.PeerIdentity),
		PeerWorkload:     validUTF8(c.key.PeerWorkload),
		Service:          validUTF8(c.key.Service),
		Mtls:             c.key.MTLS,
		Requests:         c.requests,
		Failures:         c.failures,
		Denied:           c.denied,
		RateLimited:      c.rateLimited,
		BytesSent:        c.bytesSent,
		BytesReceived:    c.bytesReceived,
		Latency:          latencyProto(&c.latency),
		RequestsOverflow: c.overflow,
	}
	// Paths are the request's bytes: two raw paths may read the same once
	// made valid UTF-8 (which protobuf strings must be). Merge those.
	type out struct {
		method, path string
		class        uint8
		truncated    bool
	}
	merged := make(map[out]uint64, len(c.kinds))
	for k, n := range c.kinds {
		merged[out{k.method, validUTF8(k.path), k.class, k.truncated}] += n
	}
	for k, n := range merged {
		s.RequestCounts = append(s.RequestCounts, &meshv1.EdgeSummary_RequestCount{
			Method: k.method, Path: k.path, StatusClass: uint32(k.class), Count: n, Truncated: k.truncated,
		})
	}
	sort.Slice(s.RequestCounts, func(i, j int) bool {
		a, b := s.RequestCounts[i], s.RequestCounts[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Method != b.Method {
			return a.Method < b.Method
		}
		if a.StatusClass != b.StatusClass {
			return a.StatusClass < b.StatusClass
		}
		return !a.Truncated && b.Truncated
	})
	return s
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// latencyProto encodes s for a report.
func latencyProto(s *sketch.Sketch) *meshv1.LatencySketch {
	counts, sum := s.Encode()
	return &meshv1.LatencySketch{Counts: counts, SumSeconds: sum}
}
