// Package tracing gives the proxy's HTTP request path OpenTelemetry spans,
// exported over OTLP/gRPC: a CLIENT span for each request the app sends
// out, a SERVER span for each request that comes in through the tunnel.
//
// The W3C trace context (traceparent, tracestate) that arrives with a
// request is honoured; the proxy's span becomes the parent named in the
// traceparent it passes on, so that the app's spans and the peers' spans
// join one trace. Sampling is parent-based: a sampled caller's trace stays
// whole, and a request without a trace context starts one, sampled at the
// configured ratio. A caller without a verified identity (plaintext) keeps
// its trace ID, but its sampled flag does not count: the ratio decides, so
// that it cannot make the proxy export a span for each of its requests.
//
// A nil *Tracer is tracing turned off: Start returns an inert Span and
// costs no allocation. Opaque TCP streams are never traced: their bytes
// are not read, so there is no trace context to honour.
//
// It must not depend on Kubernetes packages or the controller.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// MaxPathBytes bounds the url.path attribute (and the access log's path):
// a longer path is cut there.
const MaxPathBytes = 512

// maxHostBytes bounds the server.address attribute.
const maxHostBytes = 256

// maxMethodBytes bounds the span name and http.request.method attribute.
const maxMethodBytes = 64

// Attribute keys beyond OpenTelemetry's semantic conventions.
const (
	AttrSourceIdentity      = "rampart.source.identity"
	AttrDestinationIdentity = "rampart.destination.identity"
	AttrAuthzDecision       = "rampart.authz.decision"
)

// ServiceName is the service.name of the proxy's spans; the workload is
// service.instance.id and its namespace service.namespace.
const ServiceName = "rampart-proxy"

// Config configures a Tracer.
type Config struct {
	// Endpoint is the host:port of an OTLP/gRPC trace collector. Required.
	Endpoint string
	// Insecure sends spans in plain text, for a collector without TLS
	// (one on loopback, or a sidecar's); the default is TLS verified
	// against the system's roots.
	Insecure bool
	// SampleRatio is the share of new traces (requests without a trace
	// context) that are sampled, in [0, 1]. A request that arrives with
	// one follows its caller's decision, unless the caller has no
	// verified identity (Unverified): the ratio decides then too.
	SampleRatio float64
	// Workload, Namespace and Identity describe the proxy in its spans.
	Workload  string
	Namespace string
	Identity  string
	// Registerer receives rampart_proxy_trace_spans_total; nil registers
	// nowhere.
	Registerer prometheus.Registerer
	// Logger receives failed exports, at most one line every
	// ExportLogInterval; nil discards.
	Logger *slog.Logger
	// Exporter replaces the OTLP exporter; for tests. Nil means OTLP/gRPC
	// to Endpoint.
	Exporter sdktrace.SpanExporter
	// BatchTimeout is how long finished spans wait to be sent in a batch;
	// zero means 5s.
	BatchTimeout time.Duration
}

// ExportLogInterval bounds how often a failing export is logged.
const ExportLogInterval = 30 * time.Second

// Validate reports a setting out of range, saying what to fix.
func (c *Config) Validate() error {
	if c.Exporter == nil {
		if c.Endpoint == "" {
			return errors.New("tracing: an OTLP endpoint (host:port) is required")
		}
		host, port, err := net.SplitHostPort(c.Endpoint)
		if err != nil || host == "" {
			return fmt.Errorf("tracing: OTLP endpoint %q: give host:port, such as otel-collector:4317", c.Endpoint)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("tracing: OTLP endpoint %q: the port must be a number from 1 to 65535", c.Endpoint)
		}
	}
	if !(c.SampleRatio >= 0 && c.SampleRatio <= 1) { // NaN too
		return fmt.Errorf("tracing: sample ratio %v out of range: give a number from 0 to 1", c.SampleRatio)
	}
	return nil
}

// Tracer starts the spans of the proxy's requests. A nil *Tracer traces
// nothing.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext
	identity string

	closeOnce sync.Once
	closeErr  error
}

