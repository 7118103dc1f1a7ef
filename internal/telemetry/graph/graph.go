// Package graph is the controller's live traffic graph: the per-edge
// summaries that proxies report every few seconds (meshv1.TelemetryReport),
// kept per workload instance and edge in sliding windows, and the queries
// that `rampart stat`, `rampart edges` and the controller's HTTP API answer
// from them: per workload (requests per second, success rate, latency
// quantiles from merged sketches, mTLS share, denials) and per edge (both
// identities, encrypted or not, authorized or not).
//
// Memory is bounded: at most Config.MaxInstances instances
// (Config.MaxInstancesPerIdentity per identity) and Config.MaxEdges edge
// series in all (Config.MaxEdgesPerInstance per instance), the least
// recently reported evicted first, and from the reporting identity's own
// share first when it holds more than its share, so that one identity
// cannot push the others out; every eviction takes constant time. An
// instance or series with no report for MaxWindow is dropped. Every series keeps
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
	// up to FineWindow.
	BucketWidth = 5 * time.Second
	// FineWindow is the longest window of fine buckets.
	FineWindow = time.Minute
	// FineBuckets is the number of fine buckets per series: a window
	// ends with the last complete bucket, and the up to three after it
	// (still waiting for reports, one interval and ReportSlack long at
	// most) must not overwrite its oldest.
	FineBuckets = 12 + 3 // FineWindow/BucketWidth + 3
	// CoarseWidth is the width of the coarse buckets, which cover windows
	// longer than FineWindow, up to MaxWindow.
	CoarseWidth = time.Minute
	// MaxWindow is the longest window a query may ask for, and how long
	// an instance or series that stopped reporting is kept.
	MaxWindow = 10 * time.Minute
	// CoarseBuckets is the number of coarse buckets per series, with the
	// same room as FineBuckets.
	CoarseBuckets = 10 + 3 // MaxWindow/CoarseWidth + 3
	// DefaultWindow is the window of a query that names none.
	DefaultWindow = time.Minute
	// MinWindow is the shortest window a query may ask for: three report
	// intervals at the proxies' default of 5 s, so that the reports that
	// end within a window cover it (with fewer, one report more or less
	// changes the rate by half).
	MinWindow = 3 * BucketWidth
	// ReportSlack is how long after its interval ends a report is waited
	// for before the interval counts as complete without it (an idle
	// proxy sends none).
	ReportSlack = 2 * time.Second
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
	// DefaultMaxInstancesPerIdentity bounds the instances of one
	// identity: the replicas of one service account, each on its own
	// address, with room to spare.
	DefaultMaxInstancesPerIdentity = 512
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
	// graph to about 320 MB however the mesh behaves; a series that
	// reports now and then holds far fewer.
	MaxEdges int
	// MaxEdgesPerInstance bounds the series of one instance, so that one
	// proxy cannot push the others' edges out; zero means
	// DefaultMaxEdgesPerInstance.
	MaxEdgesPerInstance int
	// MaxInstancesPerIdentity bounds the instances of one SPIFFE ID: a new
	// instance past it evicts that identity's least recently reported
	// one, never another identity's. Zero means
	// DefaultMaxInstancesPerIdentity.
	MaxInstancesPerIdentity int
}

