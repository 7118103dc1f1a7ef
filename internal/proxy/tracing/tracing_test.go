package tracing

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	self   = "spiffe://t.test/ns/app/sa/self"
	caller = "spiffe://t.test/ns/app/sa/caller"
	// A sampled incoming context, and one whose caller did not sample.
	parentTrace   = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan    = "00f067aa0ba902b7"
	sampledParent = "00-" + parentTrace + "-" + parentSpan + "-01"
	unsampled     = "00-" + parentTrace + "-" + parentSpan + "-00"
)

// keptSpans is an in-memory exporter whose spans outlive Shutdown.
type keptSpans struct{ *tracetest.InMemoryExporter }

func (keptSpans) Shutdown(context.Context) error { return nil }

func newTracer(t *testing.T, ratio float64) (*Tracer, keptSpans, *prometheus.Registry) {
	t.Helper()
	exp := keptSpans{tracetest.NewInMemoryExporter()}
	reg := prometheus.NewRegistry()
	tr, err := New(Config{Exporter: exp, SampleRatio: ratio, Workload: "w", Namespace: "app", Identity: self, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown(context.Background()) })
	return tr, exp, reg
}

// finish ends the tracer and returns what it exported.
func finish(t *testing.T, tr *Tracer, exp keptSpans) tracetest.SpanStubs {
	t.Helper()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	return exp.GetSpans()
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value)
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestStartHonoursAndReplacesTraceContext(t *testing.T) {
	tr, exp, _ := newTracer(t, 0) // the caller's decision wins over the ratio
	r := httptest.NewRequest("GET", "http://svc.app:8080/a/b?secret=1", nil)
	r.Header.Set("Traceparent", sampledParent)
	r.Header.Set("Tracestate", "vendor=x")
	sp := tr.Start(r, Server)
	if got := sp.TraceID(); got != parentTrace {
		t.Fatalf("trace ID %s, want the caller's %s", got, parentTrace)
	}
	tp := r.Header.Get("Traceparent")
	if TraceIDOf(r.Header) != parentTrace || strings.Contains(tp, parentSpan) || !strings.HasSuffix(tp, "-01") {
		t.Fatalf("forwarded traceparent %q: want the caller's trace, the proxy's span, sampled", tp)
	}
	if got := r.Header.Get("Tracestate"); got != "vendor=x" {
		t.Errorf("tracestate %q, want it passed on", got)
	}
	sp.End(Outcome{Status: 403, Peer: caller, Decision: "deny"})

	spans := finish(t, tr, exp)
	if len(spans) != 1 {
		t.Fatalf("%d spans exported, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanKind != trace.SpanKindServer || s.Name != "GET" {
		t.Errorf("span %q kind %v, want GET, server", s.Name, s.SpanKind)
	}
	if s.Parent.SpanID().String() != parentSpan || !s.Parent.IsRemote() {
		t.Errorf("parent %v, want the caller's span %s", s.Parent.SpanID(), parentSpan)
	}
	if want := "00-" + parentTrace + "-" + s.SpanContext.SpanID().String() + "-01"; tp != want {
		t.Errorf("forwarded traceparent %q, want %q (the span as parent)", tp, want)
	}
	a := attrs(s)
	for k, want := range map[attribute.Key]string{
		"http.request.method":   "GET",
		"url.path":              "/a/b",
		"server.address":        "svc.app",
		AttrSourceIdentity:      caller,
		AttrDestinationIdentity: self,
		AttrAuthzDecision:       "deny",
	} {
		if got := a[k].AsString(); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := a["http.response.status_code"].AsInt64(); got != 403 {
		t.Errorf("status code %d, want 403", got)
	}
	if s.Status.Code != codes.Unset {
		t.Errorf("server span of a 403 has status %v, want unset (a client error)", s.Status.Code)
	}
}

func TestStartWithoutContextStartsTrace(t *testing.T) {
	tr, exp, reg := newTracer(t, 1)
	r := httptest.NewRequest("POST", "http://svc/", nil)
	r.Header.Set("Traceparent", "00-"+strings.Repeat("0", 32)+"-"+parentSpan+"-01") // invalid: zero trace ID
	r.Header.Set("Tracestate", "stale=1")
	sp := tr.Start(r, Client)
	if sp.TraceID() == "" || sp.TraceID() == strings.Repeat("0", 32) {
		t.Fatalf("no new trace: %q", sp.TraceID())
	}
	if got := TraceIDOf(r.Header); got != sp.TraceID() {
		t.Fatalf("forwarded trace %q, want the new one %q", got, sp.TraceID())
	}
	if v := r.Header.Values("Tracestate"); len(v) != 0 {
		t.Errorf("tracestate %q of a void context passed on", v)
	}
	sp.End(Outcome{Status: 503})
	spans := finish(t, tr, exp)
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.Parent.IsValid() || s.SpanKind != trace.SpanKindClient || s.Status.Code != codes.Error {
		t.Errorf("span: parent %v kind %v status %v; want a root client span with an error", s.Parent, s.SpanKind, s.Status.Code)
	}
	if _, ok := attrs(s)[AttrDestinationIdentity]; ok {
		t.Error("a request that reached no peer names a destination")
	}
	if got := attrs(s)[AttrSourceIdentity].AsString(); got != self {
		t.Errorf("client span source %q, want the proxy's %q", got, self)
	}
	if got := counted(t, reg, "exported"); got != 1 {
		t.Errorf("exported spans counted %v, want 1", got)
	}
}

func TestParentBasedSampling(t *testing.T) {
	tests := []struct {
		name        string
		ratio       float64
		traceparent string
		exported    bool
		flags       string
	}{
		{"new trace at ratio 0", 0, "", false, "-00"},
		{"new trace at ratio 1", 1, "", true, "-01"},
		{"sampled caller at ratio 0", 0, sampledParent, true, "-01"},
		{"unsampled caller at ratio 1", 1, unsampled, false, "-00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, exp, _ := newTracer(t, tt.ratio)
			r := httptest.NewRequest("GET", "http://svc/", nil)
			if tt.traceparent != "" {
				r.Header.Set("Traceparent", tt.traceparent)
			}
			sp := tr.Start(r, Client)
			if got := r.Header.Get("Traceparent"); !strings.HasSuffix(got, tt.flags) || TraceIDOf(r.Header) == "" {
				t.Errorf("forwarded traceparent %q, want flags %s", got, tt.flags)
			}
			sp.End(Outcome{Status: 200})
			if n := len(finish(t, tr, exp)); (n == 1) != tt.exported {
				t.Errorf("%d spans exported, want exported=%v", n, tt.exported)
			}
		})
	}
}

// A caller without a verified identity keeps its trace, but its sampled
// flag does not override the ratio; a verified caller's does.
func TestUnverifiedCallerDoesNotChooseSampling(t *testing.T) {
	tests := []struct {
		name        string
		kind        Kind
		ratio       float64
		traceparent string
		exported    bool
	}{
		{"unverified sampled caller at ratio 0", Unverified, 0, sampledParent, false},
		{"unverified unsampled caller at ratio 1", Unverified, 1, unsampled, true},
		{"unverified caller without context at ratio 1", Unverified, 1, "", true},
		{"verified sampled caller at ratio 0", Server, 0, sampledParent, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, exp, _ := newTracer(t, tt.ratio)
			r := httptest.NewRequest("GET", "http://svc/", nil)
			if tt.traceparent != "" {
				r.Header.Set("Traceparent", tt.traceparent)
			}
			sp := tr.Start(r, tt.kind)
			if tt.traceparent != "" && sp.TraceID() != parentTrace {
				t.Errorf("trace %s, want the caller's %s", sp.TraceID(), parentTrace)
			}
			want := "-00"
			if tt.exported {
				want = "-01"
			}
			if got := r.Header.Get("Traceparent"); !strings.HasSuffix(got, want) {
				t.Errorf("forwarded traceparent %q, want flags %s", got, want)
			}
			sp.End(Outcome{Status: 200, Peer: caller})
			spans := finish(t, tr, exp)
			if (len(spans) == 1) != tt.exported {
				t.Fatalf("%d spans exported, want exported=%v", len(spans), tt.exported)
			}
			if tt.exported && (spans[0].SpanKind != trace.SpanKindServer || attrs(spans[0])[AttrDestinationIdentity].AsString() != self) {
				t.Errorf("span kind %v, attributes %v; want a server span to the proxy", spans[0].SpanKind, attrs(spans[0]))
			}
		})
	}
}

