package controlplane

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
	"github.com/rampart-mesh/rampart/internal/telemetry/sketch"
)

// Bounds on telemetry reports. A report outside them is dropped and
// counted; the stream goes on.
const (
	// MinReportInterval and MaxReportInterval bound the interval a report
	// covers: a proxy reports every 1 s to 1 min, and its ticker may fire
	// a little early.
	MinReportInterval = 900 * time.Millisecond
	MaxReportInterval = time.Minute + time.Second
	// MaxReportSkew bounds how far the end of a report's interval may be
	// from the controller's clock, either way.
	MaxReportSkew = 5 * time.Minute
	// MaxReportEdges bounds the edges of one report (a proxy sends at
	// most 2,000 and one overflow entry by default).
	MaxReportEdges = 4096
	// MaxRequestCounts bounds the per-route counts of one edge, and
	// maxMethodLen, maxPathLen and maxStatusClass their fields.
	MaxRequestCounts = 64
	maxMethodLen     = 16
	maxPathLen       = 128
	maxStatusClass   = 5
	// MaxEdgeRequestsPerSecond bounds the requests one edge may claim per
	// second of interval: more is not a real proxy's count.
	MaxEdgeRequestsPerSecond = 10_000_000
	// maxServiceLen bounds a "namespace/name" service reference.
	maxServiceLen = 2*63 + 1
)

// The rate a report stream may send at: one report per ReportRate on
// average, ReportBurst at once (a proxy that reconnects sends the reports
// it queued meanwhile, a minute's worth, at once). A report over the rate
// is dropped; a stream that sends maxRateDrops in a row over it is refused.
const (
	ReportRate   = time.Second
	ReportBurst  = 20
	maxRateDrops = 10
)

// Results and reasons of rampart_controller_telemetry_reports_total.
const (
	ReportAccepted = "accepted"
	ReportDropped  = "dropped"

	ReportBadInterval  = "bad_interval"
	ReportBadTime      = "bad_time"
	ReportTooManyEdges = "too_many_edges"
	ReportBadEdge      = "bad_edge"
	ReportBadPeer      = "bad_peer"
	ReportBadCounts    = "bad_counts"
	ReportBadSketch    = "bad_sketch"
	ReportBadWorkload  = "bad_workload"
	ReportRateLimited  = "rate_limited"
)

var reportReasons = []string{
	ReportBadInterval, ReportBadTime, ReportTooManyEdges, ReportBadEdge, ReportBadPeer,
	ReportBadCounts, ReportBadSketch, ReportBadWorkload, ReportRateLimited,
}

// Reasons a Report stream is refused, besides the certificate reasons of
// meshtls and WatchNotWorkload: the "reason" label of
// rampart_controller_telemetry_streams_refused_total.
const (
	// TelemetryNotRegistered: the report names a workload that the
	// caller's identity has not registered with Watch.
	TelemetryNotRegistered = "not_registered"
	// TelemetryTooFast: the stream kept sending over the rate.
	TelemetryTooFast = "too_fast"
	// TelemetryTooManyStreams: the identity holds MaxStreamsPerIdentity
	// streams already.
	TelemetryTooManyStreams = "too_many_streams"
)

var telemetryRefusals = []string{
	meshtls.ReasonNoCertificate, meshtls.ReasonUnknownAuthority, meshtls.ReasonExpired,
	meshtls.ReasonNotYetValid, meshtls.ReasonUntrustedDomain, meshtls.ReasonBadCertificate,
	meshtls.ReasonHandshake, WatchNotWorkload, TelemetryNotRegistered, TelemetryTooFast,
	TelemetryTooManyStreams,
}

// MaxStreamsPerIdentity bounds the Report streams one identity may hold
// open at once: every replica of a service account holds one, and a
// proxy that reconnects holds two for a moment. A stream past it is
// refused with ResourceExhausted (reason too_many_streams).
const MaxStreamsPerIdentity = 512

// streamLimit counts the open Report streams of each identity.
type streamLimit struct {
	max int

	mu   sync.Mutex
	open map[spiffeid.ID]int // guarded by mu
}

func newStreamLimit(max int) *streamLimit {
	return &streamLimit{max: max, open: make(map[spiffeid.ID]int)}
}

// acquire counts a stream of id open, unless id holds max already.
func (l *streamLimit) acquire(id spiffeid.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[id] >= l.max {
		return false
	}
	l.open[id]++
	return true
}

