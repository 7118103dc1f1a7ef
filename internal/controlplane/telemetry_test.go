package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
	"github.com/rampart-mesh/rampart/internal/telemetry/sketch"
)

// telemetryEnv is a control plane with the Telemetry service, on its own
// listener, sharing env's CA, tokens and model, on a settable clock.
type telemetryEnv struct {
	*env
	clock *clock
	graph *graph.Graph
	srv   *Server
	reg   *prometheus.Registry
}

func newTelemetryEnv(t *testing.T) *telemetryEnv {
	t.Helper()
	te, _ := newRevocableTelemetryEnv(t)
	return te
}

// newRevocableTelemetryEnv is newTelemetryEnv with a revocation set the
// test replaces (nil: nothing is revoked).
func newRevocableTelemetryEnv(t *testing.T, opts ...func(*Config)) (*telemetryEnv, *atomic.Pointer[meshtls.RevocationSet]) {
	t.Helper()
	e := newEnv(t)
	c := &clock{t: time.Now()}
	g, err := graph.New(graph.Config{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	revoked := new(atomic.Pointer[meshtls.RevocationSet])
	reg := prometheus.NewRegistry()
	cfg := Config{CA: e.ca, Tokens: e.tokens, Model: e.model, Bundle: e.bundle, Registerer: reg,
		SVIDTTL: time.Hour, Now: c.Now, Telemetry: g, EndpointGrace: -1, ReconnectGrace: -1,
		Revocations: revoked.Load}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := e.ca.IssueServing(key.Public(), e.serverID, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving := &meshtls.SVID{}
	if err := serving.Set(&x509svid.SVID{ID: e.serverID, Certificates: chain, PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(ServerCredentials(&tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving.Certificate() },
	})))
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	t.Cleanup(func() {
		srv.Drain()
		gs.GracefulStop()
		wg.Wait()
	})
	// The Watch streams opened by tests go to this server too.
	e.addr = lis.Addr().String()
	return &telemetryEnv{env: e, clock: c, graph: g, srv: srv, reg: reg}, revoked
}

// settle moves the clock on until the intervals reported so far are in
// complete buckets, which the graph's windows end with.
func (e *telemetryEnv) settle() {
	e.clock.Add(graph.BucketWidth + 5*time.Second + graph.ReportSlack + time.Second)
}

func (e *telemetryEnv) reports(t *testing.T, result, reason string) float64 {
	t.Helper()
	return metricValue(t, e.reg, "rampart_controller_telemetry_reports_total", map[string]string{"result": result, "reason": reason})
}

func (e *telemetryEnv) refusals(t *testing.T, reason string) float64 {
	t.Helper()
	return metricValue(t, e.reg, "rampart_controller_telemetry_streams_refused_total", map[string]string{"reason": reason})
}

func reportStream(t *testing.T, cc *grpc.ClientConn) grpc.ClientStreamingClient[meshv1.TelemetryReport, meshv1.TelemetryAck] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	stream, err := meshv1.NewTelemetryClient(cc).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// register opens a Watch stream for workload name with svid, so that the
// identity has registered it, and waits for its first configuration.
func (e *telemetryEnv) register(t *testing.T, cc *grpc.ClientConn, name string) {
	t.Helper()
	stream, _ := watch(t, cc, &meshv1.WatchRequest{Workload: &meshv1.Workload{Name: name, TunnelAddress: "127.0.0.1:15008"}})
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
}

func report(now time.Time, workload string, edges ...*meshv1.EdgeSummary) *meshv1.TelemetryReport {
	return &meshv1.TelemetryReport{
		Workload: workload,
		Start:    timestamppb.New(now.Add(-5 * time.Second)),
		Interval: durationpb.New(5 * time.Second),
		Edges:    edges,
	}
}

func outboundEdge(requests, failures uint64) *meshv1.EdgeSummary {
	var s sketch.Sketch
	for range requests {
		s.Observe(0.004)
	}
	return &meshv1.EdgeSummary{
		Direction: meshv1.Direction_DIRECTION_OUTBOUND, PeerSpiffeId: workloadID("shop", "api").String(),
		PeerWorkload: "api-1", Service: "shop/api", Mtls: true, Requests: requests, Failures: failures,
		Latency: latencyPB(&s),
	}
}

func TestTelemetryRecordsReports(t *testing.T) {
	e := newTelemetryEnv(t)
	id := workloadID("shop", "web")
	cc := e.dial(t, e.svidFor(t, id))
	e.register(t, cc, "web-1")

	stream := reportStream(t, cc)
	for range 3 {
		e.clock.Add(5 * time.Second)
		if err := stream.Send(report(e.clock.Now(), "web-1", outboundEdge(100, 10))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatalf("stream ended with %v, want an ack", err)
	}
	if got := e.reports(t, ReportAccepted, ""); got != 3 {
		t.Errorf("accepted %v reports, want 3", got)
	}
	e.settle()
	ws, err := e.graph.Workloads(graph.Filter{Namespace: "shop", Workload: "web-1"})
	if err != nil || len(ws) != 1 {
		t.Fatalf("graph: %+v, %v", ws, err)
	}
	out := ws[0].Outbound
	if out.Requests != 300 || out.Failures != 30 || out.MTLSShare == nil || *out.MTLSShare != 1 {
		t.Errorf("outbound %+v, want 300 requests, 30 failures, all mTLS", out)
	}
	if out.LatencyMs == nil || math.Abs(out.LatencyMs.P50-4) > 0.8 {
		t.Errorf("latency %+v, want about 4 ms", out.LatencyMs)
	}
	if got := ws[0].Identities; len(got) != 1 || got[0] != id.String() {
		t.Errorf("identities %v", got)
	}
}

func TestTelemetryRefusesStreams(t *testing.T) {
	e := newTelemetryEnv(t)
	id := workloadID("shop", "web")
	svid := e.svidFor(t, id)
	cc := e.dial(t, svid)
	e.register(t, cc, "web-1")

	t.Run("no certificate", func(t *testing.T) {
		before := e.refusals(t, meshtls.ReasonNoCertificate)
		stream := reportStream(t, e.dial(t, nil))
		_, err := stream.CloseAndRecv()
		wantCode(t, err, codes.Unauthenticated)
		if got := e.refusals(t, meshtls.ReasonNoCertificate) - before; got != 1 {
			t.Errorf("no_certificate grew by %v", got)
		}
	})
	t.Run("workload of another identity", func(t *testing.T) {
		// api registers api-1; web may not report for it.
		apiCC := e.dial(t, e.svidFor(t, workloadID("shop", "api")))
		e.register(t, apiCC, "api-1")
		stream := reportStream(t, cc)
		if err := stream.Send(report(e.clock.Now(), "api-1")); err != nil {
			t.Fatal(err)
		}
		_, err := stream.CloseAndRecv()
		wantCode(t, err, codes.PermissionDenied)
		if got := e.refusals(t, TelemetryNotRegistered); got != 1 {
			t.Errorf("not_registered = %v, want 1", got)
		}
	})
	t.Run("too fast", func(t *testing.T) {
		stream := reportStream(t, cc)
		// The clock stands still: the burst passes, then every report is
		// over the rate until the stream is refused.
		for range ReportBurst + maxRateDrops {
			if err := stream.Send(report(e.clock.Now(), "web-1")); err != nil {
				break // the server ended the stream
			}
		}
		_, err := stream.CloseAndRecv()
		wantCode(t, err, codes.ResourceExhausted)
		if got := e.refusals(t, TelemetryTooFast); got != 1 {
			t.Errorf("too_fast = %v, want 1", got)
		}
		if got := e.reports(t, ReportDropped, ReportRateLimited); got != maxRateDrops {
			t.Errorf("rate_limited drops = %v, want %d", got, maxRateDrops)
		}
	})
	t.Run("drain", func(t *testing.T) {
		stream := reportStream(t, cc)
		e.clock.Add(ReportBurst * ReportRate)
		if err := stream.Send(report(e.clock.Now(), "web-1")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return metricValue(t, e.reg, "rampart_controller_telemetry_streams", nil) == 1 })
		e.srv.Drain()
		_, err := stream.CloseAndRecv()
		wantCode(t, err, codes.Unavailable)
	})
}

func TestTelemetryDropsBadReports(t *testing.T) {
	e := newTelemetryEnv(t)
	cc := e.dial(t, e.svidFor(t, workloadID("shop", "web")))
	e.register(t, cc, "web-1")
	stream := reportStream(t, cc)

	edge := func(f func(*meshv1.EdgeSummary)) func(*meshv1.TelemetryReport) {
		return func(r *meshv1.TelemetryReport) {
			r.Edges = []*meshv1.EdgeSummary{outboundEdge(10, 1)}
			f(r.Edges[0])
		}
	}
	tests := []struct {
		name   string
		reason string
		mutate func(*meshv1.TelemetryReport)
	}{
		{"no interval", ReportBadInterval, func(r *meshv1.TelemetryReport) { r.Interval = nil }},
		{"interval too short", ReportBadInterval, func(r *meshv1.TelemetryReport) { r.Interval = durationpb.New(time.Millisecond) }},
		{"interval too long", ReportBadInterval, func(r *meshv1.TelemetryReport) { r.Interval = durationpb.New(time.Hour) }},
		{"from the past", ReportBadTime, func(r *meshv1.TelemetryReport) { r.Start = timestamppb.New(time.Unix(0, 0)) }},
		{"from the future", ReportBadTime, func(r *meshv1.TelemetryReport) { r.Start = timestamppb.New(time.Now().Add(time.Hour)) }},
		{"bad workload name", ReportBadWorkload, func(r *meshv1.TelemetryReport) { r.Workload = "Web_1" }},
		{"too many edges", ReportTooManyEdges, func(r *meshv1.TelemetryReport) {
			r.Edges = make([]*meshv1.EdgeSummary, MaxReportEdges+1)
			for i := range r.Edges {
				r.Edges[i] = outboundEdge(0, 0)
			}
		}},
		{"no direction", ReportBadEdge, edge(func(s *meshv1.EdgeSummary) { s.Direction = 0 })},
		{"bad service", ReportBadEdge, edge(func(s *meshv1.EdgeSummary) { s.Service = "api" })},
		{"overflow entry with a peer", ReportBadEdge, edge(func(s *meshv1.EdgeSummary) { s.Overflow, s.Direction = true, 0 })},
		{"bad peer identity", ReportBadPeer, edge(func(s *meshv1.EdgeSummary) { s.PeerSpiffeId = "https://example.org/x" })},
		{"bad peer workload", ReportBadPeer, edge(func(s *meshv1.EdgeSummary) { s.PeerWorkload = "API!" })},
		{"more failures than requests", ReportBadCounts, edge(func(s *meshv1.EdgeSummary) { s.Failures = 10 + 17 })},
		{"more denials than requests", ReportBadCounts, edge(func(s *meshv1.EdgeSummary) { s.Denied = 10 + 17 })},
		{"absurd request count", ReportBadCounts, edge(func(s *meshv1.EdgeSummary) { s.Requests, s.Failures = math.MaxUint64, 0 })},
		{"sketch of another scheme", ReportBadSketch, edge(func(s *meshv1.EdgeSummary) {
			s.Latency = &meshv1.LatencySketch{Counts: make([]uint64, sketch.Buckets+1)}
		})},
		{"more latencies than requests", ReportBadSketch, edge(func(s *meshv1.EdgeSummary) {
			s.Latency = &meshv1.LatencySketch{Counts: []uint64{10 + 17}}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.reports(t, ReportDropped, tt.reason)
			e.clock.Add(ReportRate)
			r := report(e.clock.Now(), "web-1", outboundEdge(10, 1))
			tt.mutate(r)
			if err := stream.Send(r); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return e.reports(t, ReportDropped, tt.reason) == before+1 })
		})
	}
	// The stream went on: a good report still counts.
	e.clock.Add(ReportRate)
	if err := stream.Send(report(e.clock.Now(), "web-1", outboundEdge(10, 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatalf("stream ended with %v, want an ack", err)
	}
	if got := e.reports(t, ReportAccepted, ""); got != 1 {
		t.Errorf("accepted %v, want 1", got)
	}
	e.settle()
	if ws, _ := e.graph.Workloads(graph.Filter{}); len(ws) != 1 || ws[0].Outbound.Requests != 10 {
		t.Errorf("graph holds %+v, want only the good report", ws)
	}
}

func TestTelemetryReasonsAreDeclared(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newTelemetryMetrics(reg, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range reportReasons {
		if metricValue(t, reg, "rampart_controller_telemetry_reports_total", map[string]string{"result": ReportDropped, "reason": r}) != 0 {
			t.Errorf("reason %s starts non-zero", r)
		}
	}
}

// TestTelemetryAcceptsWhatProxiesSend: an overflow entry, per-route
// counts, and a failure counted a moment before its request (the
// straddle) are all part of a good report.
func TestTelemetryAcceptsWhatProxiesSend(t *testing.T) {
	e := newTelemetryEnv(t)
	cc := e.dial(t, e.svidFor(t, workloadID("shop", "web")))
	e.register(t, cc, "web-1")
	stream := reportStream(t, cc)
	straddling := outboundEdge(10, 11)
	straddling.RequestCounts = []*meshv1.EdgeSummary_RequestCount{{Method: "GET", Path: "/api/v1/orders", StatusClass: 5, Count: 10}}
	overflow := &meshv1.EdgeSummary{Overflow: true, Requests: 3, Failures: 1}
	e.clock.Add(5 * time.Second)
	if err := stream.Send(report(e.clock.Now(), "web-1", straddling, overflow)); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	if got := e.reports(t, ReportAccepted, ""); got != 1 {
		t.Fatalf("accepted %v, want 1", got)
	}
	e.settle()
	ws, _ := e.graph.Workloads(graph.Filter{})
	if len(ws) != 1 || ws[0].Outbound.Failures != 10 || ws[0].Overflow.Requests != 3 {
		t.Errorf("graph holds %+v, want 10 failures (clamped to the requests) and 3 overflow requests", ws)
	}
}

// FuzzToGraphReport feeds arbitrary reports to the validation: whatever it
// accepts, the graph records and answers queries about.
func FuzzToGraphReport(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seed, err := proto.Marshal(report(now, "web-1", outboundEdge(10, 1), &meshv1.EdgeSummary{Overflow: true, Requests: 2}))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, raw []byte) {
		var r meshv1.TelemetryReport
		if proto.Unmarshal(raw, &r) != nil {
			return
		}
		rep, _, reason, err := toGraphReport(&r, now)
		if err != nil {
			if reason == "" {
				t.Fatalf("refused without a reason: %v", err)
			}
			return
		}
		g, err := graph.New(graph.Config{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		rep.Instance, rep.ID, rep.Namespace, rep.Workload = "i", workloadID("shop", "web"), "shop", "web-1"
		if err := g.Add(rep); err != nil {
			t.Fatalf("an accepted report is refused by the graph: %v", err)
		}
		if _, err := g.Workloads(graph.Filter{}); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Edges(graph.Filter{Window: 10 * time.Minute}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestTelemetrySkipsBadRequestCounts: a per-route count outside the
// bounds (a path made longer by replacing its invalid bytes, say) is
// skipped and counted; the edge and the rest of the report are kept, so
// that one request cannot hide a workload's interval.
func TestTelemetrySkipsBadRequestCounts(t *testing.T) {
	e := newTelemetryEnv(t)
	cc := e.dial(t, e.svidFor(t, workloadID("shop", "web")))
	e.register(t, cc, "web-1")
	stream := reportStream(t, cc)
	edge := outboundEdge(10, 1)
	long := "/" + strings.Repeat("a\uFFFD", 60) // 241 bytes
	edge.RequestCounts = []*meshv1.EdgeSummary_RequestCount{
		{Method: "GET", Path: "/api", StatusClass: 2, Count: 7},
		{Method: "GET", Path: long, StatusClass: 4, Count: 1},
		{Method: "GET", Path: "/x", StatusClass: 9, Count: 1},
		{Method: "", Path: "/y", StatusClass: 2, Count: 1},
	}
	for i := range MaxRequestCounts {
		edge.RequestCounts = append(edge.RequestCounts, &meshv1.EdgeSummary_RequestCount{Method: "GET", Path: fmt.Sprintf("/p%d", i), StatusClass: 2})
	}
	e.clock.Add(5 * time.Second)
	if err := stream.Send(report(e.clock.Now(), "web-1", edge)); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	if got := e.reports(t, ReportAccepted, ""); got != 1 {
		t.Fatalf("accepted %v reports, want 1", got)
	}
	skipped := func(reason string) float64 {
		return metricValue(t, e.reg, "rampart_controller_telemetry_request_counts_skipped_total", map[string]string{"reason": reason})
	}
	// 1 good and 64 more: the last one is past the bound.
	for reason, want := range map[string]float64{SkipBadPath: 1, SkipBadStatusClass: 1, SkipBadMethod: 1, SkipTooManyCounts: 1} {
		if got := skipped(reason); got != want {
			t.Errorf("skipped for %s: %v, want %v", reason, got, want)
		}
	}
	e.settle()
	ws, _ := e.graph.Workloads(graph.Filter{})
	if len(ws) != 1 || ws[0].Outbound.Requests != 10 {
		t.Errorf("graph holds %+v, want the edge's 10 requests", ws)
	}
}

// TestTelemetryReconnectIsOneInstance: a proxy that opens its stream again
// (from another port of the same address) reports as the same instance;
// another connection's streams do not add instances either.
func TestTelemetryReconnectIsOneInstance(t *testing.T) {
	e := newTelemetryEnv(t)
	svid := e.svidFor(t, workloadID("shop", "web"))
	cc := e.dial(t, svid)
	e.register(t, cc, "web-1")
	for i := range 3 {
		conn := cc
		if i > 0 {
			conn = e.dial(t, svid) // a new connection: a new source port
		}
		stream := reportStream(t, conn)
		e.clock.Add(5 * time.Second)
		if err := stream.Send(report(e.clock.Now(), "web-1", outboundEdge(10, 0))); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
	}
	if i, _, _ := e.graph.Size(); i != 1 {
		t.Errorf("%d instances after three streams of one proxy, want 1", i)
	}
	e.settle()
	ws, _ := e.graph.Workloads(graph.Filter{})
	if len(ws) != 1 || ws[0].Instances != 1 || ws[0].Outbound.Requests != 30 {
		t.Errorf("workloads %+v, want one instance with 30 requests", ws)
	}
}

// TestTelemetryStreamsPerIdentityAreBounded: past the bound, an identity's
// next stream is refused and counted; one that closes makes room.
func TestTelemetryStreamsPerIdentityAreBounded(t *testing.T) {
	e := newTelemetryEnv(t)
	e.srv.tmetrics.perIdentity.max = 2
	cc := e.dial(t, e.svidFor(t, workloadID("shop", "web")))
	e.register(t, cc, "web-1")
	open := func() grpc.ClientStreamingClient[meshv1.TelemetryReport, meshv1.TelemetryAck] {
		stream := reportStream(t, cc)
		e.clock.Add(ReportRate)
		if err := stream.Send(report(e.clock.Now(), "web-1", outboundEdge(1, 0))); err != nil {
			t.Fatal(err)
		}
		return stream
	}
	first, _ := open(), open()
	waitFor(t, func() bool { return metricValue(t, e.reg, "rampart_controller_telemetry_streams", nil) == 2 })
	_, err := open().CloseAndRecv()
	wantCode(t, err, codes.ResourceExhausted)
	if got := e.refusals(t, TelemetryTooManyStreams); got != 1 {
		t.Errorf("too_many_streams = %v, want 1", got)
	}
	// Another identity is not held back by web's streams.
	apiCC := e.dial(t, e.svidFor(t, workloadID("shop", "api")))
	e.register(t, apiCC, "api-1")
	api := reportStream(t, apiCC)
	if err := api.Send(report(e.clock.Now(), "api-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := api.CloseAndRecv(); err != nil {
		t.Fatalf("api's stream: %v", err)
	}
	if _, err := first.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return metricValue(t, e.reg, "rampart_controller_telemetry_streams", nil) == 1 })
	if _, err := open().CloseAndRecv(); err != nil {
		t.Errorf("a stream after one closed: %v", err)
	}
}

// TestTelemetryAcceptsTickerJitter: a proxy reporting every second (the
// shortest --telemetry-interval) measures intervals a little under or over
// it; those are good reports.
func TestTelemetryAcceptsTickerJitter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, d := range []time.Duration{995 * time.Millisecond, time.Second, time.Minute + 20*time.Millisecond} {
		r := report(now, "web-1", outboundEdge(1, 0))
		r.Start, r.Interval = timestamppb.New(now.Add(-d)), durationpb.New(d)
		if _, _, reason, err := toGraphReport(r, now); err != nil {
			t.Errorf("interval %v refused (%s): %v", d, reason, err)
		}
	}
}

func latencyPB(s *sketch.Sketch) *meshv1.LatencySketch {
	counts, sum := s.Encode()
	return &meshv1.LatencySketch{Counts: counts, SumSeconds: sum}
}
