package controlplane

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
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
	// covers.
	MinReportInterval = time.Second
	MaxReportInterval = time.Minute
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
)

var telemetryRefusals = []string{
	meshtls.ReasonNoCertificate, meshtls.ReasonUnknownAuthority, meshtls.ReasonExpired,
	meshtls.ReasonNotYetValid, meshtls.ReasonUntrustedDomain, meshtls.ReasonBadCertificate,
	meshtls.ReasonHandshake, WatchNotWorkload, TelemetryNotRegistered, TelemetryTooFast,
}

// streamSeq numbers report streams: each is one graph instance.
var streamSeq atomic.Uint64

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

	s.tmetrics.streams.Inc()
	defer s.tmetrics.streams.Dec()
	instance := c.addr + "#" + strconv.FormatUint(streamSeq.Add(1), 10)
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
		rep, reason, err := toGraphReport(r, now)
		if err != nil {
			s.dropReport(log, logged, reason, err)
			continue
		}
		rep.Instance, rep.ID, rep.Namespace = instance, id, ns
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

// toGraphReport validates r, received at now, and converts it; on error it
// returns the reason label and what to fix.
func toGraphReport(r *meshv1.TelemetryReport, now time.Time) (graph.Report, string, error) {
	var rep graph.Report
	if r.GetStart() == nil || r.GetInterval() == nil {
		return rep, ReportBadInterval, errors.New("start and interval are required")
	}
	if err := r.GetStart().CheckValid(); err != nil {
		return rep, ReportBadTime, fmt.Errorf("start: %w", err)
	}
	if err := r.GetInterval().CheckValid(); err != nil {
		return rep, ReportBadInterval, fmt.Errorf("interval: %w", err)
	}
	interval := r.GetInterval().AsDuration()
	if interval < MinReportInterval || interval > MaxReportInterval {
		return rep, ReportBadInterval, fmt.Errorf("interval %v: want %v to %v", interval, MinReportInterval, MaxReportInterval)
	}
	end := r.GetStart().AsTime().Add(interval)
	rep.End = end
	if skew := now.Sub(end); skew > MaxReportSkew || skew < -MaxReportSkew {
		return rep, ReportBadTime, fmt.Errorf("interval ends at %s, %v from the controller's clock (at most %v): check the proxy's clock",
			end.UTC().Format(time.RFC3339), skew.Round(time.Second), MaxReportSkew)
	}
	if n := len(r.GetEdges()); n > MaxReportEdges {
		return rep, ReportTooManyEdges, fmt.Errorf("%d edges, at most %d", n, MaxReportEdges)
	}
	maxRequests := uint64(interval.Seconds() * MaxEdgeRequestsPerSecond)
	rep.Workload = r.GetWorkload()
	rep.Interval = interval
	rep.Edges = make([]graph.EdgeReport, 0, len(r.GetEdges()))
	for i, e := range r.GetEdges() {
		ge, reason, err := toGraphEdge(e, maxRequests)
		if err != nil {
			return graph.Report{}, reason, fmt.Errorf("edge %d: %w", i, err)
		}
		rep.Edges = append(rep.Edges, ge)
	}
	return rep, "", nil
}

func toGraphEdge(e *meshv1.EdgeSummary, maxRequests uint64) (graph.EdgeReport, string, error) {
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
	if err := checkRequestCounts(e); err != nil {
		return ge, ReportBadEdge, err
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
	lat, err := sketch.FromProto(e.GetLatency())
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

// checkRequestCounts checks the per-route counts of an edge against the
// bounds a proxy keeps to.
func checkRequestCounts(e *meshv1.EdgeSummary) error {
	rcs := e.GetRequestCounts()
	if len(rcs) > MaxRequestCounts {
		return fmt.Errorf("%d request counts, at most %d", len(rcs), MaxRequestCounts)
	}
	for i, rc := range rcs {
		switch {
		case rc.GetMethod() == "" || len(rc.GetMethod()) > maxMethodLen:
			return fmt.Errorf("request count %d: method %q: want an HTTP method or OTHER", i, rc.GetMethod())
		case len(rc.GetPath()) > maxPathLen || !utf8.ValidString(rc.GetPath()):
			return fmt.Errorf("request count %d: path: want at most %d bytes of UTF-8", i, maxPathLen)
		case rc.GetStatusClass() > maxStatusClass:
			return fmt.Errorf("request count %d: status class %d: want 0 to %d", i, rc.GetStatusClass(), maxStatusClass)
		}
	}
	return nil
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
