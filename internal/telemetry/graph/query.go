package graph

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Filter narrows a query. The zero value selects everything over
// DefaultWindow.
type Filter struct {
	// Namespace, when set, keeps the workloads of that namespace (for
	// edges: the edges with either end in it).
	Namespace string
	// Workload, when set, keeps that workload (a name within Namespace;
	// for edges: the edges with either end on it).
	Workload string
	// Window is how far back the query looks; zero means DefaultWindow.
	// It must pass ParseWindow's rules.
	Window time.Duration
}

func (f *Filter) check() error {
	if f.Window == 0 {
		f.Window = DefaultWindow
	}
	if err := checkWindow(f.Window); err != nil {
		return fmt.Errorf("%w: window %v: %w", ErrInvalid, f.Window, err)
	}
	return nil
}

func (f Filter) keeps(namespace, workload string) bool {
	return (f.Namespace == "" || f.Namespace == namespace) && (f.Workload == "" || f.Workload == workload)
}

// Traffic is what happened on one side of some traffic over a window. The
// pointer fields are null in JSON when there were no requests (or no
// latencies), rather than a misleading zero.
type Traffic struct {
	Requests      uint64 `json:"requests"`
	Failures      uint64 `json:"failures"`
	Denied        uint64 `json:"denied"`
	RateLimited   uint64 `json:"rate_limited"`
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
	// RequestsPerSecond is Requests over the part of the window the
	// reports cover.
	RequestsPerSecond float64 `json:"requests_per_second"`
	// SuccessRate is the share of requests that did not fail (0 to 1).
	SuccessRate *float64 `json:"success_rate"`
	// MTLSShare is the share of requests over mutual TLS (0 to 1).
	MTLSShare *float64 `json:"mtls_share"`
	// LatencyMs holds latency quantiles in milliseconds.
	LatencyMs *Latency `json:"latency_ms"`
}

// Latency holds latency quantiles, read from merged sketches (within
// about 10% of the true value).
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// WorkloadStat is one workload, all its instances of one identity
// together. A workload name is not tied to a service account: two
// identities of a namespace may register the same name, and their numbers
// are never mixed; each gets its own row.
type WorkloadStat struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Instances is the number of proxies that reported for it in the
	// window.
	Instances int `json:"instances"`
	// Identities holds the one SPIFFE ID its instances hold (a list for
	// compatibility).
	Identities []string `json:"identities"`
	// Inbound is what it served, as its own proxies saw it.
	Inbound Traffic `json:"inbound"`
	// Outbound is what it sent, as its own proxies saw it.
	Outbound Traffic `json:"outbound"`
	// Overflow is the traffic of the edges past its proxies' bound on
	// edges per report, either direction, on no edge of Graph.Edges.
	Overflow Traffic `json:"overflow"`
}

// Reporting sides of an edge (EdgeStat.ReportedBy).
const (
	BySource      = "source"
	ByDestination = "destination"
	ByBoth        = "both"
)

// EdgeEnd is one end of an edge. Fields are empty when unknown: a
// plaintext caller has no identity, a caller seen only by the destination
// has no known workload.
type EdgeEnd struct {
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	Identity  string `json:"identity"`
	// Service is the service the requests were for, "namespace/name"
	// (destination end only).
	Service string `json:"service,omitempty"`
}

// EdgeStat is one edge: who called whom, how it went, and whether it was
// encrypted and authorized.
type EdgeStat struct {
	Source      EdgeEnd `json:"source"`
	Destination EdgeEnd `json:"destination"`
	// ReportedBy says whose reports the numbers come from: "source",
	// "destination" or "both" (see Graph.Edges).
	ReportedBy string `json:"reported_by"`
	// MTLS is true when every request of the window went over mutual
	// TLS.
	MTLS bool `json:"mtls"`
	// Authorized is false when any request was denied by authorization.
	Authorized bool `json:"authorized"`
	// AuthorizedShare is the share of requests not denied (0 to 1).
	AuthorizedShare *float64 `json:"authorized_share"`
	Traffic
}

