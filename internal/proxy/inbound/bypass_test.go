package inbound

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampart-mesh/rampart/internal/authz"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
)

// TestConditionsSeeTheHeadersTheAppSees: a condition never sees the
// tunnel's headers as a caller forged them, nor their lookalikes.
func TestConditionsSeeTheHeadersTheAppSees(t *testing.T) {
	app := newApp(t, false)
	h, _ := New(Config{Metrics: metrics.New()})
	// A policy that trusts a header it should not: no request may match it.
	h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}}, compile(t, &authz.WorkloadPolicy{
		Namespace: "shop", Default: authz.DefaultAllowAuthenticated, TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
		Policies: []authz.Policy{{Namespace: "shop", Name: "trusts-headers", Action: authz.ActionAllow, Rules: []authz.Rule{{
			When: `request.headers.exists(k, k.startsWith("rampart"))`,
		}}}},
	}, nil))
	for _, hdr := range []string{"Rampart-Client-Id", "Rampart_Client_Id", "Rampart-App-Protocol", "rampart_target_port"} {
		req := tunnelRequest("GET", "/x", "orders", app.port, false)
		req.Header[hdr] = []string{"spiffe://example.org/ns/shop/sa/admin"}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s: code %d (%q): a condition saw the forged header", hdr, rec.Code, rec.Body)
		}
	}
	if n := app.hits.Load(); n != 0 {
		t.Fatalf("the app was reached %d times", n)
	}
}

// slowBody delivers first, then waits for delay, then delivers rest.
type slowBody struct {
	first, rest string
	delay       time.Duration
	step        int
}

func (b *slowBody) Read(p []byte) (int, error) {
	b.step++
	switch {
	case b.step == 1 && b.first != "":
		return copy(p, b.first), nil
	case b.step <= 2:
		b.step = 2
		time.Sleep(b.delay)
		return copy(p, b.rest), nil
	}
	return 0, io.EOF
}

// serveAbortable serves req and reports whether the handler aborted.
func serveAbortable(h http.Handler, rec *httptest.ResponseRecorder, req *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			aborted = true
		}
	}()
	h.ServeHTTP(rec, req)
	return false
}

// TestInboundRefusesHTTPStreamsOnAutoPorts: a CONNECT stream to an Auto
// port whose bytes speak HTTP is refused before the app sees a byte: the
// caller's proxy sends HTTP to an Auto port as requests, so such a stream
// is an attempt to skip per-request authorization.
func TestInboundRefusesHTTPStreamsOnAutoPorts(t *testing.T) {
	// An app that records what it receives.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var received atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(c, c)
				received.Add(n)
			}()
		}
	}()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	port, _ := strconv.Atoi(p)
	m := metrics.New()
	h, _ := New(Config{Metrics: m, DetectTimeout: 100 * time.Millisecond})
	h.SetConfig([]*meshv1.InboundPort{{Port: uint32(port), Protocol: meshv1.Protocol_PROTOCOL_AUTO}}, allowAuthenticated(t))

	stream := func(body io.Reader) (*httptest.ResponseRecorder, bool) {
		req := tunnelRequest("CONNECT", "", "127.0.0.1:"+p, 0, false)
		req.Body = io.NopCloser(body)
		rec := httptest.NewRecorder()
		return rec, serveAbortable(h, rec, req)
	}
	refused := 0
	for _, b := range []*slowBody{
		{rest: "get /a/../admin/x HTTP/1.1\r\nHost: orders\r\nRampart-Client-Id: spiffe://example.org/ns/shop/sa/admin\r\n\r\n"},
		{rest: "PROPFIND /x HTTP/1.1\r\nHost: orders\r\n\r\n"},
		{rest: "\r\nGET /admin HTTP/1.1\r\nHost: orders\r\n\r\n"},
		{rest: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{rest: "GET /admin\r\n"},
		// Started, then stalled past the detection timeout.
		{first: "GET /adm", rest: "in HTTP/1.1\r\nHost: orders\r\n\r\n", delay: 300 * time.Millisecond},
	} {
		rec, aborted := stream(b)
		if aborted || rec.Code != http.StatusForbidden {
			t.Errorf("%q: code %d, aborted %v, want 403", b.first+b.rest, rec.Code, aborted)
		}
		refused++
	}
	// Nothing before the timeout (a server-first protocol, as far as the
	// proxy can tell), then HTTP: the stream is cut before the app sees
	// a byte.
	rec, aborted := stream(&slowBody{rest: "GET /admin HTTP/1.1\r\nHost: orders\r\n\r\n", delay: 300 * time.Millisecond})
	if !aborted || rec.Code != http.StatusOK {
		t.Errorf("late HTTP: code %d, aborted %v, want the stream opened then cut", rec.Code, aborted)
	}
	refused++
	if n := received.Load(); n != 0 {
		t.Fatalf("the app received %d bytes", n)
	}
	if got := testutil.ToFloat64(m.Refusals.WithLabelValues(metrics.Inbound, ReasonProtocolMismatch)); got != float64(refused) {
		t.Fatalf("protocol mismatches counted %v times, want %d", got, refused)
	}
	// Opaque bytes pass, at once or late.
	for _, b := range []*slowBody{{rest: "\x00\x01binary"}, {rest: "get key\r\n"}, {rest: "\x00late", delay: 300 * time.Millisecond}} {
		rec, aborted := stream(b)
		if aborted || rec.Code != http.StatusOK || rec.Body.String() != b.rest {
			t.Errorf("%q: code %d, aborted %v, echo %q", b.rest, rec.Code, aborted, rec.Body)
		}
	}
	// A TCP port takes any bytes.
	h.SetConfig([]*meshv1.InboundPort{{Port: uint32(port), Protocol: meshv1.Protocol_PROTOCOL_TCP}}, allowAuthenticated(t))
	if rec, _ := stream(&slowBody{rest: "GET /admin HTTP/1.1\r\n\r\n"}); rec.Code != http.StatusOK {
		t.Fatalf("TCP port: code %d", rec.Code)
	}
}