func TestNilTracerIsInert(t *testing.T) {
	var tr *Tracer
	r := httptest.NewRequest("GET", "http://svc/", nil)
	r.Header.Set("Traceparent", sampledParent)
	allocs := testing.AllocsPerRun(100, func() {
		sp := tr.Start(r, Server)
		if sp.Active() || sp.TraceID() != "" {
			t.Fatal("a nil tracer's span is active")
		}
		sp.End(Outcome{Status: 200})
	})
	if allocs != 0 {
		t.Errorf("%v allocations per request with tracing off, want 0", allocs)
	}
	if got := r.Header.Get("Traceparent"); got != sampledParent {
		t.Errorf("traceparent changed to %q with tracing off", got)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		cfg     Config
		wantErr string
	}{
		{Config{Endpoint: "collector:4317", SampleRatio: 1}, ""},
		{Config{Endpoint: "[::1]:4317", SampleRatio: 0.25}, ""},
		{Config{SampleRatio: 1}, "endpoint (host:port) is required"},
		{Config{Endpoint: "collector", SampleRatio: 1}, "give host:port"},
		{Config{Endpoint: ":4317", SampleRatio: 1}, "give host:port"},
		{Config{Endpoint: "collector:http", SampleRatio: 1}, "port must be a number"},
		{Config{Endpoint: "collector:0", SampleRatio: 1}, "port must be a number"},
		{Config{Endpoint: "collector:4317", SampleRatio: 1.5}, "out of range"},
		{Config{Endpoint: "collector:4317", SampleRatio: -0.1}, "out of range"},
		{Config{Endpoint: "collector:4317", SampleRatio: math.NaN()}, "out of range"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.cfg, err, tt.wantErr)
		}
	}
	if _, err := New(Config{SampleRatio: 2, Endpoint: "c:1"}); err == nil {
		t.Error("New took a sample ratio of 2")
	}
}