// New returns a Tracer that exports to cfg.Endpoint. Nothing is dialled
// before the first batch of spans; a collector that is away costs
// dropped spans, counted and logged, never a request.
func New(cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 5 * time.Second
	}
	spans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_proxy_trace_spans_total",
		Help: "Spans handed to the OTLP trace exporter, by result: exported, or failed (dropped after the exporter's retries).",
	}, []string{"result"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(spans); err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
	}
	exp := cfg.Exporter
	if exp == nil {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint)}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		var err error
		if exp, err = otlptracegrpc.New(context.Background(), opts...); err != nil {
			return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
		}
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", ServiceName),
		attribute.String("service.namespace", cfg.Namespace),
		attribute.String("service.instance.id", cfg.Workload),
		attribute.String("rampart.identity", cfg.Identity),
	)
	counted := &countingExporter{
		SpanExporter: exp,
		exported:     spans.WithLabelValues("exported"),
		failed:       spans.WithLabelValues("failed"),
		log:          cfg.Logger,
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(counted, sdktrace.WithBatchTimeout(cfg.BatchTimeout)),
		sdktrace.WithSampler(sampler{
			parent: sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio)),
			ratio:  sdktrace.TraceIDRatioBased(cfg.SampleRatio),
		}),
		sdktrace.WithResource(res),
	)
	return &Tracer{
		provider: tp,
		tracer:   tp.Tracer("github.com/rampart-mesh/rampart/internal/proxy"),
		identity: cfg.Identity,
	}, nil
}

// Shutdown sends the spans still held, within ctx, and stops the Tracer;
// it is idempotent, and nil-safe.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.closeOnce.Do(func() { t.closeErr = t.provider.Shutdown(ctx) })
	return t.closeErr
}

// Kind says which side of a request a span stands for.
type Kind uint8

const (
	// Client is the outbound side: a request the app sends, on its way
	// to a peer.
	Client Kind = iota
	// Server is the inbound side: a request from a peer, on its way to
	// the app.
	Server
	// Unverified is the inbound side of a request from a caller without a
	// verified identity (plaintext): its trace context is followed, but
	// its sampled flag is not; the sample ratio decides.
	Unverified
)

// unverifiedKey marks the context of a span started for Unverified.
type unverifiedKey struct{}

// sampler is parent-based, except for a remote parent from an
// Unverified caller, whose decision the ratio makes.
type sampler struct{ parent, ratio sdktrace.Sampler }

func (s sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.ParentContext != nil && p.ParentContext.Value(unverifiedKey{}) != nil {
		if psc := trace.SpanContextFromContext(p.ParentContext); psc.IsValid() && psc.IsRemote() {
			return s.ratio.ShouldSample(p)
		}
	}
	return s.parent.ShouldSample(p)
}

func (s sampler) Description() string {
	return "RampartSampler{" + s.parent.Description() + ", unverified callers: " + s.ratio.Description() + "}"
}

// Start starts the span of r, the child of the trace context r carries,
// and replaces r's traceparent (and tracestate) with the span's, so that
// the request passed on names the span as its parent. With a nil Tracer it
// does nothing.
func (t *Tracer) Start(r *http.Request, kind Kind) Span {
	if t == nil {
		return Span{}
	}
	carrier := propagation.HeaderCarrier(r.Header)
	ctx := t.prop.Extract(context.Background(), carrier)
	sk := trace.SpanKindClient
	if kind != Client {
		sk = trace.SpanKindServer
	}
	if kind == Unverified {
		ctx = context.WithValue(ctx, unverifiedKey{}, true)
	}
	path := ""
	if r.URL != nil {
		path = CutPath(r.URL.Path)
	}
	method := cutUTF8(r.Method, maxMethodBytes)
	ctx, s := t.tracer.Start(ctx, method, trace.WithSpanKind(sk), trace.WithAttributes(
		attribute.String("http.request.method", method),
		attribute.String("url.path", path),
		attribute.String("server.address", hostOf(r.Host)),
	))
	// The incoming context goes (tracestate too: a caller's tracestate
	// is void without a valid traceparent); the request carries the
	// span's now.
	delete(r.Header, "Traceparent")
	delete(r.Header, "Tracestate")
	t.prop.Inject(ctx, carrier)
	return Span{s: s, kind: kind, self: t.identity}
}

// Span is one request's span; the zero Span is inert.
type Span struct {
	s    trace.Span
	kind Kind
	self string // the proxy's identity
}

