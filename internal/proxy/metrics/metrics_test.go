package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/telemetry"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

func TestCommonCodesAreIndexed(t *testing.T) {
	for i, c := range commonCodes {
		if got := codeIndex(c); got != i {
			t.Errorf("codeIndex(%d) = %d, want %d", c, got, i)
		}
		if Code(c) != codeNames[i] {
			t.Errorf("Code(%d) = %q", c, Code(c))
		}
	}
	if codeIndex(418) != -1 || Code(418) != "418" {
		t.Errorf("418: index %d, name %q", codeIndex(418), Code(418))
	}
}

const (
	self   = "spiffe://example.org/ns/shop/sa/web"
	client = "spiffe://example.org/ns/shop/sa/client"
	orders = "spiffe://example.org/ns/shop/sa/orders"
)

func TestSeriesCountsUnderTheirLabels(t *testing.T) {
	m := NewWith(Options{Workload: "web-1", Identity: self})
	s := m.Series(Edge{Direction: Outbound, PeerWorkload: "orders-1", PeerIdentity: orders, Service: "orders.shop", MTLS: true}, "shop/canary")
	s.Observe(200, 0.001)
	s.Observe(200, 0.002)
	s.Observe(418, 0.003) // not kept at hand
	want := `# HELP rampart_proxy_requests_total HTTP requests proxied, by direction, source and destination workload and SPIFFE ID, destination service, HTTPRoute, response status code and TLS state.
# TYPE rampart_proxy_requests_total counter
rampart_proxy_requests_total{code="200",direction="outbound",dst_identity="spiffe://example.org/ns/shop/sa/orders",dst_service="orders.shop",dst_workload="orders-1",route="shop/canary",src_identity="spiffe://example.org/ns/shop/sa/web",src_workload="web-1",tls="mtls"} 2
rampart_proxy_requests_total{code="418",direction="outbound",dst_identity="spiffe://example.org/ns/shop/sa/orders",dst_service="orders.shop",dst_workload="orders-1",route="shop/canary",src_identity="spiffe://example.org/ns/shop/sa/web",src_workload="web-1",tls="mtls"} 1
`
	if err := testutil.CollectAndCompare(m.Requests, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.RequestDuration); n != 1 {
		t.Errorf("%d duration series, want 1", n)
	}
	if got := Value(m.RequestDuration, "route", "shop/canary"); got != 3 {
		t.Errorf("%v durations observed, want 3", got)
	}
}

func TestInboundPutsThePeerAtTheSource(t *testing.T) {
	m := NewWith(Options{Workload: "web-1", Identity: self})
	m.Series(Edge{Direction: Inbound, PeerIdentity: client, Service: ":8080", MTLS: true}, "").Observe(200, 0.001)
	m.Series(Edge{Direction: Inbound, Service: ":8080"}, "").Observe(403, 0.001)
	if got := Value(m.Requests, "src_identity", client, "src_workload", "", "dst_identity", self, "dst_workload", "web-1", "tls", MTLS, "code", "200"); got != 1 {
		t.Errorf("mTLS request counted %v times, want 1", got)
	}
	if got := Value(m.Requests, "src_identity", "", "dst_identity", self, "tls", Plaintext, "code", "403"); got != 1 {
		t.Errorf("plaintext request counted %v times, want 1", got)
	}
	if got := Value(m.Requests, "direction", Outbound); got != 0 {
		t.Errorf("%v outbound requests, want 0", got)
	}
}

func TestStreamsCountConnectionsAndBytes(t *testing.T) {
	agg := telemetry.NewAggregator(time.Unix(0, 0))
	m := NewWith(Options{Workload: "web-1", Identity: self, Telemetry: agg})
	e := Edge{Direction: Outbound, PeerWorkload: "redis-0", PeerIdentity: orders, Service: "redis.shop", MTLS: true}
	m.StreamOpened(e)
	m.StreamClosed(e, 10, 32)
	m.StreamRefused(e, 403)
	m.StreamRefused(e, 502)
	if got := Value(m.TCPConnections, "dst_workload", "redis-0", "src_identity", self); got != 1 {
		t.Errorf("%v connections, want 1", got)
	}
	if got := Value(m.TCPBytes, "flow", "sent"); got != 10 {
		t.Errorf("%v bytes sent, want 10", got)
	}
	if got := Value(m.TCPBytes, "flow", "received"); got != 32 {
		t.Errorf("%v bytes received, want 32", got)
	}
	rep := agg.Collect("web-1", time.Unix(5, 0), 0)
	if len(rep.GetEdges()) != 1 {
		t.Fatalf("report %v, want one edge", rep)
	}
	got := rep.GetEdges()[0]
	if got.GetService() != "shop/redis" || got.GetPeerWorkload() != "redis-0" || got.GetDirection() != meshv1.Direction_DIRECTION_OUTBOUND ||
		got.GetRequests() != 3 || got.GetDenied() != 1 || got.GetFailures() != 1 || got.GetBytesSent() != 10 || got.GetBytesReceived() != 32 {
		t.Errorf("edge %v", got)
	}
}

