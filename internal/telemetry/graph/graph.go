// Package graph is the controller's live traffic graph: the per-edge
// summaries that proxies report every few seconds (meshv1.TelemetryReport),
// kept per workload instance and edge in sliding windows, and the queries
// that `rampart stat`, `rampart edges` and the controller's HTTP API answer
// from them: per workload (requests per second, success rate, latency
// quantiles from merged sketches, mTLS share, denials) and per edge (both
// identities, encrypted or not, authorized or not).
//
// Memory is bounded: at most Config.MaxInstances instances and
// Config.MaxEdges edge series in all (Config.MaxEdgesPerInstance per
// instance), the least recently reported evicted first; an instance or
// series with no report for MaxWindow is dropped. Every series keeps
// FineBuckets buckets of BucketWidth (the last minute) and CoarseBuckets
// buckets of CoarseWidth (the last ten minutes).
//
// Each edge can be seen twice, by the caller's proxy (outbound) and by the
// destination's (inbound); the package never adds the two up. Which side is
// authoritative for what is documented on Graph.Workloads and Graph.Edges
// (and in docs/observability.md).
//
// Reports reach the graph validated (internal/controlplane checks them);
// the graph trusts their shape but not their timing: a report is placed by
// the controller's clock when it arrives. The package depends on
// internal/telemetry/sketch and internal/identity only; never on gRPC, the
// control plane or the proxy.
package graph

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/telemetry/sketch"
)

// The resolution of the windows.
const (
	// BucketWidth is the width of the fine buckets, which cover windows
	// up to FineBuckets·BucketWidth (one minute).
	BucketWidth = 5 * time.Second
	// FineBuckets is the number of fine buckets per series.
	FineBuckets = 12
	// CoarseWidth is the width of the coarse buckets, which cover windows
	// longer than a minute, up to MaxWindow.
	CoarseWidth = time.Minute
	// CoarseBuckets is the number of coarse buckets per series.
	CoarseBuckets = 10
	// MaxWindow is the longest window a query may ask for, and how long
	// an instance or series that stopped reporting is kept.
	MaxWindow = CoarseBuckets * CoarseWidth
	// DefaultWindow is the window of a query that names none.
	DefaultWindow = time.Minute
	// MaxPlacementLag is how far in the past a report's interval may end
	// and still be placed there; older ones are placed this far back.
	// With an interval of at most a minute, the placement stays within
	// the fine buckets.
	MaxPlacementLag = 30 * time.Second
)

// Defaults of Config.
const (
	DefaultMaxInstances        = 4096
	DefaultMaxEdges            = 16384
	DefaultMaxEdgesPerInstance = 2048
)

// Config configures a Graph. The zero value is ready to use.
type Config struct {
	// Now is the clock reports are placed by and windows end at; nil
	// means time.Now.
	Now func() time.Time
	// MaxInstances bounds the workload instances kept; when a new one
	// reports at the bound, the one that reported least recently is
	// evicted. Zero means DefaultMaxInstances.
	MaxInstances int
	// MaxEdges bounds the edge series kept over all instances (one series
	// is one instance's view of one edge, per direction); zero means
	// DefaultMaxEdges. A series holds at most FineBuckets+CoarseBuckets
	// latency sketches of about 700 bytes, so the default bounds the
	// graph to about 250 MB however the mesh behaves; a series that
	// reports now and then holds far fewer.
	MaxEdges int
	// MaxEdgesPerInstance bounds the series of one instance, so that one
	// proxy cannot push the others' edges out; zero means
	// DefaultMaxEdgesPerInstance.
	MaxEdgesPerInstance int
}

// Validate reports whether c can build a Graph.
func (c Config) Validate() error {
	if c.MaxInstances < 0 || c.MaxEdges < 0 || c.MaxEdgesPerInstance < 0 {
		return fmt.Errorf("graph: negative bound (instances %d, edges %d, edges per instance %d)",
			c.MaxInstances, c.MaxEdges, c.MaxEdgesPerInstance)
	}
	return nil
}

// Direction says which side of an edge a summary comes from.
type Direction int

