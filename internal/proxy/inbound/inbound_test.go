package inbound

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

var caller = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")

func TestInboundForwardsOnlyDeclaredPortsAndProtocols(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get(tunnel.HeaderClientID)+"|"+r.Header.Get(tunnel.HeaderTargetPort))
	}))
	defer app.Close()
	_, appPort, _ := net.SplitHostPort(app.Listener.Addr().String())
	port, _ := strconv.Atoi(appPort)

	m := metrics.New()
	h, err := New(Config{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	h.SetPorts([]*meshv1.InboundPort{
		{Port: uint32(port), Protocol: meshv1.Protocol_PROTOCOL_HTTP},
		{Port: 9999, Protocol: meshv1.Protocol_PROTOCOL_TCP},
	})

	tests := []struct {
		name     string
		method   string
		host     string
		target   string
		peer     bool
		wantCode int
		wantBody string
		reason   string
	}{
		{"forwarded with the verified identity", "GET", "orders", appPort, true, 200, caller.String() + "|", ""},
		{"undeclared port", "GET", "orders", "8081", true, 403, "", ReasonPortNotAllowed},
		{"no port", "GET", "orders", "", true, 403, "", ReasonPortNotAllowed},
		{"garbage port", "GET", "orders", "80x", true, 403, "", ReasonPortNotAllowed},
		{"HTTP to an opaque port", "GET", "orders", "9999", true, 403, "", ReasonProtocolMismatch},
		{"stream to an HTTP port", "CONNECT", "127.0.0.1:" + appPort, "", true, 403, "", ReasonProtocolMismatch},
		{"stream to an undeclared port", "CONNECT", "127.0.0.1:8081", "", true, 403, "", ReasonPortNotAllowed},
		{"stream to another host", "CONNECT", "10.0.0.1:9999", "", true, 400, "", ReasonBadTarget},
		{"no peer identity", "GET", "orders", appPort, false, 403, "", ReasonNoPeerIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "http://"+tt.host+"/", nil)
			req.Host = tt.host
			if tt.target != "" {
				req.Header.Set(tunnel.HeaderTargetPort, tt.target)
			}
			// A forged identity from the peer must be replaced.
			req.Header.Set(tunnel.HeaderClientID, "spiffe://evil/ns/x/sa/y")
			if tt.peer {
				req = req.WithContext(context.WithValue(req.Context(), peerKey{}, caller))
			}
			var before float64
			if tt.reason != "" {
				before = testutil.ToFloat64(m.Refusals.WithLabelValues(metrics.Inbound, tt.reason))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("code %d (%s), want %d", rec.Code, rec.Body, tt.wantCode)
			}
			if tt.wantBody != "" && rec.Body.String() != tt.wantBody {
				t.Fatalf("app saw %q, want %q", rec.Body, tt.wantBody)
			}
			if tt.reason != "" {
				if got := testutil.ToFloat64(m.Refusals.WithLabelValues(metrics.Inbound, tt.reason)); got != before+1 {
					t.Fatalf("refusal %s counted %v times, want %v", tt.reason, got, before+1)
				}
			}
		})
	}
}

func TestInboundRefusesEverythingBeforeConfig(t *testing.T) {
	h, _ := New(Config{Metrics: metrics.New()})
	req := httptest.NewRequest("GET", "http://orders/", nil)
	req.Header.Set(tunnel.HeaderTargetPort, "8080")
	req = req.WithContext(context.WithValue(req.Context(), peerKey{}, caller))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("code %d before any config, want 403", rec.Code)
	}
}
