package inbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"

	"github.com/rampart-mesh/rampart/internal/authz"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/telemetry"
)

// plaintextServer runs ServePlaintext on loopback. Every connection's
// original destination is 127.0.0.1:<dst>, as if iptables had redirected
// a connection to that app port.
type plaintextServer struct {
	h    *Handler
	m    *metrics.Metrics
	addr string
	dst  atomic.Uint32
}

func newPlaintextServer(t *testing.T, maxConns int) *plaintextServer {
	s := &plaintextServer{m: metrics.NewWith(metrics.Options{Telemetry: telemetry.NewAggregator(time.Now())})}
	var err error
	s.h, err = New(Config{
		Metrics: s.m, MaxPlaintextConns: maxConns, DrainTimeout: 50 * time.Millisecond,
		OriginalDst: func(net.Conn) (netip.AddrPort, error) {
			return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.dst.Load())), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.h.ServePlaintext(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServePlaintext: %v", err)
		}
	})
	return s
}

// get sends one HTTP/1.1 request to the plaintext listener, with a
// forged identity.
func (s *plaintextServer) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.addr)
	}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://orders.shop"+path, nil)
	req.Header.Set("Rampart-Client-Id", "spiffe://example.org/ns/shop/sa/admin")
	req.Header["Rampart_Client_Id"] = []string{"spiffe://example.org/ns/shop/sa/admin"}
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// closedWithoutAnswer sends b and checks that the connection is closed
// without a byte in answer (by a FIN, or a reset when b was left unread).
func (s *plaintextServer) closedWithoutAnswer(t *testing.T, b string) {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) // a regression fails rather than hangs
	io.WriteString(c, b)
	if n, err := io.Copy(io.Discard, c); n != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes (err %v): want the connection closed", n, err)
	}
}

func permissive(rules ...authz.Rule) *authz.WorkloadPolicy {
	p := &authz.WorkloadPolicy{
		Namespace: "legacy", Default: authz.DefaultAllowAuthenticated,
		TLS: authz.TLSPolicy{Mode: authz.TLSPermissive, Ports: []authz.PortTLS{{Port: 8443, Mode: authz.TLSStrict}}},
	}
	if len(rules) > 0 {
		p.Policies = []authz.Policy{{Namespace: "legacy", Name: "plaintext", Action: authz.ActionAllow, Rules: rules}}
	}
	return p
}

var fromLoopback = authz.Rule{From: []authz.Source{{IPBlocks: []string{"127.0.0.0/8"}}}}

func TestPlaintextRefusedUnderStrictMTLS(t *testing.T) {
	app := newApp(t, false)
	s := newPlaintextServer(t, 0)
	s.h.SetConfig([]*meshv1.InboundPort{
		{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP},
		{Port: 8443, Protocol: meshv1.Protocol_PROTOCOL_HTTP},
	}, allowAuthenticated(t))
	for _, port := range []int{app.port, 8443, 9999} {
		s.dst.Store(uint32(port))
		s.closedWithoutAnswer(t, "GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
	}
	// A PERMISSIVE workload with a STRICT port, and no policy at all.
	s.h.SetConfig([]*meshv1.InboundPort{{Port: 8443, Protocol: meshv1.Protocol_PROTOCOL_HTTP}}, compile(t, permissive(fromLoopback), nil))
	s.dst.Store(8443)
	s.closedWithoutAnswer(t, "GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
	s.h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}}, Policy{})
	s.dst.Store(uint32(app.port))
	s.closedWithoutAnswer(t, "GET / HTTP/1.1\r\nHost: orders\r\n\r\n")

	if got := testutil.ToFloat64(s.m.Plaintext.WithLabelValues("http/1.1", PlaintextRefused)); got != 5 {
		t.Fatalf("refused plaintext counted %v times, want 5", got)
	}
	// Refused on a STRICT port (not on the undeclared one): security
	// counts for the controller.
	sec := s.m.Telemetry().Collect("w", time.Now(), 0).GetSecurity()
	want := map[uint32]uint64{uint32(app.port): 2, 8443: 2}
	got := map[uint32]uint64{}
	for _, c := range sec {
		if c.GetKind() != meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT || c.GetPeerIp() != "127.0.0.1" || c.GetPresentedSpiffeId() != "" {
			t.Fatalf("security count %v, want plaintext on strict from 127.0.0.1", c)
		}
		got[c.GetPort()] = c.GetCount()
	}
	if len(got) != len(want) || got[uint32(app.port)] != 2 || got[8443] != 2 {
		t.Fatalf("plaintext-on-strict counts by port %v, want %v", got, want)
	}
	if n := app.hits.Load(); n != 0 {
		t.Fatalf("the app was reached %d times", n)
	}
}

