package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/bypasstable"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// rawExchange writes raw to addr and returns the answer's status, or 0 if
// the connection closed without one.
func rawExchange(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	req := &http.Request{Method: strings.Fields(strings.TrimLeft(raw, "\r\n"))[0]}
	res, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("%q: %v", raw, err)
		}
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// TestTunnelReplaysBypasses replays the advisory table, and the request
// shapes that went around per-request authorization, through the real
// servers: the calling proxy's listeners (HTTP and Auto ports), and the
// tunnel itself, with requests and streams no calling proxy would send.
// No denied or invalid request may reach an app.
func TestTunnelReplaysBypasses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	policy := &authz.WorkloadPolicy{
		Namespace: benchNS, Default: authz.DefaultAllowAuthenticated,
		TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
		Policies: []authz.Policy{{Namespace: benchNS, Name: "deny-admin", Action: authz.ActionDeny, Rules: []authz.Rule{
			{To: []authz.Operation{{Ports: []uint32{p.h1Port, p.autoPort}, Paths: []string{"/admin*", "/api/admin/**"}}}},
			{To: []authz.Operation{{Ports: []uint32{p.h1Port, p.autoPort}, Hosts: []string{"admin.shop"}}}},
			{To: []authz.Operation{{Ports: []uint32{p.h1Port, p.autoPort}, Methods: []string{"GET"}, Paths: []string{"/reports"}}}},
		}}},
	}
	if err := p.server.apply(p.withPolicy("2", policy)); err != nil {
		t.Fatal(err)
	}
	peer := tunnel.Peer{Address: p.server.TunnelAddr(), ID: p.server.id}
	// overTunnel sends a request straight over the tunnel, as a rogue
	// calling proxy could: no client-side parsing of the target.
	overTunnel := func(method, target, host string, port uint32, hdr http.Header) int {
		t.Helper()
		req := &http.Request{Method: method, URL: &url.URL{Opaque: target}, Host: host, Header: http.Header{}}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set(tunnel.HeaderTargetPort, strconv.Itoa(int(port)))
		res, err := p.client.dialer.RoundTrip(peer, req)
		if err != nil {
			return 0 // refused by the client or the server's HTTP/2 layer
		}
		res.Body.Close()
		return res.StatusCode
	}
	refused := func(what string, status int) {
		t.Helper()
		if status == http.StatusOK {
			t.Errorf("%s: 200, want a refusal", what)
		}
	}
	for _, target := range bypasstable.Targets() {
		for _, port := range []uint32{p.h1Port, p.autoPort} {
			refused("tunnel "+target, overTunnel("GET", target, "orders", port, nil))
		}
		if strings.IndexFunc(target, func(r rune) bool { return r > 0x7f }) >= 0 {
			// The calling proxy percent-encodes raw non-ASCII, which the
			// rules then match (and the app receives) as such: checked
			// below.
			continue
		}
		refused("HTTP port "+target, rawExchange(t, p.httpAddr, "GET "+target+" HTTP/1.1\r\nHost: orders\r\n\r\n"))
		refused("Auto port "+target, rawExchange(t, p.autoAddr, "GET "+target+" HTTP/1.1\r\nHost: orders\r\n\r\n"))
	}
	for _, addr := range []string{p.httpAddr, p.autoAddr} {
		for _, raw := range []string{
			"GET http://admin.shop/x HTTP/1.1\r\nHost: orders\r\n\r\n", // absolute form, another Host
			"get /admin HTTP/1.1\r\nHost: orders\r\n\r\n",
			"get /a/../admin/x HTTP/1.1\r\nHost: orders\r\n\r\n",
			"get /x HTTP/1.1\r\nHost: orders\r\n\r\n",
			"PROPFIND /admin HTTP/1.1\r\nHost: orders\r\n\r\n",
			"\r\nGET /admin HTTP/1.1\r\nHost: orders\r\n\r\n",
			"\r\n\r\nget /x HTTP/1.1\r\nHost: orders\r\n\r\n",
			"GET /reports HTTP/1.1\r\nHost: orders\r\n\r\n",
			"OPTIONS * HTTP/1.1\r\nHost: orders\r\n\r\n", // answered by the calling proxy itself
		} {
			if got := rawExchange(t, addr, raw); got == http.StatusOK && !strings.HasPrefix(raw, "OPTIONS") {
				t.Errorf("%s %q: 200, want a refusal", addr, raw)
			}
		}
	}
	for _, port := range []uint32{p.h1Port, p.autoPort} {
		overTunnel("OPTIONS", "*", "orders", port, nil) // answered by the server's HTTP/2 layer; the app count says
		refused("tunnel lower-case method", overTunnel("get", "/x", "orders", port, nil))
		refused("tunnel unknown method on a denied path", overTunnel("PROPFIND", "/admin", "orders", port, nil))
		refused("tunnel absolute form, another host", overTunnel("GET", "http://admin.shop/x", "orders", port, nil))
	}
	// Streams of HTTP to the Auto port.
	for _, raw := range []string{
		"get /admin HTTP/1.1\r\nHost: orders\r\n\r\n",
		"PROPFIND /x HTTP/1.1\r\nHost: orders\r\n\r\n",
		"\r\nGET /admin HTTP/1.1\r\nHost: orders\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		body, err := p.client.dialer.Connect(ctx, peer, int(p.autoPort), strings.NewReader(raw))
		var re *tunnel.RefusedError
		if !errors.As(err, &re) || re.Status != http.StatusForbidden {
			t.Errorf("stream %q: %v, want refused with 403", raw, err)
		}
		if body != nil {
			body.Close()
		}
		cancel()
	}
	if n := p.h1Hits.Load() + p.autoHits.Load(); n != 0 {
		t.Fatalf("the apps were reached %d times", n)
	}

	// What the rules allow still goes through, without forged identities:
	// a DENY on GET does not cover HEAD.
	forged := http.Header{"Rampart-Client-Id": {"spiffe://evil/ns/x/sa/y"}, "Rampart_Client_Id": {"spiffe://evil/ns/x/sa/y"}}
	if got := overTunnel("HEAD", "/reports", "orders", p.autoPort, forged); got != http.StatusOK {
		t.Fatalf("HEAD /reports: %d, want 200", got)
	}
	if got := rawExchange(t, p.autoAddr, "PROPFIND /a/../x HTTP/1.1\r\nHost: orders\r\n\r\n"); got != http.StatusOK {
		t.Fatalf("PROPFIND /x through the Auto port: %d, want 200", got)
	}
	// Raw non-ASCII from the calling app: the app receives it
	// percent-encoded, as the rules matched it, not as /admin.
	c, err := net.Dial("tcp", p.autoAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /\uff41dmin HTTP/1.1\r\nHost: orders\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := "GET orders /%EF%BD%81dmin"; string(b) != want {
		t.Fatalf("the app saw %q, want %q", b, want)
	}
	if n := p.autoHits.Load(); n != 3 {
		t.Fatalf("the Auto port's app was reached %d times, want 3", n)
	}
}