// TestPlaintextAutoPortTakesOnlyHTTP replays the reviewer's bypass: on a
// PERMISSIVE Auto port under an ipBlocks-only ALLOW, HTTP that the old
// sniffer called opaque went to the app raw, unnormalized and with a
// forged identity.
func TestPlaintextAutoPortTakesOnlyHTTP(t *testing.T) {
	app := newApp(t, false)
	s := newPlaintextServer(t, 0)
	s.dst.Store(uint32(app.port))
	s.h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_AUTO}},
		compile(t, permissive(fromLoopback), nil))
	const forged = "Rampart-Client-Id: spiffe://example.org/ns/shop/sa/admin\r\nRampart_Client_Id: x\r\n"
	for _, tc := range []struct {
		raw      string
		status   int
		wantSeen string // what the app saw, for 200
	}{
		{"get /a/../admin/x HTTP/1.1\r\nHost: orders\r\n" + forged + "\r\n", 400, ""},
		{"PROPFIND /a/../x HTTP/1.1\r\nHost: orders\r\n" + forged + "\r\n", 200, "HTTP/1.1 orders /x "},
		{"\r\nGET /a/./b HTTP/1.1\r\nHost: orders\r\n" + forged + "\r\n", 200, "HTTP/1.1 orders /a/b "},
	} {
		res, body := rawRequest(t, s.addr, tc.raw)
		if res.StatusCode != tc.status || (tc.status == 200 && body != tc.wantSeen) {
			t.Errorf("%q: %s, the app saw %q, want %d %q", tc.raw, res.Status, body, tc.status, tc.wantSeen)
		}
	}
	if n := app.hits.Load(); n != 2 {
		t.Fatalf("the app was reached %d times, want 2", n)
	}
	// Bytes that are not HTTP are refused on an Auto port.
	before := testutil.ToFloat64(s.m.Refusals.WithLabelValues(metrics.Inbound, ReasonProtocolMismatch))
	s.closedWithoutAnswer(t, "\x00\x01 not http")
	if got := testutil.ToFloat64(s.m.Refusals.WithLabelValues(metrics.Inbound, ReasonProtocolMismatch)); got != before+1 {
		t.Fatalf("protocol mismatch counted %v times, want %v", got, before+1)
	}
}

// rawRequest writes raw to addr and reads one response.
func rawRequest(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// TestPlaintextRefusalClosesTheConnection: a plaintext client refused by
// policy loses its connection, and with it its slot.
func TestPlaintextRefusalClosesTheConnection(t *testing.T) {
	app := newApp(t, false)
	s := newPlaintextServer(t, 0)
	s.dst.Store(uint32(app.port))
	ports := []*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_AUTO}}
	s.h.SetConfig(ports, compile(t, permissive(), nil)) // denies plaintext by default
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: orders\r\n\r\nGET /y HTTP/1.1\r\nHost: orders\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusForbidden || !res.Close {
		t.Fatalf("%s, close %v: want 403 and the connection closed", res.Status, res.Close)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d bytes (%v) after the refusal: want the connection closed", n, err)
	}
	if got := testutil.ToFloat64(s.m.AuthzDecisions.WithLabelValues("deny", "default_deny", "", "")); got != 1 {
		t.Fatalf("denials counted %v times, want 1 (the second request never read)", got)
	}
}

// TestDenialLogIsSampled: a flood of denials logs a bounded number of
// lines, and the next line says how many were left out; the metrics
// count every one.
func TestDenialLogIsSampled(t *testing.T) {
	app := newApp(t, false)
	m := metrics.New()
	logs, log := newLogLines()
	h, _ := New(Config{Metrics: m, Logger: log})
	h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}}, compile(t, shopPolicy(uint32(app.port)), nil))
	const n = 200
	for range n {
		h.ServeHTTP(httptest.NewRecorder(), tunnelRequest("GET", "/admin/x", "orders", app.port, false))
	}
	if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues("deny", "deny_rule", "shop/no-admin", "0")); got != n {
		t.Fatalf("denials counted %v times, want %d", got, n)
	}
	logged := len(logs.lines(t, "denied"))
	if logged < 50 || logged > 60 {
		t.Fatalf("%d of %d denials logged, want about the burst of 50", logged, n)
	}
	// Another rule (or code) has a sampler of its own.
	h.ServeHTTP(httptest.NewRecorder(), tunnelRequest("PUT", "/orders/1", "orders", app.port, false))
	if got := len(logs.lines(t, "denied")); got != logged+1 {
		t.Fatalf("a denial by another code was not logged")
	}
	time.Sleep(200 * time.Millisecond)
	// A long path is logged truncated.
	long := "/admin/" + strings.Repeat("a", 2000)
	h.ServeHTTP(httptest.NewRecorder(), tunnelRequest("GET", long, "orders", app.port, false))
	lines := logs.lines(t, "denied")
	last := lines[len(lines)-1]
	if s, _ := last["suppressed_since_last"].(float64); int(s) != n-logged {
		t.Fatalf("suppressed_since_last %v, want %d", last["suppressed_since_last"], n-logged)
	}
	if path := last["path"].(string); len(path) > 600 || !strings.HasSuffix(path, fmt.Sprintf("…(%d bytes)", len(long))) {
		t.Fatalf("logged path %q, want it truncated", path)
	}
}
