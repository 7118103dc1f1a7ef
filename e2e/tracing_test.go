package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/rampart-mesh/rampart/internal/proxy"
	"github.com/rampart-mesh/rampart/internal/proxy/outbound"
	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
)

// collector is an OTLP/gRPC trace collector on loopback that keeps every
// span it receives.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	addr string

	mu    sync.Mutex
	spans []*tracepb.Span
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	l := listen(t)
	c := &collector{addr: l.Addr().String()}
	s := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(s, c)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return c
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// trace returns the spans received of the trace with ID id (hex).
func (c *collector) trace(id string) []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range c.spans {
		if hex.EncodeToString(s.GetTraceId()) == id {
			out = append(out, s)
		}
	}
	return out
}

// accessLogBuffer holds a proxy's access log, written concurrently.
type accessLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *accessLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON lines written so far.
func (b *accessLogBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access log line %q is not JSON: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// startTracedProxy starts a proxy, as mesh.startProxy does, that exports
// spans to col and writes its access log to log.
func startTracedProxy(m *mesh, o proxyOpts, col *collector, log io.Writer) *proxy.Proxy {
	m.t.Helper()
	roots, err := proxy.LoadBundle(m.bundlePath)
	if err != nil {
		m.t.Fatal(err)
	}
	cfg := proxy.Config{
		Controller:     m.ctrlAddr,
		TrustBundle:    roots,
		JoinToken:      m.token(o.name),
		Namespace:      ns,
		ServiceAccount: o.name,
		Workload:       o.name,
		Labels:         o.labels,
		TunnelListen:   "127.0.0.1:0",
		AdminListen:    "127.0.0.1:0",
		DrainTimeout:   2 * time.Second,
		Logger:         m.logger(o.name),
		Tracing: tracing.Config{
			Endpoint: col.addr, Insecure: true, SampleRatio: 1,
			BatchTimeout: 50 * time.Millisecond,
		},
		AccessLog: log,
	}
	for _, u := range o.upstreams {
		up, err := outbound.ParseUpstream(u + "=127.0.0.1:0")
		if err != nil {
			m.t.Fatal(err)
		}
		cfg.Upstreams = append(cfg.Upstreams, up)
	}
	p, err := proxy.New(cfg)
	if err != nil {
		m.t.Fatalf("proxy %s: %v", o.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	m.t.Cleanup(func() {
		cancel()
		<-done
	})
	eventually(m.t, 10*time.Second, func() error {
		if !p.Ready() {
			return fmt.Errorf("proxy %s not ready", o.name)
		}
		return nil
	})
	return p
}

func attr(s *tracepb.Span, key string) *commonpb.AnyValue {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

func TestTracingAndAccessLogs(t *testing.T) {
	col := startCollector(t)
	// The app records the traceparent it receives.
	var (
		mu       sync.Mutex
		received []string
	)
	hl := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		received = append(received, r.Header.Get("Traceparent"))
		mu.Unlock()
		io.WriteString(w, "ok")
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })

	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %s}
spec:
  selector: {app: server}
  serviceAccounts: [server]
  ports: [{name: http, port: 80, targetPort: %d, protocol: HTTP}]
`, ns, port(hl)))
	var serverLog, clientLog accessLogBuffer
	server := startTracedProxy(m, proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, col, &serverLog)
	client := startTracedProxy(m, proxyOpts{name: "client", upstreams: []string{"web"}}, col, &clientLog)

	// The calling app's own span, sampled.
	const (
		appTrace = "0af7651916cd43dd8448eb211c80319c"
		appSpan  = "b7ad6b7169203331"
	)
	// Once the mesh carries requests, exactly one goes with the trace.
	eventually(t, 10*time.Second, func() error {
		if code, body, err := get(client.UpstreamAddr(0), "/ready", nil); err != nil || code != 200 {
			return fmt.Errorf("code %d err %v body %q", code, err, body)
		}
		return nil
	})
	code, body, err := get(client.UpstreamAddr(0), "/orders/7?card=4111", map[string]string{
		"Traceparent": "00-" + appTrace + "-" + appSpan + "-01",
	})
	if err != nil || code != 200 {
		t.Fatalf("code %d err %v body %q", code, err, body)
	}

	var spans []*tracepb.Span
	eventually(t, 10*time.Second, func() error {
		if spans = col.trace(appTrace); len(spans) < 2 {
			return fmt.Errorf("%d spans of the trace received, want 2", len(spans))
		}
		return nil
	})
	var clientSpan, serverSpan *tracepb.Span
	for _, s := range spans {
		switch s.GetKind() {
		case tracepb.Span_SPAN_KIND_CLIENT:
			clientSpan = s
		case tracepb.Span_SPAN_KIND_SERVER:
			serverSpan = s
		}
	}
	if len(spans) != 2 || clientSpan == nil || serverSpan == nil {
		t.Fatalf("spans %v: want one client and one server span", spans)
	}
	if got := hex.EncodeToString(clientSpan.GetParentSpanId()); got != appSpan {
		t.Errorf("client proxy's span has parent %s, want the app's span %s", got, appSpan)
	}
	if got, want := hex.EncodeToString(serverSpan.GetParentSpanId()), hex.EncodeToString(clientSpan.GetSpanId()); got != want {
		t.Errorf("server proxy's span has parent %s, want the client proxy's span %s", got, want)
	}
	mu.Lock()
	gotTP := received[len(received)-1]
	mu.Unlock()
	if want := "00-" + appTrace + "-" + hex.EncodeToString(serverSpan.GetSpanId()) + "-01"; gotTP != want {
		t.Errorf("the app received traceparent %q, want %q (the server proxy's span as parent)", gotTP, want)
	}
	for _, c := range []struct {
		s           *tracepb.Span
		key, want   string
		description string
	}{
		{clientSpan, "http.request.method", "GET", "client method"},
		{clientSpan, "url.path", "/orders/7", "client path, without the query"},
		{clientSpan, tracing.AttrSourceIdentity, client.ID().String(), "client source"},
		{clientSpan, tracing.AttrDestinationIdentity, server.ID().String(), "client destination"},
		{clientSpan, tracing.AttrAuthzDecision, "allow", "client decision"},
		{serverSpan, "url.path", "/orders/7", "server path, without the query"},
		{serverSpan, tracing.AttrSourceIdentity, client.ID().String(), "server source"},
		{serverSpan, tracing.AttrDestinationIdentity, server.ID().String(), "server destination"},
		{serverSpan, tracing.AttrAuthzDecision, "allow", "server decision"},
	} {
		if got := attr(c.s, c.key).GetStringValue(); got != c.want {
			t.Errorf("%s: %s = %q, want %q", c.description, c.key, got, c.want)
		}
	}
	for _, s := range []*tracepb.Span{clientSpan, serverSpan} {
		if got := attr(s, "http.response.status_code").GetIntValue(); got != 200 {
			t.Errorf("%v span: status code %d, want 200", s.GetKind(), got)
		}
	}

	// Each proxy wrote one access log line for the request, with the
	// trace ID, the path without its query, and the two identities.
	for _, side := range []struct {
		name, direction string
		log             *accessLogBuffer
	}{
		{"client", "outbound", &clientLog},
		{"server", "inbound", &serverLog},
	} {
		var line map[string]any
		eventually(t, 5*time.Second, func() error {
			for _, l := range side.log.lines(t) {
				if l["trace_id"] == appTrace {
					line = l
					return nil
				}
			}
			return fmt.Errorf("%s: no access log line with trace_id %s", side.name, appTrace)
		})
		want := map[string]any{
			"msg": "access", "direction": side.direction, "method": "GET", "path": "/orders/7",
			"status": 200.0, "source": client.ID().String(), "destination": server.ID().String(),
			"decision": "allow",
		}
		for k, v := range want {
			if line[k] != v {
				t.Errorf("%s access log %s = %v, want %v (line %v)", side.name, k, line[k], v, line)
			}
		}
		if _, ok := line["decision_id"]; ok {
			t.Errorf("%s: a decision ID on an allowed request: %v", side.name, line)
		}
	}

	// A request without a trace context starts a trace at the client
	// proxy.
	code, body, err = get(client.UpstreamAddr(0), "/fresh", nil)
	if err != nil || code != 200 {
		t.Fatalf("code %d err %v body %q", code, err, body)
	}
	mu.Lock()
	fresh := received[len(received)-1]
	mu.Unlock()
	parts := strings.Split(fresh, "-")
	if len(parts) != 4 || parts[1] == appTrace {
		t.Fatalf("the app received traceparent %q, want a new trace", fresh)
	}
	eventually(t, 10*time.Second, func() error {
		spans := col.trace(parts[1])
		if len(spans) != 2 {
			return fmt.Errorf("%d spans of the new trace, want 2", len(spans))
		}
		for _, s := range spans {
			if s.GetKind() == tracepb.Span_SPAN_KIND_CLIENT && len(s.GetParentSpanId()) != 0 {
				return fmt.Errorf("the client span of a new trace has parent %x", s.GetParentSpanId())
			}
		}
		return nil
	})
}