// Workloads returns the workloads the graph holds (every workload that
// reported in the last MaxWindow, with zeros when the window saw no
// traffic), one per namespace, name and identity, sorted by them. A
// workload's numbers come from its own proxies only:
// Inbound from their inbound summaries (the destination's view, which is
// the one that counts denials), Outbound from their outbound summaries
// (what the callers saw, failed connections included). No request is
// counted twice in either. Errors wrap ErrInvalid.
func (g *Graph) Workloads(f Filter) ([]WorkloadStat, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	type acc struct {
		stat               WorkloadStat
		ids                map[string]bool
		in, out, over      sum
		inMTLS, outMT, ovM uint64
	}
	type key struct {
		namespace, name string
		id              spiffeid.ID
	}
	byName := make(map[key]*acc)
	now := g.now()
	g.mu.Lock()
	g.expireLocked(now)
	for _, in := range g.instances {
		if !f.keeps(in.namespace, in.workload) {
			continue
		}
		k := key{in.namespace, in.workload, in.id}
		a := byName[k]
		if a == nil {
			a = &acc{stat: WorkloadStat{Namespace: in.namespace, Name: in.workload}, ids: map[string]bool{}}
			byName[k] = a
		}
		if now.Sub(in.lastSeen) < f.Window {
			a.stat.Instances++
			a.ids[in.id.String()] = true
		}
		for _, s := range in.series {
			w, ok := s.window(now, f.Window)
			if !ok {
				continue
			}
			side, mtls := &a.out, &a.outMT
			switch s.key.dir {
			case Inbound:
				side, mtls = &a.in, &a.inMTLS
			case Overflow:
				side, mtls = &a.over, &a.ovM
			}
			side.merge(&w)
			if s.key.mtls {
				*mtls += w.Requests
			}
		}
	}
	g.mu.Unlock()

	out := make([]WorkloadStat, 0, len(byName))
	for _, a := range byName {
		a.stat.Identities = slicesSorted(a.ids)
		a.stat.Inbound = traffic(&a.in, a.inMTLS)
		a.stat.Outbound = traffic(&a.out, a.outMT)
		a.stat.Overflow = traffic(&a.over, a.ovM)
		out = append(out, a.stat)
	}
	slices.SortFunc(out, func(a, b WorkloadStat) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			slices.Compare(a.Identities, b.Identities))
	})
	return out, nil
}

// Known reports whether workload namespace/name reported at any time in
// the last MaxWindow, so that an empty answer can tell "no traffic now"
// from "no such workload".
func (g *Graph) Known(namespace, name string) bool {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(now)
	for _, in := range g.instances {
		if in.namespace == namespace && in.workload == name {
			return true
		}
	}
	return false
}

// sideKey aggregates one side's series over instances: the reporting
// workload and identity, and the series key but for mTLS.
type sideKey struct {
	namespace, workload string
	id                  spiffeid.ID
	peerID              spiffeid.ID
	peerWorkload        string
	service             string
}

type sideSum struct {
	key  sideKey
	sum  sum
	mtls uint64 // requests over mTLS
	// matched, on an outbound sum: its destination's inbound sums, and
	// the share of their denials attributed to it.
	matched          bool
	inDenied, inRate float64
	destWorkload     string // the destination workload learnt from a match
}