// TestPeerRefusalWithoutDecisionIsUnavailable: the calling proxy counts a
// refused stream as the destination's policy only when the refusal
// carries a decision ID; a 403 for an undeclared port is not a policy's.
func TestPeerRefusalWithoutDecisionIsUnavailable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	c := p.withPolicy("2", nil)
	c.Authorization = p.serverConfig.Authorization
	c.Inbound = c.Inbound[:2] // the echo port is no longer declared
	if err := p.server.apply(c); err != nil {
		t.Fatal(err)
	}
	denied := testutil.ToFloat64(p.client.metrics.Refusals.WithLabelValues(metrics.Outbound, "peer_denied"))
	unavailable := testutil.ToFloat64(p.client.metrics.Refusals.WithLabelValues(metrics.Outbound, "peer_unavailable"))
	conn, err := net.Dial("tcp", p.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "ping")
	if n, err := io.Copy(io.Discard, conn); n != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes (%v), want the connection closed", n, err)
	}
	if got := testutil.ToFloat64(p.client.metrics.Refusals.WithLabelValues(metrics.Outbound, "peer_denied")); got != denied {
		t.Fatalf("peer_denied counted %v times, want %v", got, denied)
	}
	if got := testutil.ToFloat64(p.client.metrics.Refusals.WithLabelValues(metrics.Outbound, "peer_unavailable")); got <= unavailable {
		t.Fatalf("peer_unavailable counted %v times, want more than %v", got, unavailable)
	}
}