// Directions of an EdgeReport.
const (
	// Inbound: requests the reporting workload received.
	Inbound Direction = iota + 1
	// Outbound: requests the reporting workload sent.
	Outbound
	// Overflow: the edges past the proxy's bound, folded into one entry
	// of either direction; counted for the workload, on no edge.
	Overflow
)

// Report is one validated interval of one workload instance.
type Report struct {
	// Instance names the reporting proxy process uniquely (the control
	// plane uses one per report stream). Required.
	Instance string
	// ID is the instance's verified SPIFFE ID. Required.
	ID spiffeid.ID
	// Namespace and Workload name the workload; the namespace comes from
	// ID. Required.
	Namespace, Workload string
	// Interval is the time the counts cover (at most a minute is
	// believed).
	Interval time.Duration
	// End is when the interval ended, by the proxy's clock. The counts
	// are placed at End, moved into the last MaxPlacementLag if it is
	// older or after now if it is later; zero means now. A proxy that
	// reconnects sends its queued reports at once, and they land where
	// they belong rather than all at the arrival time.
	End time.Time
	// Edges is one entry per edge with traffic in the interval.
	Edges []EdgeReport
}

// EdgeReport is what the instance saw of one edge in the interval.
type EdgeReport struct {
	Direction Direction
	// PeerID is the other side's SPIFFE ID; zero when it had none.
	PeerID spiffeid.ID
	// PeerWorkload is the other side's workload name (in PeerID's
	// namespace), when known.
	PeerWorkload string
	// Service is the "namespace/name" the requests were for, when known.
	Service string
	// MTLS says whether the edge was mutual TLS.
	MTLS bool
	Counts
	// Latency may be nil: no latencies.
	Latency *sketch.Sketch
}

// Counts are the request and byte counts of a summary.
type Counts struct {
	Requests      uint64
	Failures      uint64
	Denied        uint64
	RateLimited   uint64
	BytesSent     uint64
	BytesReceived uint64
}

func (c *Counts) add(o Counts) {
	c.Requests += o.Requests
	c.Failures += o.Failures
	c.Denied += o.Denied
	c.RateLimited += o.RateLimited
	c.BytesSent += o.BytesSent
	c.BytesReceived += o.BytesReceived
}

// ErrInvalid is wrapped by the errors of Add and of ParseWindow.
var ErrInvalid = errors.New("graph: invalid")

// Graph is the live traffic graph. It is safe for concurrent use.
type Graph struct {
	now                 func() time.Time
	maxInstances        int
	maxEdges            int
	maxEdgesPerInstance int

	mu        sync.Mutex
	instances map[string]*instance
	byAge     *list.List // of *instance, least recently reported first
	series    *list.List // of *series over all instances, least recently reported first
	evicted   uint64     // instances and series evicted at a bound
}

type instance struct {
	key       string
	id        spiffeid.ID
	namespace string
	workload  string
	lastSeen  time.Time
	series    map[seriesKey]*series
	elem      *list.Element // in Graph.byAge
}

type seriesKey struct {
	dir          Direction
	peerID       spiffeid.ID
	peerWorkload string
	service      string
	mtls         bool
}

type series struct {
	inst     *instance
	key      seriesKey
	since    time.Time // start of the first interval reported
	lastSeen time.Time
	fine     [FineBuckets]bucket
	coarse   [CoarseBuckets]bucket
	elem     *list.Element // in Graph.series
}

type bucket struct {
	epoch   int64 // time / width; the bucket is stale when it is not the slot's current epoch
	counts  Counts
	latency *sketch.Sketch // nil: none
}

func (b *bucket) add(epoch int64, e *EdgeReport) {
	if epoch < b.epoch {
		return // older than the slot's bucket: outside every window already
	}
	if b.epoch != epoch {
		*b = bucket{epoch: epoch, latency: b.latency}
		if b.latency != nil {
			b.latency.Reset()
		}
	}
	b.counts.add(e.Counts)
	if e.Latency != nil && e.Latency.Count() > 0 {
		if b.latency == nil {
			b.latency = new(sketch.Sketch)
		}
		b.latency.Merge(e.Latency)
	}
}