func TestTraceIDOf(t *testing.T) {
	tests := []struct {
		values []string
		want   string
	}{
		{[]string{sampledParent}, parentTrace},
		{[]string{unsampled}, parentTrace},
		{nil, ""},
		{[]string{sampledParent, sampledParent}, ""},                                            // repeated: void
		{[]string{strings.ToUpper(sampledParent)}, ""},                                          // upper-case hex
		{[]string{"01-" + parentTrace + "-" + parentSpan + "-01"}, ""},                          // unknown version
		{[]string{"00-" + parentTrace + "-" + strings.Repeat("0", 16) + "-01"}, ""},             // zero span
		{[]string{"00-" + parentTrace + "-" + parentSpan + "-01-extra"}, ""},                    // trailing data
		{[]string{"00-" + parentTrace[:31] + "g-" + parentSpan + "-01"}, ""},                    // not hex
		{[]string{"00_" + parentTrace + "-" + parentSpan + "-01"}, ""},                          // separator
		{[]string{"00-" + parentTrace + "-" + parentSpan + "-0x"}, ""},                          // flags
		{[]string{"00-" + strings.Repeat("0", 32) + "-" + parentSpan + "-01"}, ""},              // zero trace
		{[]string{"00-" + parentTrace + "-" + parentSpan[:15] + "-01"}, ""},                     // short
		{[]string{"00-" + parentTrace + "-" + parentSpan + "-01" + strings.Repeat(" ", 1)}, ""}, // padded
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.values != nil {
			h["Traceparent"] = tt.values
		}
		if got := TraceIDOf(h); got != tt.want {
			t.Errorf("TraceIDOf(%q) = %q, want %q", tt.values, got, tt.want)
		}
	}
}