func TestPlaintextHTTPOnPermissivePort(t *testing.T) {
	app := newApp(t, false)
	s := newPlaintextServer(t, 0)
	s.dst.Store(uint32(app.port))
	ports := []*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_AUTO}}

	// Allowed by address: the app sees the normalized path and no
	// identity, whatever the client claimed.
	s.h.SetConfig(ports, compile(t, permissive(fromLoopback), nil))
	res, body := s.get(t, "/a/./b//c?x=1")
	if want := "HTTP/1.1 orders.shop /a/b/c?x=1 "; res.StatusCode != http.StatusOK || body != want {
		t.Fatalf("%s: the app saw %q, want %q", res.Status, body, want)
	}
	if got := testutil.ToFloat64(s.m.Plaintext.WithLabelValues("http/1.1", PlaintextAccepted)); got != 1 {
		t.Fatalf("accepted plaintext counted %v times", got)
	}
	if got := testutil.ToFloat64(s.m.AuthzDecisions.WithLabelValues("allow", "allow_rule", "legacy/plaintext", "0")); got != 1 {
		t.Fatalf("allowed plaintext request counted %v times", got)
	}
	if got := metrics.Value(s.m.Requests, "direction", metrics.Inbound, "src_identity", "", "tls", metrics.Plaintext, "dst_service", ":"+strconv.Itoa(app.port), "code", "200"); got != 1 {
		t.Fatalf("plaintext request counted %v times in requests_total", got)
	}

	res, body = s.get(t, "/a%2Fb")
	if res.StatusCode != http.StatusBadRequest || res.Header.Get(HeaderDecisionID) == "" {
		t.Fatalf("%s (%q), want 400 with a decision ID", res.Status, body)
	}

	// Without an ALLOW rule that admits it, the default needs an
	// identity that plaintext does not have.
	s.h.SetConfig(ports, compile(t, permissive(), nil))
	res, body = s.get(t, "/")
	if res.StatusCode != http.StatusForbidden || res.Header.Get(HeaderDecisionID) == "" {
		t.Fatalf("%s (%q), want 403 for lack of identity", res.Status, body)
	}
	checkRefusalBody(t, body, res.StatusCode, res.Header.Get(HeaderDecisionID), "")
	if got := testutil.ToFloat64(s.m.AuthzDecisions.WithLabelValues("deny", "default_deny", "", "")); got != 1 {
		t.Fatalf("denial by the default counted %v times, want 1", got)
	}
	if n := app.hits.Load(); n != 1 {
		t.Fatalf("the app was reached %d times, want 1", n)
	}
}

func TestPlaintextH2COnPermissivePort(t *testing.T) {
	app := newApp(t, true)
	s := newPlaintextServer(t, 0)
	s.dst.Store(uint32(app.port))
	s.h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP2}},
		compile(t, permissive(fromLoopback), nil))
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.addr)
	}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://orders/x/../y", nil)
	req.Header.Set("Rampart-Client-Id", "spiffe://example.org/ns/shop/sa/admin")
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := "HTTP/2.0 orders /y "; res.StatusCode != http.StatusOK || string(b) != want {
		t.Fatalf("%s: the app saw %q, want %q", res.Status, b, want)
	}
	if got := testutil.ToFloat64(s.m.Plaintext.WithLabelValues("h2c", PlaintextAccepted)); got != 1 {
		t.Fatalf("accepted h2c counted %v times", got)
	}
}