func TestObserveHTTPFeedsTelemetry(t *testing.T) {
	agg := telemetry.NewAggregator(time.Unix(0, 0))
	m := NewWith(Options{Workload: "web-1", Identity: self, Telemetry: agg})
	in := m.Series(Edge{Direction: Inbound, PeerIdentity: client, Service: ":8080", MTLS: true}, "")
	req := httptest.NewRequest("POST", "/api/v1/orders/7?debug=1", strings.NewReader("12345"))
	in.ObserveHTTP(req, http.Header{"Content-Length": {"3"}}, 200, 0.002)
	in.ObserveHTTP(req, http.Header{DecisionHeader: {"d1"}}, 403, 0.001)
	in.ObserveHTTP(req, http.Header{DecisionHeader: {"d2"}, "Grpc-Status": {"8"}}, 200, 0.001)
	in.ObserveHTTP(req, http.Header{}, 403, 0.001) // the app's own 403: not a denial
	in.ObserveHTTP(req, http.Header{}, 502, 0.001)
	rep := agg.Collect("web-1", time.Unix(5, 0), 0)
	if len(rep.GetEdges()) != 1 {
		t.Fatalf("report %v, want one edge", rep)
	}
	e := rep.GetEdges()[0]
	if e.GetRequests() != 5 || e.GetDenied() != 1 || e.GetRateLimited() != 1 || e.GetFailures() != 1 {
		t.Errorf("requests %d denied %d rate limited %d failures %d, want 5, 1, 1, 1", e.GetRequests(), e.GetDenied(), e.GetRateLimited(), e.GetFailures())
	}
	// Inbound: the request body came from the peer, the response went to it.
	if e.GetBytesReceived() != 25 || e.GetBytesSent() != 3 {
		t.Errorf("bytes received %d sent %d, want 25 and 3", e.GetBytesReceived(), e.GetBytesSent())
	}
	if e.GetService() != "" || e.GetPeerSpiffeId() != client || !e.GetMtls() {
		t.Errorf("edge %v", e)
	}
	var kinds []string
	for _, c := range e.GetRequestCounts() {
		kinds = append(kinds, fmt.Sprintf("%s %s %dxx %d", c.GetMethod(), c.GetPath(), c.GetStatusClass(), c.GetCount()))
	}
	want := []string{"POST /api/v1/orders 2xx 2", "POST /api/v1/orders 4xx 2", "POST /api/v1/orders 5xx 1"}
	if strings.Join(kinds, "; ") != strings.Join(want, "; ") {
		t.Errorf("request counts %q, want %q", kinds, want)
	}
}

func TestDecisionHeaderIsTheTunnels(t *testing.T) {
	if DecisionHeader != tunnel.HeaderDecisionID || DecisionHeader != http.CanonicalHeaderKey(DecisionHeader) {
		t.Fatalf("DecisionHeader %q, the tunnel's %q", DecisionHeader, tunnel.HeaderDecisionID)
	}
}

func TestEdgeSeriesRoutesWithoutAllocating(t *testing.T) {
	m := NewWith(Options{Workload: "web-1", Identity: self, Telemetry: telemetry.NewAggregator(time.Now())})
	es := m.EdgeSeries(Edge{Direction: Outbound, PeerIdentity: orders, Service: "orders.shop", MTLS: true})
	plain, canary := es.Route("", ""), es.Route("shop", "canary")
	if plain == canary || es.Route("", "") != plain || es.Route("shop", "canary") != canary {
		t.Fatal("EdgeSeries does not keep one series per route")
	}
	req := httptest.NewRequest("GET", "/orders/7", nil)
	hdr := http.Header{}
	canary.ObserveHTTP(req, hdr, 200, 0.001)
	if n := testing.AllocsPerRun(100, func() {
		es.Route("shop", "canary").ObserveHTTP(req, hdr, 200, 0.001)
		es.Route("", "").Observe(503, 0.001)
	}); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
	if got := Value(m.Requests, "route", "shop/canary", "code", "200"); got != 102 {
		t.Errorf("%v routed requests, want 102", got)
	}
}

func TestServiceName(t *testing.T) {
	for in, want := range map[string]string{"orders.shop": "shop/orders", ":8080": "", "": "", "orders": "", ".shop": ""} {
		if got := serviceName(in); got != want {
			t.Errorf("serviceName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestChildCountsUnderItsLabelsOnceUsed(t *testing.T) {
	m := New()
	c := NewChild(m.AuthzDecisions, "deny", "deny_rule", "shop/no-admin", "0")
	if n := testutil.CollectAndCount(m.AuthzDecisions); n != 0 {
		t.Fatalf("%d series before the first count, want 0", n)
	}
	c.Inc()
	c.Inc()
	if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues("deny", "deny_rule", "shop/no-admin", "0")); got != 2 {
		t.Fatalf("counted %v, want 2", got)
	}
	if n := testing.AllocsPerRun(100, c.Inc); n != 0 {
		t.Fatalf("%v allocations per count", n)
	}
}

func TestEjectedGaugeReadsItsSourceAtScrapeTime(t *testing.T) {
	m := New()
	if n := testutil.CollectAndCount(&m.ejected); n != 0 {
		t.Fatalf("%d series without a source, want 0", n)
	}
	ejected := 0
	m.SetEjectedSource(func(yield func(string, int) bool) { yield("orders.shop", ejected) })
	ejected = 2
	want := `# HELP rampart_proxy_endpoints_ejected Endpoints of a service currently ejected by outlier detection.
# TYPE rampart_proxy_endpoints_ejected gauge
rampart_proxy_endpoints_ejected{service="orders.shop"} 2
`
	if err := testutil.CollectAndCompare(&m.ejected, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