// Validate reports whether c can build a Graph.
func (c Config) Validate() error {
	if c.MaxInstances < 0 || c.MaxEdges < 0 || c.MaxEdgesPerInstance < 0 || c.MaxInstancesPerIdentity < 0 {
		return fmt.Errorf("graph: negative bound (instances %d, edges %d, edges per instance %d, instances per identity %d)",
			c.MaxInstances, c.MaxEdges, c.MaxEdgesPerInstance, c.MaxInstancesPerIdentity)
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
	// Instance names the reporting proxy (the control plane uses its
	// identity, workload name and address, so that a proxy that
	// reconnects is the same instance). Required.
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
	// are placed at End (in the bucket that holds the interval's last
	// moment), moved into the last MaxPlacementLag if it is older or to
	// now if it is later; zero means now. A proxy that
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
	// Routes are the edge's counts by method, path prefix and status
	// class, as the control plane validated them. The graph does not keep
	// them; the insights engine learns routes from them.
	Routes []RouteCount
}

// RouteCount is how many requests of one kind an edge carried.
type RouteCount struct {
	// Method is an HTTP method or "OTHER".
	Method string
	// Path is the request path's first three segments; Truncated says
	// the requests went deeper.
	Path      string
	Truncated bool
	// StatusClass is the hundreds digit of the status (0 to 5).
	StatusClass uint8
	Count       uint64
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

	maxInstancesPerID int

	mu        sync.Mutex
	instances map[string]*instance
	owners    map[spiffeid.ID]*owner
	byAge     *list.List // of *instance, least recently reported first
	series    *list.List // of *series over all instances, least recently reported first
	evicted   uint64     // instances and series evicted at a bound
}

// owner is what one identity holds, for the bounds per identity.
type owner struct {
	instances *list.List // of *instance, least recently reported first
	series    *list.List // of *series, least recently reported first
}

type instance struct {
	key       string
	id        spiffeid.ID
	namespace string
	workload  string
	lastSeen  time.Time
	// lastEnd is the latest end of an interval reported (as placed), and
	// interval the length of the last interval: counts up to
	// complete() are all in.
	lastEnd  time.Time
	interval time.Duration
	series   map[seriesKey]*series
	byAge    *list.List    // of *series, least recently reported first
	elem     *list.Element // in Graph.byAge
	ownElem  *list.Element // in owner.instances
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
	instElem *list.Element // in instance.byAge
	ownElem  *list.Element // in owner.series
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
		maxInstancesPerID:   cfg.MaxInstancesPerIdentity,
		instances:           make(map[string]*instance),
		owners:              make(map[spiffeid.ID]*owner),
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
	if g.maxInstancesPerID == 0 {
		g.maxInstancesPerID = DefaultMaxInstancesPerIdentity
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
	interval := min(max(r.Interval, 0), time.Minute)
	// The counts go in the bucket of the interval's last moment: a
	// window of whole buckets then holds the reports that ended in it,
	// which cover as much time as the window on average however the
	// intervals fall.
	at := end.UnixNano() - 1
	fine, coarse := at/int64(BucketWidth), at/int64(CoarseWidth)

	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(now)
	in := g.instances[r.Instance]
	if in == nil {
		in = g.newInstanceLocked(r)
	}
	// An instance keeps the identity and name it first reported with.
	if in.id != r.ID || in.namespace != r.Namespace || in.workload != r.Workload {
		return fmt.Errorf("%w: instance %s reported for %s/%s before, now for %s/%s", ErrInvalid,
			r.Instance, in.namespace, in.workload, r.Namespace, r.Workload)
	}
	in.lastSeen = now
	if end.After(in.lastEnd) {
		in.lastEnd = end
	}
	in.interval = interval
	g.byAge.MoveToBack(in.elem)
	own := g.owners[in.id]
	own.instances.MoveToBack(in.ownElem)
	for i := range r.Edges {
		e := &r.Edges[i]
		k := seriesKey{dir: e.Direction, peerID: e.PeerID, peerWorkload: e.PeerWorkload, service: e.Service, mtls: e.MTLS}
		s := in.series[k]
		if s == nil {
			s = g.newSeriesLocked(in, own, k, end.Add(-interval))
		}
		s.lastSeen = now
		g.series.MoveToBack(s.elem)
		in.byAge.MoveToBack(s.instElem)
		own.series.MoveToBack(s.ownElem)
		s.fine[fine%FineBuckets].add(fine, e)
		s.coarse[coarse%CoarseBuckets].add(coarse, e)
	}
	return nil
}

// newInstanceLocked makes room for r's instance within the bounds and adds
// it. Past the bound per identity, the identity's own least recently
// reported instance goes; past the global bound, the identity's own when
// it holds more than its share (the bound over the identities), else the
// least recently reported of all.
func (g *Graph) newInstanceLocked(r Report) *instance {
	own := g.owners[r.ID]
	if own == nil {
		own = &owner{instances: list.New(), series: list.New()}
		g.owners[r.ID] = own
	}
	for own.instances.Len() >= g.maxInstancesPerID {
		g.removeInstanceLocked(own.instances.Front().Value.(*instance))
		g.evicted++
	}
	g.owners[r.ID] = own // again, when the identity's last instance went
	for len(g.instances) >= g.maxInstances {
		victim := g.byAge.Front().Value.(*instance)
		if own.instances.Len() > g.maxInstances/len(g.owners) {
			victim = own.instances.Front().Value.(*instance)
		}
		g.removeInstanceLocked(victim)
		g.evicted++
		g.owners[r.ID] = own
	}
	in := &instance{key: r.Instance, id: r.ID, namespace: r.Namespace, workload: r.Workload,
		series: make(map[seriesKey]*series), byAge: list.New()}
	in.elem = g.byAge.PushBack(in)
	in.ownElem = own.instances.PushBack(in)
	g.instances[r.Instance] = in
	return in
}

// newSeriesLocked makes room for a series of in within the bounds and adds
// it. Past the bound per instance, the instance's least recently reported
// series goes; past the global bound, its identity's least recently
// reported when the identity holds more than its share, else the least
// recently reported of all.
func (g *Graph) newSeriesLocked(in *instance, own *owner, k seriesKey, since time.Time) *series {
	for in.byAge.Len() >= g.maxEdgesPerInstance {
		g.removeSeriesLocked(in.byAge.Front().Value.(*series))
		g.evicted++
	}
	for g.series.Len() >= g.maxEdges {
		victim := g.series.Front().Value.(*series)
		if own.series.Len() > g.maxEdges/len(g.owners) {
			victim = own.series.Front().Value.(*series)
		}
		g.removeSeriesLocked(victim)
		g.evicted++
	}
	s := &series{inst: in, key: k, since: since}
	s.elem = g.series.PushBack(s)
	s.instElem = in.byAge.PushBack(s)
	s.ownElem = own.series.PushBack(s)
	in.series[k] = s
	return s
}

func (g *Graph) removeSeriesLocked(s *series) {
	g.series.Remove(s.elem)
	s.inst.byAge.Remove(s.instElem)
	g.owners[s.inst.id].series.Remove(s.ownElem)
	delete(s.inst.series, s.key)
}

func (g *Graph) removeInstanceLocked(in *instance) {
	own := g.owners[in.id]
	for _, s := range in.series {
		g.series.Remove(s.elem)
		own.series.Remove(s.ownElem)
	}
	own.instances.Remove(in.ownElem)
	if own.instances.Len() == 0 {
		delete(g.owners, in.id)
	}
	g.byAge.Remove(in.elem)
	delete(g.instances, in.key)
}

// complete is the time up to which all of in's counts are in: its latest
// interval's end, or, when it has sent nothing since (an idle proxy sends
// no report), one interval and ReportSlack ago.
func (in *instance) complete(now time.Time) time.Time {
	t := now.Add(-in.interval - ReportSlack)
	if in.lastEnd.After(t) {
		t = in.lastEnd
	}
	if t.After(now) {
		return now
	}
	return t
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
// of BucketWidth from MinWindow up to a minute, or a whole number of
// minutes up to MaxWindow ("15s", "30s", "1m", "10m"). Empty means DefaultWindow. Errors wrap
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
	case d < MinWindow || d > MaxWindow:
		return fmt.Errorf("want %v to %v (a window shorter than three report intervals holds too few reports for a rate)", MinWindow, MaxWindow)
	case d <= FineWindow && d%BucketWidth != 0:
		return fmt.Errorf("up to a minute, want a multiple of %v", BucketWidth)
	case d > FineWindow && d%CoarseWidth != 0:
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
	// interval is the longest report interval of the reports summed.
	interval time.Duration
}

func (a *sum) merge(b *sum) {
	a.Counts.add(b.Counts)
	a.latency.Merge(&b.latency)
	a.span = max(a.span, b.span)
	a.interval = max(a.interval, b.interval)
}

// window sums s over the window d that ends when its instance's counts
// are complete (see instance.complete): a bucket still waiting for reports
// would lower the rate. Up to FineWindow, the window is whole fine buckets,
// the last complete one newest, which hold the reports that ended in them
// and so cover the window exactly on average. Above, it is the coarse
// buckets from the one that holds d before the complete time to the one
// that holds it, the rate over that span (at least d, less than d and a
// minute); the reports of its oldest bucket may have started up to an
// interval before it, a few percent of a window of minutes. ok is false
// when the window holds nothing of it.
func (s *series) window(now time.Time, d time.Duration) (out sum, ok bool) {
	complete := s.inst.complete(now)
	width, buckets := BucketWidth, s.fine[:]
	// cur is the newest bucket of the window, which ends at end.
	cur := complete.UnixNano()/int64(width) - 1
	end := time.Unix(0, (cur+1)*int64(width))
	n := int64(d / width)
	if d > FineWindow {
		// From the bucket that holds complete-d to the one that holds
		// complete: at least d, less than d and a bucket.
		width, buckets = CoarseWidth, s.coarse[:]
		cur = (complete.UnixNano() - 1) / int64(width)
		end = complete
		n = cur - complete.Add(-d).UnixNano()/int64(width) + 1
	}
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
	start := time.Unix(0, (cur-n+1)*int64(width))
	if s.since.After(start) {
		start = s.since
	}
	out.span = max(end.Sub(start), time.Second)
	out.interval = s.inst.interval
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