// echoApp is a TCP app that echoes.
func echoApp(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	port, _ := strconv.Atoi(p)
	return port
}

func TestPlaintextTCPOnPermissivePort(t *testing.T) {
	port := echoApp(t)
	s := newPlaintextServer(t, 1)
	s.dst.Store(uint32(port))
	ports := []*meshv1.InboundPort{{Port: uint32(port), Protocol: meshv1.Protocol_PROTOCOL_TCP}}
	s.h.SetConfig(ports, compile(t, permissive(fromLoopback), nil))

	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, "ping\n")
	if line, err := br.ReadString('\n'); line != "ping\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
	if got := testutil.ToFloat64(s.m.AuthzDecisions.WithLabelValues("allow", "allow_rule", "legacy/plaintext", "0")); got != 1 {
		t.Fatalf("allowed stream counted %v times", got)
	}

	// The one connection allowed at once is busy: the next is closed.
	s.closedWithoutAnswer(t, "ping\n")
	if got := testutil.ToFloat64(s.m.Plaintext.WithLabelValues("unclassified", PlaintextRefused)); got != 1 {
		t.Fatalf("connections beyond the bound counted %v times", got)
	}
	c.Close()

	// Denied by the default (no identity): closed. The slot frees once
	// the first connection's copying ends, which the test cannot see:
	// retry until the connection is served.
	s.h.SetConfig(ports, compile(t, permissive(), nil))
	for testutil.ToFloat64(s.m.AuthzDecisions.WithLabelValues("deny", "default_deny", "", "")) == 0 {
		s.closedWithoutAnswer(t, "ping\n")
	}
}

func TestPlaintextHTTPPortRefusesOpaqueBytes(t *testing.T) {
	app := newApp(t, false)
	s := newPlaintextServer(t, 0)
	s.dst.Store(uint32(app.port))
	s.h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		compile(t, permissive(fromLoopback), nil))
	s.closedWithoutAnswer(t, "\x00\x01 not http")
	if got := testutil.ToFloat64(s.m.Refusals.WithLabelValues(metrics.Inbound, ReasonProtocolMismatch)); got != 1 {
		t.Fatalf("protocol mismatch counted %v times", got)
	}
	if got := testutil.ToFloat64(s.m.Plaintext.WithLabelValues("tcp", PlaintextRefused)); got != 1 {
		t.Fatalf("refused opaque plaintext counted %v times", got)
	}
}

// TestPlaintextRequestOnPortTurnedStrict: a plaintext connection accepted
// on a PERMISSIVE port whose port then turns STRICT has its next request
// refused, and counted as plaintext on a strict port.
func TestPlaintextRequestOnPortTurnedStrict(t *testing.T) {
	app := newApp(t, false)
	s := newPlaintextServer(t, 0)
	s.dst.Store(uint32(app.port))
	ports := []*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}}
	s.h.SetConfig(ports, compile(t, permissive(fromLoopback), nil))
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	send := func() int {
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if code := send(); code != http.StatusOK {
		t.Fatalf("plaintext request on a PERMISSIVE port: %d", code)
	}
	strict := permissive(fromLoopback)
	strict.TLS.Ports = append(strict.TLS.Ports, authz.PortTLS{Port: uint32(app.port), Mode: authz.TLSStrict})
	s.h.SetConfig(ports, compile(t, strict, nil))
	if code := send(); code != http.StatusForbidden {
		t.Fatalf("plaintext request once the port is STRICT: %d, want 403", code)
	}
	sec := s.m.Telemetry().Collect("w", time.Now(), 0).GetSecurity()
	if len(sec) != 1 || sec[0].GetKind() != meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT ||
		sec[0].GetPort() != uint32(app.port) || sec[0].GetPeerIp() != "127.0.0.1" || sec[0].GetCount() != 1 {
		t.Fatalf("security counts %v, want one plaintext-on-strict request to port %d", sec, app.port)
	}
}
