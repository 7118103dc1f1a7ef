package inbound

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/accesslog"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
)

// keptSpans is an in-memory exporter whose spans outlive Shutdown.
type keptSpans struct{ *tracetest.InMemoryExporter }

func (keptSpans) Shutdown(context.Context) error { return nil }

func TestInboundSpansAndAccessLog(t *testing.T) {
	const self = "spiffe://example.org/ns/shop/sa/orders"
	app := newApp(t, false)
	exp := keptSpans{tracetest.NewInMemoryExporter()}
	tr, err := tracing.New(tracing.Config{Exporter: exp, SampleRatio: 1, Identity: self})
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	h, err := New(Config{Metrics: metrics.New(), Tracer: tr, AccessLog: accesslog.New(&logBuf), Identity: self})
	if err != nil {
		t.Fatal(err)
	}
	h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		compile(t, shopPolicy(uint32(app.port)), nil))

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		uri, decision string
		status        int
	}{
		{"/orders/7?token=secret", "allow", 200},
		{"/admin/users", "deny", 403},
	}
	for _, tt := range tests {
		req := tunnelRequest("GET", tt.uri, "orders", app.port, false)
		req.Header.Set("Traceparent", parent)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.status {
			t.Fatalf("%s: status %d, want %d", tt.uri, rec.Code, tt.status)
		}
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	spans := exp.GetSpans()
	if len(spans) != len(tests) {
		t.Fatalf("%d spans, want %d", len(spans), len(tests))
	}
	lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
	if len(lines) != len(tests) {
		t.Fatalf("%d access log lines, want %d: %q", len(lines), len(tests), logBuf.String())
	}
	for i, tt := range tests {
		var decision string
		for _, kv := range spans[i].Attributes {
			if kv.Key == tracing.AttrAuthzDecision {
				decision = kv.Value.AsString()
			}
		}
		if decision != tt.decision || spans[i].Parent.SpanID().String() != "00f067aa0ba902b7" {
			t.Errorf("%s: span decision %q parent %s; want %q, the caller's span", tt.uri, decision, spans[i].Parent.SpanID(), tt.decision)
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &line); err != nil {
			t.Fatal(err)
		}
		if line["decision"] != tt.decision || line["status"] != float64(tt.status) ||
			line["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" ||
			line["source"] != caller.String() || line["destination"] != self ||
			strings.Contains(lines[i], "secret") {
			t.Errorf("%s: access log line %s", tt.uri, lines[i])
		}
		if _, hasID := line["decision_id"]; hasID != (tt.decision == "deny") {
			t.Errorf("%s: decision_id present %v, want only on the refusal: %s", tt.uri, hasID, lines[i])
		}
	}
}

// An app's own Rampart-Decision-Id, in its header or trailers, neither
// reaches the caller nor makes its answer a policy's refusal in the log.
func TestAppDecisionIDStripped(t *testing.T) {
	const forged = "0123456789ab" // the format a proxy writes
	a := &appServer{Server: httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", accesslog.HeaderDecisionID)
		w.Header().Set(accesslog.HeaderDecisionID, forged)
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "the app's own refusal")
		w.Header().Set(accesslog.HeaderDecisionID, forged)
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "7")
	}))}
	t.Cleanup(a.Close)
	_, p, _ := net.SplitHostPort(a.Listener.Addr().String())
	a.port, _ = strconv.Atoi(p)

	var logBuf bytes.Buffer
	h, err := New(Config{Metrics: metrics.New(), AccessLog: accesslog.New(&logBuf), Identity: "spiffe://example.org/ns/shop/sa/orders"})
	if err != nil {
		t.Fatal(err)
	}
	h.SetConfig([]*meshv1.InboundPort{{Port: uint32(a.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		compile(t, shopPolicy(uint32(a.port)), nil))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, tunnelRequest("GET", "/orders/7", "orders", a.port, false))
	res := rec.Result()
	io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want the app's 403", res.StatusCode)
	}
	if v := res.Header.Values(accesslog.HeaderDecisionID); len(v) != 0 {
		t.Errorf("the app's decision ID %q reached the caller in the header", v)
	}
	if v := res.Trailer.Values(accesslog.HeaderDecisionID); len(v) != 0 {
		t.Errorf("the app's decision ID %q reached the caller in the trailers", v)
	}
	var line map[string]any
	if err := json.Unmarshal(logBuf.Bytes(), &line); err != nil {
		t.Fatalf("access log %q: %v", logBuf.String(), err)
	}
	if line["decision"] != accesslog.DecisionAllow || line["decision_id"] != nil {
		t.Errorf("the app's answer logged as decision %v, id %v; want allow, none", line["decision"], line["decision_id"])
	}
}