func TestCutPath(t *testing.T) {
	long := "/" + strings.Repeat("a", 600)
	if got := CutPath(long); len(got) != MaxPathBytes {
		t.Errorf("cut to %d bytes, want %d", len(got), MaxPathBytes)
	}
	// A multi-byte character across the limit goes whole.
	p := "/" + strings.Repeat("a", MaxPathBytes-2) + "é" + "tail"
	got := CutPath(p)
	if len(got) != MaxPathBytes-1 || !strings.HasSuffix(got, "a") {
		t.Errorf("cut %q... to %d bytes ending %q, want the character left out", p[:8], len(got), got[len(got)-1:])
	}
	if got := CutPath("/short"); got != "/short" {
		t.Errorf("CutPath(/short) = %q", got)
	}
	// A decoded path may hold any bytes; what comes out is UTF-8.
	for _, in := range []string{"/a\xff\xfeb", "/\xc3", "/" + strings.Repeat("\xff", 600), "/" + strings.Repeat("a", MaxPathBytes-2) + "\xe2\x82"} {
		if got := CutPath(in); !utf8.ValidString(got) || len(got) > MaxPathBytes {
			t.Errorf("CutPath(%q...) = %q...: not UTF-8 or over %d bytes", in[:min(len(in), 8)], got[:min(len(got), 8)], MaxPathBytes)
		}
	}
}

func TestAttributesAreUTF8(t *testing.T) {
	tr, exp, _ := newTracer(t, 1)
	r := httptest.NewRequest("GET", "http://svc/", nil)
	r.URL.Path = "/caf\xe9/\xff"
	r.Host = "h\xffst:80"
	r.Method = "G\xffT"
	tr.Start(r, Server).End(Outcome{Status: 200})
	spans := finish(t, tr, exp)
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	if !utf8.ValidString(spans[0].Name) {
		t.Errorf("span name %q is not UTF-8", spans[0].Name)
	}
	for k, v := range attrs(spans[0]) {
		if v.Type() == attribute.STRING && !utf8.ValidString(v.AsString()) {
			t.Errorf("attribute %s = %q is not UTF-8", k, v.AsString())
		}
	}
	if got := attrs(spans[0])["url.path"].AsString(); got != "/caf\uFFFD/\uFFFD" {
		t.Errorf("url.path %q, want the invalid bytes replaced", got)
	}
}

// failingExporter fails every export.
type failingExporter struct{}

func (failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	return errors.New("collector unreachable")
}
func (failingExporter) Shutdown(context.Context) error { return nil }

func TestFailedExportsCountedAndLogged(t *testing.T) {
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	tr, err := New(Config{
		Exporter: failingExporter{}, SampleRatio: 1, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		tr.Start(httptest.NewRequest("GET", "http://svc/", nil), Client).End(Outcome{Status: 200})
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v (a failed export is counted, not returned)", err)
	}
	if got := counted(t, reg, "failed"); got != 3 {
		t.Errorf("failed spans counted %v, want 3", got)
	}
	if !strings.Contains(logs.String(), "collector unreachable") || strings.Count(logs.String(), "\n") != 1 {
		t.Errorf("log %q: want one line with the error", logs.String())
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
}

// counted returns rampart_proxy_trace_spans_total{result=result}.
func counted(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rampart_proxy_trace_spans_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no rampart_proxy_trace_spans_total{result=%q}", result)
	return 0
}

// BenchmarkSpan measures a request's span with tracing on, sampled and
// not; a nil Tracer's cost is TestNilTracerIsInert's.
func BenchmarkSpan(b *testing.B) {
	for _, ratio := range []float64{1, 0} {
		b.Run(map[float64]string{1: "sampled", 0: "unsampled"}[ratio], func(b *testing.B) {
			tr, err := New(Config{Exporter: tracetest.NewNoopExporter(), SampleRatio: ratio, Identity: self})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Shutdown(context.Background())
			r := httptest.NewRequest("GET", "http://svc/orders/7", nil)
			b.ReportAllocs()
			for b.Loop() {
				delete(r.Header, "Traceparent") // a new trace: the ratio decides
				tr.Start(r, Server).End(Outcome{Status: 200, Peer: caller, Decision: "allow"})
			}
		})
	}
}