// Edges returns the edges with traffic in the window, sorted by source
// then destination. An edge is seen by up to two proxies, and its numbers
// are never added up from both:
//
//   - When the caller's proxy reported it (ReportedBy "source" or
//     "both"), requests, failures, latency, bytes and mTLS come from the
//     caller's side: what the app that called saw, connections that never
//     reached the destination included.
//   - Denials and rate limiting are decided by the destination's proxy:
//     when both sides reported, the edge shows the larger of the caller's
//     count and the destination's (a destination's inbound summary from one
//     caller identity is shared among that identity's caller workloads in
//     proportion to their requests).
//   - When only the destination reported it (ReportedBy "destination"):
//     a plaintext caller without a proxy, or a caller whose proxy does not
//     report, everything comes from the destination's side, and the
//     source's workload is unknown unless the destination named it.
//
// An outbound summary matches an inbound one when the caller's identity is
// the inbound peer identity, the destination's identity is the outbound
// peer identity, the workload names agree where both are known, and so do
// the services. Errors wrap ErrInvalid.
func (g *Graph) Edges(f Filter) ([]EdgeStat, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	outs := map[sideKey]*sideSum{}
	ins := map[sideKey]*sideSum{}
	now := g.now()
	g.mu.Lock()
	g.expireLocked(now)
	for _, in := range g.instances {
		for _, s := range in.series {
			if s.key.dir == Overflow {
				continue // on no edge
			}
			w, ok := s.window(now, f.Window)
			if !ok {
				continue
			}
			k := sideKey{namespace: in.namespace, workload: in.workload, id: in.id,
				peerID: s.key.peerID, peerWorkload: s.key.peerWorkload, service: s.key.service}
			m := outs
			if s.key.dir == Inbound {
				m = ins
			}
			a := m[k]
			if a == nil {
				a = &sideSum{key: k}
				m[k] = a
			}
			a.sum.merge(&w)
			if s.key.mtls {
				a.mtls += w.Requests
			}
		}
	}
	g.mu.Unlock()

	// The outbound sums by (caller, callee) identity: an inbound sum's
	// candidates are those of (its peer, itself).
	byPair := make(map[[2]spiffeid.ID][]*sideSum, len(outs))
	for _, o := range outs {
		if o.key.peerID.IsZero() {
			continue // matches nothing
		}
		k := [2]spiffeid.ID{o.key.id, o.key.peerID}
		byPair[k] = append(byPair[k], o)
	}
	var edges []EdgeStat
	var matches []*sideSum
	for _, in := range ins {
		matches = matches[:0]
		var total uint64
		if !in.key.peerID.IsZero() {
			for _, o := range byPair[[2]spiffeid.ID{in.key.peerID, in.key.id}] {
				if matchEdge(o, in) {
					matches = append(matches, o)
					total += o.sum.Requests
				}
			}
		}
		if len(matches) == 0 {
			e := edgeFromInbound(in)
			if f.keepsEdge(&e) {
				edges = append(edges, e)
			}
			continue
		}
		// The destination may have seen more from the identity than its
		// reporting callers sent: a workload of the same identity whose
		// proxy does not report. Beyond what the two sides' intervals
		// falling differently explain, the rest is its own edge.
		var rest uint64
		if in.sum.Requests > total+remainderSlack(in, f.Window) {
			rest = in.sum.Requests - total
		}
		denom := float64(total + rest)
		for _, o := range matches {
			share := 1 / float64(len(matches))
			if denom > 0 {
				share = float64(o.sum.Requests) / denom
			}
			o.matched = true
			o.inDenied += share * float64(in.sum.Denied)
			o.inRate += share * float64(in.sum.RateLimited)
			if o.key.peerWorkload == "" {
				o.destWorkload = in.key.workload
			}
		}
		if rest > 0 {
			e := edgeFromInbound(in.part(rest))
			if f.keepsEdge(&e) {
				edges = append(edges, e)
			}
		}
	}
	for _, o := range outs {
		e := edgeFromOutbound(o)
		if f.keepsEdge(&e) {
			edges = append(edges, e)
		}
	}
	slices.SortFunc(edges, func(a, b EdgeStat) int {
		return cmp.Or(
			cmp.Compare(a.Source.Namespace, b.Source.Namespace), cmp.Compare(a.Source.Workload, b.Source.Workload),
			cmp.Compare(a.Source.Identity, b.Source.Identity),
			cmp.Compare(a.Destination.Namespace, b.Destination.Namespace), cmp.Compare(a.Destination.Workload, b.Destination.Workload),
			cmp.Compare(a.Destination.Service, b.Destination.Service), cmp.Compare(a.Destination.Identity, b.Destination.Identity),
			cmp.Compare(a.ReportedBy, b.ReportedBy),
		)
	})
	return edges, nil
}

// remainderSlack is how many more requests the destination may count from
// an identity than its reporting callers did, in window w, without a
// caller that does not report: the two sides' intervals end at different
// moments, so one report interval's worth may fall inside the window on
// one side only.
func remainderSlack(in *sideSum, w time.Duration) uint64 {
	if w <= 0 {
		return 16
	}
	return 16 + uint64(float64(in.sum.Requests)*min(1, in.sum.interval.Seconds()/w.Seconds()))
}