// release counts a stream of id closed.
func (l *streamLimit) release(id spiffeid.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[id]--; l.open[id] <= 0 {
		delete(l.open, id)
	}
}

// instanceKey names the graph instance of a proxy: its identity, the
// workload it reports for and the address it connects from (not the
// port), so that a proxy that reconnects is the same instance and the
// instances of an identity are bounded by its workloads and addresses.
func instanceKey(id spiffeid.ID, workload, addr string) string {
	host := addr
	if ip := peerIP(addr); ip.IsValid() {
		host = ip.String()
	}
	return id.String() + " " + workload + " " + host
}

type telemetryService struct {
	meshv1.UnimplementedTelemetryServer
	s *Server
}

// reportOrErr is what the receiving goroutine hands to the handler.
type reportOrErr struct {
	r   *meshv1.TelemetryReport
	err error
}

// Report implements meshv1.TelemetryServer: it admits a caller with a valid
// workload SVID, then validates each report, records it in the graph and
// counts it. A bad report is dropped and the stream goes on; a report
// naming a workload the caller did not register ends the stream with
// PermissionDenied.
func (ts telemetryService) Report(stream grpc.ClientStreamingServer[meshv1.TelemetryReport, meshv1.TelemetryAck]) error {
	s := ts.s
	ctx := stream.Context()
	c := callerOf(ctx)
	refuse := func(code codes.Code, reason string, id spiffeid.ID, err error, msg string) error {
		s.tmetrics.refused.WithLabelValues(reason).Inc()
		attrs := []any{"peer", c.addr, "reason", reason}
		if !id.IsZero() {
			attrs = append(attrs, "spiffe_id", id.String())
		}
		if err != nil {
			attrs = append(attrs, "error", err.Error())
		}
		s.logger.Warn("telemetry stream refused", attrs...)
		return status.Error(code, msg)
	}

	id, err := meshtls.VerifyPeer(c.certs, s.bundle, s.now())
	if err != nil {
		reason := watchReason(meshtls.Reason(err))
		msg := "client certificate refused (" + reason + "): " + err.Error()
		if errors.Is(err, meshtls.ErrNoCertificate) {
			msg = "client certificate required: Report needs the SVID issued by Identity.Certify"
		}
		return refuse(codes.Unauthenticated, reason, spiffeid.ID{}, err, msg)
	}
	ns, _, err := identity.ParseWorkloadID(id)
	if err != nil || id.TrustDomain() != s.ca.TrustDomain() {
		if err == nil {
			err = fmt.Errorf("trust domain %q is not %q", id.TrustDomain(), s.ca.TrustDomain())
		}
		return refuse(codes.PermissionDenied, WatchNotWorkload, id, err,
			"identity "+id.String()+" is not a workload identity of trust domain "+s.ca.TrustDomain().String())
	}
	if err := s.peerRevoked(c.certs[0]); err != nil {
		return refuse(codes.PermissionDenied, meshtls.ReasonRevoked, id, err, "client certificate revoked: "+err.Error())
	}

	if !s.tmetrics.perIdentity.acquire(id) {
		return refuse(codes.ResourceExhausted, TelemetryTooManyStreams, id, nil,
			fmt.Sprintf("identity %s holds %d report streams already, the most one identity may: close the streams it does not use", id, s.tmetrics.perIdentity.max))
	}
	defer s.tmetrics.perIdentity.release(id)
	s.tmetrics.streams.Inc()
	defer s.tmetrics.streams.Dec()
	log := s.logger.With("peer", c.addr, "spiffe_id", id.String())
	log.Debug("telemetry stream started")

	// Recv blocks; the handler must still end on a drain or when the
	// certificate expires, so that a graceful stop never waits on an idle
	// proxy. The receiver ends when the handler returns (the stream's
	// context is then cancelled).
	reports := make(chan reportOrErr)
	go func() {
		for {
			r, err := stream.Recv()
			select {
			case reports <- reportOrErr{r, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	expiry := time.NewTimer(c.certs[0].NotAfter.Sub(s.now()))
	defer expiry.Stop()

	limit := newTokenBucket(s.now(), ReportRate, ReportBurst)
	logged := map[string]bool{} // reasons already logged on this stream
	drops := 0                  // reports dropped in a row for their rate
	for {
		var r *meshv1.TelemetryReport
		select {
		case m := <-reports:
			if m.err != nil {
				if errors.Is(m.err, io.EOF) {
					log.Debug("telemetry stream ended")
					return stream.SendAndClose(&meshv1.TelemetryAck{})
				}
				return m.err
			}
			r = m.r
		case <-ctx.Done():
			return nil
		case <-expiry.C:
			return status.Error(codes.Unavailable, "client certificate expired; reconnect with the renewed certificate")
		case <-s.draining:
			return status.Error(codes.Unavailable, "controller shutting down; reconnect")
		}

		// A revocation after the stream opened ends it at the next report.
		if err := s.peerRevoked(c.certs[0]); err != nil {
			return refuse(codes.PermissionDenied, meshtls.ReasonRevoked, id, err, "client certificate revoked: "+err.Error())
		}
		now := s.now()
		if !limit.take(now) {
			s.tmetrics.reports.WithLabelValues(ReportDropped, ReportRateLimited).Inc()
			if drops++; drops >= maxRateDrops {
				return refuse(codes.ResourceExhausted, TelemetryTooFast, id, nil,
					fmt.Sprintf("%d reports in a row over the rate of one per %v: report every few seconds", drops, ReportRate))
			}
			continue
		}
		drops = 0
		if err := identity.ValidateName(r.GetWorkload()); err != nil {
			s.dropReport(log, logged, ReportBadWorkload, fmt.Errorf("workload %q: %w", r.GetWorkload(), err))
			continue
		}
		if !s.model.Registered(id, r.GetWorkload()) {
			return refuse(codes.PermissionDenied, TelemetryNotRegistered, id, nil,
				fmt.Sprintf("workload %q is not registered by %s: open the Discovery Watch stream for it first", r.GetWorkload(), id))
		}
		rep, skipped, reason, err := toGraphReport(r, now)
		if err != nil {
			s.dropReport(log, logged, reason, err)
			continue
		}
		s.skipRequestCounts(log, logged, skipped)
		rep.Instance, rep.ID, rep.Namespace = instanceKey(id, r.GetWorkload(), c.addr), id, ns
		if len(rep.Edges) == 0 {
			// Nothing to record (a proxy sends no report for an idle
			// interval); the instance is known all the same.
			rep.Edges = nil
		}
		if err := s.telemetry.Add(rep); err != nil {
			s.dropReport(log, logged, ReportBadWorkload, err)
			continue
		}
		s.tmetrics.reports.WithLabelValues(ReportAccepted, "").Inc()
		s.observeReport(log, logged, r, rep, id, ns)
	}
}

// dropReport counts a dropped report and logs the first drop for each
// reason on a stream.
func (s *Server) dropReport(log interface{ Warn(string, ...any) }, logged map[string]bool, reason string, err error) {
	s.tmetrics.reports.WithLabelValues(ReportDropped, reason).Inc()
	if !logged[reason] {
		logged[reason] = true
		log.Warn("telemetry report dropped; later drops for the same reason on this stream are only counted",
			"reason", reason, "error", err.Error())
	}
}

// skippedCounts counts the per-route request counts of a report that were
// skipped, by reason (the "reason" label of
// rampart_controller_telemetry_request_counts_skipped_total), with the
// first skip's error.
type skippedCounts struct {
	n     map[string]int
	first error
}

func (sc *skippedCounts) skip(reason string, err error) {
	if sc.n == nil {
		sc.n = map[string]int{}
	}
	sc.n[reason]++
	if sc.first == nil {
		sc.first = err
	}
}

// skipRequestCounts counts the request counts skipped from an accepted
// report and logs the first skip on a stream.
func (s *Server) skipRequestCounts(log interface{ Warn(string, ...any) }, logged map[string]bool, sc skippedCounts) {
	for reason, n := range sc.n {
		s.tmetrics.skipped.WithLabelValues(reason).Add(float64(n))
	}
	if sc.first != nil && !logged["request_counts"] {
		logged["request_counts"] = true
		log.Warn("telemetry request counts skipped, the rest of the report kept; later skips on this stream are only counted",
			"error", sc.first.Error())
	}
}

// toGraphReport validates r, received at now, and converts it; on error it
// returns the reason label and what to fix. A bad per-route request count
// does not drop the report: it is skipped and counted in skipped, so that
// one odd request cannot hide a workload's whole interval.
func toGraphReport(r *meshv1.TelemetryReport, now time.Time) (rep graph.Report, skipped skippedCounts, reason string, err error) {
	if r.GetStart() == nil || r.GetInterval() == nil {
		return rep, skipped, ReportBadInterval, errors.New("start and interval are required")
	}
	if err := r.GetStart().CheckValid(); err != nil {
		return rep, skipped, ReportBadTime, fmt.Errorf("start: %w", err)
	}
	if err := r.GetInterval().CheckValid(); err != nil {
		return rep, skipped, ReportBadInterval, fmt.Errorf("interval: %w", err)
	}
	interval := r.GetInterval().AsDuration()
	if interval < MinReportInterval || interval > MaxReportInterval {
		return rep, skipped, ReportBadInterval, fmt.Errorf("interval %v: want %v to %v", interval, MinReportInterval, MaxReportInterval)
	}
	end := r.GetStart().AsTime().Add(interval)
	rep.End = end
	if skew := now.Sub(end); skew > MaxReportSkew || skew < -MaxReportSkew {
		return rep, skipped, ReportBadTime, fmt.Errorf("interval ends at %s, %v from the controller's clock (at most %v): check the proxy's clock",
			end.UTC().Format(time.RFC3339), skew.Round(time.Second), MaxReportSkew)
	}
	if n := len(r.GetEdges()); n > MaxReportEdges {
		return rep, skipped, ReportTooManyEdges, fmt.Errorf("%d edges, at most %d", n, MaxReportEdges)
	}
	maxRequests := uint64(interval.Seconds() * MaxEdgeRequestsPerSecond)
	rep.Workload = r.GetWorkload()
	rep.Interval = interval
	rep.Edges = make([]graph.EdgeReport, 0, len(r.GetEdges()))
	for i, e := range r.GetEdges() {
		ge, reason, err := toGraphEdge(e, maxRequests, &skipped)
		if err != nil {
			return graph.Report{}, skippedCounts{}, reason, fmt.Errorf("edge %d: %w", i, err)
		}
		rep.Edges = append(rep.Edges, ge)
	}
	return rep, skipped, "", nil
}

func toGraphEdge(e *meshv1.EdgeSummary, maxRequests uint64, skipped *skippedCounts) (graph.EdgeReport, string, error) {
	var ge graph.EdgeReport
	switch d := e.GetDirection(); {
	case e.GetOverflow():
		// The edges past the proxy's bound, folded into one entry.
		if d != meshv1.Direction_DIRECTION_UNSPECIFIED || e.GetPeerSpiffeId() != "" || e.GetPeerWorkload() != "" || e.GetService() != "" {
			return ge, ReportBadEdge, errors.New("an overflow entry has no direction, peer or service")
		}
		ge.Direction = graph.Overflow
	case d == meshv1.Direction_DIRECTION_INBOUND:
		ge.Direction = graph.Inbound
	case d == meshv1.Direction_DIRECTION_OUTBOUND:
		ge.Direction = graph.Outbound
	default:
		return ge, ReportBadEdge, fmt.Errorf("direction %v: want inbound or outbound", d)
	}
	if p := e.GetPeerSpiffeId(); p != "" {
		id, err := spiffeid.FromString(p)
		if err != nil {
			return ge, ReportBadPeer, fmt.Errorf("peer identity %q: %w", p, err)
		}
		ge.PeerID = id
	}
	if w := e.GetPeerWorkload(); w != "" {
		if err := identity.ValidateName(w); err != nil {
			return ge, ReportBadPeer, fmt.Errorf("peer workload %q: %w", w, err)
		}
		ge.PeerWorkload = w
	}
	if svc := e.GetService(); svc != "" {
		ns, name, ok := strings.Cut(svc, "/")
		if len(svc) > maxServiceLen || !ok || identity.ValidateName(ns) != nil || identity.ValidateName(name) != nil {
			return ge, ReportBadEdge, fmt.Errorf("service %q: want namespace/name", svc)
		}
		ge.Service = svc
	}
	checkRequestCounts(e, skipped)
	if rcs := e.GetRequestCounts(); len(rcs) > 0 {
		ge.Routes = make([]graph.RouteCount, len(rcs))
		for i, rc := range rcs {
			ge.Routes[i] = graph.RouteCount{
				Method: rc.GetMethod(), Path: rc.GetPath(), Truncated: rc.GetTruncated(),
				StatusClass: uint8(rc.GetStatusClass()), Count: rc.GetCount(),
			}
		}
	}
	ge.MTLS = e.GetMtls()
	ge.Counts = graph.Counts{
		Requests: e.GetRequests(), Failures: e.GetFailures(), Denied: e.GetDenied(), RateLimited: e.GetRateLimited(),
		BytesSent: e.GetBytesSent(), BytesReceived: e.GetBytesReceived(),
	}
	n := ge.Requests
	limit := n + straddle(n)
	switch {
	case n > maxRequests:
		return ge, ReportBadCounts, fmt.Errorf("%d requests, more than %d per second of interval", n, MaxEdgeRequestsPerSecond)
	case ge.Failures > limit || ge.Denied > limit || ge.RateLimited > limit:
		return ge, ReportBadCounts, fmt.Errorf("failures %d, denied %d, rate limited %d: none may exceed the %d requests",
			ge.Failures, ge.Denied, ge.RateLimited, n)
	}
	// Within the straddle: the excess belongs to the next interval.
	ge.Failures, ge.Denied, ge.RateLimited = min(ge.Failures, n), min(ge.Denied, n), min(ge.RateLimited, n)
	lat, err := sketch.Decode(e.GetLatency().GetCounts(), e.GetLatency().GetSumSeconds())
	if err != nil {
		return ge, ReportBadSketch, err
	}
	if c := lat.Count(); c > limit {
		return ge, ReportBadSketch, fmt.Errorf("latency sketch holds %d latencies for %d requests", c, n)
	}
	if lat.Count() > 0 {
		ge.Latency = lat
	}
	return ge, "", nil
}

// straddle is how far a count may exceed an edge's n requests: a proxy
// takes its counters one after the other, so the few requests that end
// while it does may have their failure or latency counted in this interval
// and the request itself in the next. Beyond it, a count is refused.
func straddle(n uint64) uint64 { return 16 + n/100 }

// Reasons a per-route request count is skipped: the "reason" label of
// rampart_controller_telemetry_request_counts_skipped_total.
const (
	SkipTooManyCounts  = "too_many"
	SkipBadMethod      = "bad_method"
	SkipBadPath        = "bad_path"
	SkipBadStatusClass = "bad_status_class"
)

var skipReasons = []string{SkipTooManyCounts, SkipBadMethod, SkipBadPath, SkipBadStatusClass}

// checkRequestCounts checks the per-route counts of an edge against the
// bounds a proxy keeps to, and removes and counts in skipped those
// outside them (the counts past MaxRequestCounts among them). The edge's
// totals stay: they do not depend on the per-route counts.
func checkRequestCounts(e *meshv1.EdgeSummary, skipped *skippedCounts) {
	rcs := e.GetRequestCounts()
	kept := rcs[:0]
	for i, rc := range rcs {
		switch {
		case len(kept) >= MaxRequestCounts:
			skipped.skip(SkipTooManyCounts, fmt.Errorf("request count %d: past the %d an edge may carry", i, MaxRequestCounts))
		case rc.GetMethod() == "" || len(rc.GetMethod()) > maxMethodLen:
			skipped.skip(SkipBadMethod, fmt.Errorf("request count %d: method %q: want an HTTP method or OTHER", i, rc.GetMethod()))
		case len(rc.GetPath()) > maxPathLen || !utf8.ValidString(rc.GetPath()):
			skipped.skip(SkipBadPath, fmt.Errorf("request count %d: path: want at most %d bytes of UTF-8, got %d", i, maxPathLen, len(rc.GetPath())))
		case rc.GetStatusClass() > maxStatusClass:
			skipped.skip(SkipBadStatusClass, fmt.Errorf("request count %d: status class %d: want 0 to %d", i, rc.GetStatusClass(), maxStatusClass))
		default:
			kept = append(kept, rc)
		}
	}
	clear(rcs[len(kept):])
	e.RequestCounts = kept
}

// tokenBucket is a rate limit on one stream's reports; not safe for
// concurrent use.
type tokenBucket struct {
	tokens float64
	last   time.Time
	every  time.Duration
	burst  float64
}

func newTokenBucket(now time.Time, every time.Duration, burst int) *tokenBucket {
	return &tokenBucket{tokens: float64(burst), last: now, every: every, burst: float64(burst)}
}

// take reports whether a report at now is within the rate, and spends a
// token if so.
func (b *tokenBucket) take(now time.Time) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+float64(d)/float64(b.every))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