// Active reports whether the span stands for anything (tracing is on).
func (s Span) Active() bool { return s.s != nil }

// TraceID is the span's trace ID in hex, or "" for an inert Span.
func (s Span) TraceID() string {
	if s.s == nil {
		return ""
	}
	return s.s.SpanContext().TraceID().String()
}

// Outcome is what became of a request, for its span.
type Outcome struct {
	// Status is the HTTP status answered; 0 when the answer broke off.
	Status int
	// Peer is the verified identity of the other side: the caller on the
	// server side, the endpoint on the client side; "" when unknown.
	Peer string
	// Decision is the authorization decision (package accesslog's
	// Decision), or "" when no policy decided.
	Decision string
}

// End records o and ends the span.
func (s Span) End(o Outcome) {
	if s.s == nil {
		return
	}
	if s.s.IsRecording() {
		src, dst := s.self, o.Peer
		if s.kind != Client {
			src, dst = o.Peer, s.self
		}
		attrs := make([]attribute.KeyValue, 0, 4)
		if o.Status > 0 {
			attrs = append(attrs, attribute.Int("http.response.status_code", o.Status))
		}
		if src != "" {
			attrs = append(attrs, attribute.String(AttrSourceIdentity, src))
		}
		if dst != "" {
			attrs = append(attrs, attribute.String(AttrDestinationIdentity, dst))
		}
		if o.Decision != "" {
			attrs = append(attrs, attribute.String(AttrAuthzDecision, o.Decision))
		}
		s.s.SetAttributes(attrs...)
		// Semantic conventions: a server's span fails on 5xx only (a 4xx
		// is the client's error), a client's on 4xx too.
		switch {
		case o.Status == 0:
			s.s.SetStatus(codes.Error, "the response broke off")
		case o.Status >= 500, o.Status >= 400 && s.kind == Client:
			s.s.SetStatus(codes.Error, "")
		}
	}
	s.s.End()
}

// CutPath returns p as valid UTF-8 (each invalid byte sequence replaced
// by U+FFFD), cut to at most MaxPathBytes on a character boundary. A
// decoded path may hold any bytes, and OTLP refuses a string attribute
// that is not UTF-8 along with the whole batch it came in.
func CutPath(p string) string { return cutUTF8(p, MaxPathBytes) }

// cutUTF8 returns s as valid UTF-8, cut to at most n bytes on a character
// boundary.
func cutUTF8(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// hostOf is the host of a Host header, without its port, as valid UTF-8,
// bounded.
func hostOf(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return cutUTF8(h, maxHostBytes)
}

// TraceIDOf returns the trace ID of the traceparent in h, if h holds a
// well-formed one (version 00: 00-<32 hex>-<16 hex>-<2 hex>, IDs not all
// zero), else "".
func TraceIDOf(h http.Header) string {
	v := h["Traceparent"]
	if len(v) != 1 {
		return ""
	}
	tp := v[0]
	if len(tp) != 55 || tp[0:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return ""
	}
	if !lowerHex(tp[3:35]) || !lowerHex(tp[36:52]) || !lowerHex(tp[53:55]) ||
		allZero(tp[3:35]) || allZero(tp[36:52]) {
		return ""
	}
	return tp[3:35]
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

// countingExporter counts what it exports and logs failures, at most a
// line every ExportLogInterval; the batch processor then has no error to
// hand to OpenTelemetry's global handler.
type countingExporter struct {
	sdktrace.SpanExporter
	exported, failed prometheus.Counter
	log              *slog.Logger

	mu       sync.Mutex
	lastLog  time.Time
	held     int // failures not logged since the last line
	heldSpan int
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		e.exported.Add(float64(len(spans)))
		return nil
	}
	e.failed.Add(float64(len(spans)))
	now := time.Now()
	e.mu.Lock()
	e.held++
	e.heldSpan += len(spans)
	if !e.lastLog.IsZero() && now.Sub(e.lastLog) < ExportLogInterval {
		e.mu.Unlock()
		return nil
	}
	failures, dropped := e.held, e.heldSpan
	e.held, e.heldSpan, e.lastLog = 0, 0, now
	e.mu.Unlock()
	e.log.Warn("could not export spans to the OTLP collector; they are dropped",
		"err", err, "failed_exports", failures, "dropped_spans", dropped)
	return nil
}