// New returns an empty graph.
func New(cfg Config) (*Graph, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Graph{
		now:                 cfg.Now,
		maxInstances:        cfg.MaxInstances,
		maxEdges:            cfg.MaxEdges,
		maxEdgesPerInstance: cfg.MaxEdgesPerInstance,
		instances:           make(map[string]*instance),
		byAge:               list.New(),
		series:              list.New(),
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.maxInstances == 0 {
		g.maxInstances = DefaultMaxInstances
	}
	if g.maxEdges == 0 {
		g.maxEdges = DefaultMaxEdges
	}
	if g.maxEdgesPerInstance == 0 {
		g.maxEdgesPerInstance = DefaultMaxEdgesPerInstance
	}
	return g, nil
}

// Add records r as arrived now. It refuses a report without an instance,
// identity or workload, or with an edge of unknown direction; errors wrap
// ErrInvalid.
func (g *Graph) Add(r Report) error {
	if r.Instance == "" || r.ID.IsZero() || r.Namespace == "" || r.Workload == "" {
		return fmt.Errorf("%w: report without instance, identity, namespace or workload", ErrInvalid)
	}
	for i := range r.Edges {
		if d := r.Edges[i].Direction; d != Inbound && d != Outbound && d != Overflow {
			return fmt.Errorf("%w: edge %d: direction %d", ErrInvalid, i, d)
		}
	}
	now := g.now()
	end := now
	if !r.End.IsZero() && r.End.Before(now) {
		end = r.End
		if end.Before(now.Add(-MaxPlacementLag)) {
			end = now.Add(-MaxPlacementLag)
		}
	}
	// The counts go in the bucket of the interval's middle, so that a
	// window's rate does not count one interval too many.
	at := end.Add(-min(max(r.Interval, 0), time.Minute) / 2).UnixNano()
	fine, coarse := at/int64(BucketWidth), at/int64(CoarseWidth)

	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(now)
	in := g.instances[r.Instance]
	if in == nil {
		for len(g.instances) >= g.maxInstances {
			g.removeInstanceLocked(g.byAge.Front().Value.(*instance))
			g.evicted++
		}
		in = &instance{key: r.Instance, id: r.ID, namespace: r.Namespace, workload: r.Workload, series: make(map[seriesKey]*series)}
		in.elem = g.byAge.PushBack(in)
		g.instances[r.Instance] = in
	}
	// An instance keeps the identity and name it first reported with: a
	// stream reports for one workload.
	if in.id != r.ID || in.namespace != r.Namespace || in.workload != r.Workload {
		return fmt.Errorf("%w: instance %s reported for %s/%s before, now for %s/%s", ErrInvalid,
			r.Instance, in.namespace, in.workload, r.Namespace, r.Workload)
	}
	in.lastSeen = now
	g.byAge.MoveToBack(in.elem)
	for i := range r.Edges {
		e := &r.Edges[i]
		k := seriesKey{dir: e.Direction, peerID: e.PeerID, peerWorkload: e.PeerWorkload, service: e.Service, mtls: e.MTLS}
		s := in.series[k]
		if s == nil {
			for len(in.series) >= g.maxEdgesPerInstance {
				g.removeSeriesLocked(in.oldest())
				g.evicted++
			}
			for g.series.Len() >= g.maxEdges {
				g.removeSeriesLocked(g.series.Front().Value.(*series))
				g.evicted++
			}
			s = &series{inst: in, key: k, since: end.Add(-r.Interval)}
			s.elem = g.series.PushBack(s)
			in.series[k] = s
		}
		s.lastSeen = now
		g.series.MoveToBack(s.elem)
		s.fine[fine%FineBuckets].add(fine, e)
		s.coarse[coarse%CoarseBuckets].add(coarse, e)
	}
	return nil
}

// oldest is the instance's least recently reported series.
func (in *instance) oldest() *series {
	var o *series
	for _, s := range in.series {
		if o == nil || s.lastSeen.Before(o.lastSeen) {
			o = s
		}
	}
	return o
}

func (g *Graph) removeSeriesLocked(s *series) {
	g.series.Remove(s.elem)
	delete(s.inst.series, s.key)
}

func (g *Graph) removeInstanceLocked(in *instance) {
	for _, s := range in.series {
		g.series.Remove(s.elem)
	}
	g.byAge.Remove(in.elem)
	delete(g.instances, in.key)
}

// expireLocked drops the series and instances with no report for
// MaxWindow: their windows hold nothing any more.
func (g *Graph) expireLocked(now time.Time) {
	cutoff := now.Add(-MaxWindow)
	for e := g.series.Front(); e != nil; {
		s := e.Value.(*series)
		if s.lastSeen.After(cutoff) {
			break
		}
		e = e.Next()
		g.removeSeriesLocked(s)
	}
	for e := g.byAge.Front(); e != nil; {
		in := e.Value.(*instance)
		if in.lastSeen.After(cutoff) {
			break
		}
		e = e.Next()
		g.removeInstanceLocked(in)
	}
}

// Size is the number of instances and edge series kept, and how many were
// evicted at a bound since the graph was made.
func (g *Graph) Size() (instances, series int, evicted uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(g.now())
	return len(g.instances), g.series.Len(), g.evicted
}

// ParseWindow parses a query window: a Go duration that is a whole number
// of BucketWidth up to a minute, or a whole number of minutes up to
// MaxWindow ("30s", "1m", "10m"). Empty means DefaultWindow. Errors wrap
// ErrInvalid and say what is allowed.
func ParseWindow(s string) (time.Duration, error) {
	if s == "" {
		return DefaultWindow, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, invalidError(fmt.Sprintf("window %q is not a duration such as 30s, 1m or 10m", s))
	}
	if err := checkWindow(d); err != nil {
		return 0, invalidError(fmt.Sprintf("window %q: %v", s, err))
	}
	return d, nil
}

// invalidError is a message for the user that wraps ErrInvalid without
// repeating its text.
type invalidError string

func (e invalidError) Error() string        { return string(e) }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func checkWindow(d time.Duration) error {
	switch {
	case d < BucketWidth || d > MaxWindow:
		return fmt.Errorf("want %v to %v", BucketWidth, MaxWindow)
	case d <= FineBuckets*BucketWidth && d%BucketWidth != 0:
		return fmt.Errorf("up to a minute, want a multiple of %v", BucketWidth)
	case d > FineBuckets*BucketWidth && d%CoarseWidth != 0:
		return errors.New("above a minute, want whole minutes")
	}
	return nil
}

// sum is a series' totals over a window.
type sum struct {
	Counts
	latency sketch.Sketch
	// span is how much of the window the series covers: the window, or
	// less when the series started reporting within it.
	span time.Duration
}

func (a *sum) merge(b *sum) {
	a.Counts.add(b.Counts)
	a.latency.Merge(&b.latency)
	a.span = max(a.span, b.span)
}

// window sums s over the window d ending at now; ok is false when
// the window holds nothing of it.
func (s *series) window(now time.Time, d time.Duration) (out sum, ok bool) {
	width, buckets := BucketWidth, s.fine[:]
	if d > FineBuckets*BucketWidth {
		width, buckets = CoarseWidth, s.coarse[:]
	}
	cur := now.UnixNano() / int64(width)
	n := int64(d / width)
	for i := range buckets {
		b := &buckets[i]
		if b.epoch <= cur-n || b.epoch > cur || (b.counts == Counts{} && b.latency == nil) {
			continue
		}
		ok = true
		out.Counts.add(b.counts)
		if b.latency != nil {
			out.latency.Merge(b.latency)
		}
	}
	// The window runs from the start of its oldest bucket to now.
	start := time.Unix(0, (cur-n+1)*int64(width))
	if s.since.After(start) {
		start = s.since
	}
	out.span = max(now.Sub(start), time.Second)
	return out, ok
}

// namespaceOf is the namespace of a workload identity; "" for any other.
func namespaceOf(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	ns, _, err := identity.ParseWorkloadID(id)
	if err != nil {
		return ""
	}
	return ns
}