// part is in scaled down to n of its requests: counts and bytes in
// proportion; the latency sketch is the destination's for all of them.
func (in *sideSum) part(n uint64) *sideSum {
	p := &sideSum{key: in.key, sum: in.sum}
	if in.sum.Requests == 0 {
		return p
	}
	r := float64(n) / float64(in.sum.Requests)
	scale := func(v uint64) uint64 { return uint64(math.Round(float64(v) * r)) }
	p.sum.Counts = Counts{
		Requests: n, Failures: scale(in.sum.Failures), Denied: scale(in.sum.Denied), RateLimited: scale(in.sum.RateLimited),
		BytesSent: scale(in.sum.BytesSent), BytesReceived: scale(in.sum.BytesReceived),
	}
	p.mtls = scale(in.mtls)
	return p
}

func (f Filter) keepsEdge(e *EdgeStat) bool {
	return f.keeps(e.Source.Namespace, e.Source.Workload) || f.keeps(e.Destination.Namespace, e.Destination.Workload)
}

// matchEdge reports whether outbound summary o and inbound summary in are
// the two sides of one edge.
func matchEdge(o, in *sideSum) bool {
	if o.key.peerID.IsZero() || in.key.peerID.IsZero() {
		return false // no identity on one side: nothing proves it is the same edge
	}
	return o.key.peerID == in.key.id && in.key.peerID == o.key.id &&
		(o.key.peerWorkload == "" || o.key.peerWorkload == in.key.workload) &&
		(in.key.peerWorkload == "" || in.key.peerWorkload == o.key.workload) &&
		(o.key.service == "" || in.key.service == "" || o.key.service == in.key.service)
}

func edgeFromOutbound(o *sideSum) EdgeStat {
	e := EdgeStat{
		Source: EdgeEnd{Namespace: o.key.namespace, Workload: o.key.workload, Identity: o.key.id.String()},
		Destination: EdgeEnd{
			Namespace: namespaceOf(o.key.peerID),
			Workload:  cmp.Or(o.key.peerWorkload, o.destWorkload),
			Identity:  idString(o.key.peerID),
			Service:   o.key.service,
		},
		ReportedBy: BySource,
	}
	if o.matched {
		e.ReportedBy = ByBoth
		// The destination decides denials: never show fewer than it saw.
		o.sum.Denied = max(o.sum.Denied, min(uint64(math.Round(o.inDenied)), o.sum.Requests))
		o.sum.RateLimited = max(o.sum.RateLimited, min(uint64(math.Round(o.inRate)), o.sum.Requests))
	}
	e.finish(&o.sum, o.mtls)
	return e
}

func edgeFromInbound(in *sideSum) EdgeStat {
	e := EdgeStat{
		Source: EdgeEnd{Namespace: namespaceOf(in.key.peerID), Workload: in.key.peerWorkload, Identity: idString(in.key.peerID)},
		Destination: EdgeEnd{
			Namespace: in.key.namespace,
			Workload:  in.key.workload,
			Identity:  in.key.id.String(),
			Service:   in.key.service,
		},
		ReportedBy: ByDestination,
	}
	e.finish(&in.sum, in.mtls)
	return e
}

func (e *EdgeStat) finish(s *sum, mtls uint64) {
	e.Traffic = traffic(s, mtls)
	e.MTLS = s.Requests > 0 && mtls == s.Requests
	e.Authorized = s.Denied == 0
	if s.Requests > 0 {
		e.AuthorizedShare = ratio(s.Requests-min(s.Denied, s.Requests), s.Requests)
	}
}

func traffic(s *sum, mtls uint64) Traffic {
	t := Traffic{
		Requests:      s.Requests,
		Failures:      s.Failures,
		Denied:        s.Denied,
		RateLimited:   s.RateLimited,
		BytesSent:     s.BytesSent,
		BytesReceived: s.BytesReceived,
	}
	if s.span > 0 {
		t.RequestsPerSecond = float64(s.Requests) / s.span.Seconds()
	}
	if s.Requests > 0 {
		t.SuccessRate = ratio(s.Requests-min(s.Failures, s.Requests), s.Requests)
		t.MTLSShare = ratio(min(mtls, s.Requests), s.Requests)
	}
	if s.latency.Count() > 0 {
		t.LatencyMs = &Latency{
			P50: s.latency.Quantile(0.50) * 1000,
			P95: s.latency.Quantile(0.95) * 1000,
			P99: s.latency.Quantile(0.99) * 1000,
		}
	}
	return t
}

func ratio(a, b uint64) *float64 {
	r := float64(a) / float64(b)
	return &r
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

func slicesSorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
