package outbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/ca"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/egress"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// mapResolver answers fully qualified names (a trailing dot) from a map
// of their names without the dot.
type mapResolver map[string][]netip.Addr

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := m[strings.TrimSuffix(host, ".")]; ok && strings.HasSuffix(host, ".") {
		return a, nil
	}
	return nil, errors.New("no such host")
}

// egressRig is an Outbound whose egress path is driven directly: each
// connection is a loopback pair whose server end is handed to
// serveEgress with the destination given, as the transparent listener
// does with the original destination.
type egressRig struct {
	t *testing.T
	o *Outbound
	c *conns
	m *metrics.Metrics
	// wg waits for the connections served.
	wg sync.WaitGroup

	mu sync.Mutex
	// routes maps the destinations the tests name (documentation
	// addresses) to the loopback servers that stand for them.
	routes map[string]string
}

// route makes connections to the destination named reach the loopback
// server at, and returns the destination named.
func (r *egressRig) route(named string, at netip.AddrPort) netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	dst := netip.AddrPortFrom(netip.MustParseAddr(named), at.Port())
	r.routes[dst.String()] = at.String()
	return dst
}

func newEgressRig(t *testing.T, res mapResolver) *egressRig {
	t.Helper()
	authority, err := ca.Open(ca.Config{Dir: t.TempDir(), TrustDomain: testTD})
	if err != nil {
		t.Fatal(err)
	}
	bundle := new(meshtls.Bundle)
	bundle.SetRoots(testTD, authority.Roots())
	d, err := tunnel.NewDialer(tunnel.DialerConfig{TLS: svidConfig(t, authority, bundle, spiffeid.RequireFromPath(testTD, "/ns/test/sa/client"))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	m := metrics.New()
	o, err := New(Config{Namespace: "test", Dialer: d, Metrics: m, EgressResolver: res, DetectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &egressRig{t: t, o: o, m: m, c: &conns{o: o, ctx: ctx}, routes: map[string]string{}}
	t.Cleanup(func() { cancel(); r.wg.Wait() })
	dial := o.egress.dial
	o.egress.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		r.mu.Lock()
		if at, ok := r.routes[addr]; ok {
			addr = at
		}
		r.mu.Unlock()
		return dial(ctx, network, addr)
	}
	return r
}

// serve applies pc and returns the app's end of a connection to dst.
func (r *egressRig) serve(pc *meshv1.ProxyConfig, dst netip.AddrPort) net.Conn {
	r.t.Helper()
	st := &state{egress: pc.GetSettings().GetEgress(), allowed: compileEgress(pc)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	defer l.Close()
	app, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { app.Close() })
	conn, err := l.Accept()
	if err != nil {
		r.t.Fatal(err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.o.serveEgress(r.c, conn, dst, st)
	}()
	app.SetDeadline(time.Now().Add(10 * time.Second)) // a regression fails rather than hangs
	return app
}

func (r *egressRig) count(dest, action string) float64 {
	return testutil.ToFloat64(r.m.Egress.WithLabelValues(dest, action))
}

func allowListed(rules ...*meshv1.EgressRule) *meshv1.ProxyConfig {
	return &meshv1.ProxyConfig{
		Settings: &meshv1.Settings{Egress: meshv1.EgressMode_EGRESS_ALLOW_LISTED},
		Egress:   &meshv1.EgressPolicy{Rules: rules},
	}
}

// get sends a plain HTTP/1 request for host on conn and returns the
// answer's status and body.
func get(t *testing.T, conn net.Conn, host string) (int, string, http.Header) {
	t.Helper()
	defer conn.Close() // done: the proxy's copy towards the server ends
	if _, err := io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

func httpServer(t *testing.T) (netip.AddrPort, func() int) {
	t.Helper()
	var mu sync.Mutex
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		io.WriteString(w, "external:"+r.Host)
	}))
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://")), func() int { mu.Lock(); defer mu.Unlock(); return hits }
}

func TestEgressAllowListedByCIDR(t *testing.T) {
	dst, hits := httpServer(t)
	r := newEgressRig(t, nil)
	pc := allowListed(&meshv1.EgressRule{Source: "mesh/loopback", Cidrs: []string{"127.0.0.0/8"}, Ports: []uint32{uint32(dst.Port())}})
	code, body, _ := get(t, r.serve(pc, dst), "anything.example")
	if code != 200 || body != "external:anything.example" {
		t.Fatalf("allowed by network: %d %q", code, body)
	}
	// Another port of the same address is not admitted: refused at once.
	other := netip.AddrPortFrom(dst.Addr(), dst.Port()+1)
	conn := r.serve(pc, other)
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("refused connection read %d bytes", n)
	}
	r.wg.Wait()
	if got := r.count("127.0.0.0/8", EgressAllowed); got != 1 {
		t.Errorf("allowed count %v, want 1", got)
	}
	if got := r.count("127.0.0.1", EgressRefused); got != 1 {
		t.Errorf("refused count %v, want 1", got)
	}
	if hits() != 1 {
		t.Errorf("server hit %d times, want 1", hits())
	}
	sent := testutil.ToFloat64(r.m.EgressBytes.WithLabelValues("127.0.0.0/8", EgressAllowed, "sent"))
	received := testutil.ToFloat64(r.m.EgressBytes.WithLabelValues("127.0.0.0/8", EgressAllowed, "received"))
	if sent < 40 || received < 40 {
		t.Errorf("bytes sent %v, received %v: want the request and the answer", sent, received)
	}
}

func TestEgressAllowListedByHost(t *testing.T) {
	srv, hits := httpServer(t)
	r := newEgressRig(t, mapResolver{
		"api.example.com":  {netip.MustParseAddr("203.0.113.10")},
		"forged.example":   {netip.MustParseAddr("198.51.100.1")},
		"www.example.org":  {netip.MustParseAddr("203.0.113.10")},
		"evil.example.net": {netip.MustParseAddr("203.0.113.10")},
	})
	dst := r.route("203.0.113.10", srv)
	pc := allowListed(&meshv1.EgressRule{Source: "shop/api", Hosts: []string{"api.example.com", "*.example.org", "forged.example"}, Ports: []uint32{uint32(dst.Port())}})
	tests := []struct {
		host    string
		code    int
		label   string
		allowed bool
	}{
		{"api.example.com", 200, "api.example.com", true},
		{"API.Example.com:80", 200, "api.example.com", true},
		{"www.example.org", 200, "*.example.org", true},
		// Admitted by name, but the name resolves elsewhere: a forged
		// Host cannot reach this address.
		{"forged.example", 403, "forged.example", false},
		// Resolves here, but no rule names it.
		{"evil.example.net", 403, "evil.example.net", false},
		{"example.org", 403, "example.org", false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			before := r.count(tt.label, map[bool]string{true: EgressAllowed, false: EgressRefused}[tt.allowed])
			code, body, h := get(t, r.serve(pc, dst), tt.host)
			if code != tt.code {
				t.Fatalf("status %d %q, want %d", code, body, tt.code)
			}
			if !tt.allowed && h.Get(tunnel.HeaderDecisionID) == "" {
				t.Errorf("403 without %s", tunnel.HeaderDecisionID)
			}
			r.wg.Wait()
			after := r.count(tt.label, map[bool]string{true: EgressAllowed, false: EgressRefused}[tt.allowed])
			if after != before+1 {
				t.Errorf("count of %q went %v -> %v", tt.label, before, after)
			}
		})
	}
	if hits() != 3 {
		t.Errorf("server hit %d times, want 3", hits())
	}
}

// TestEgressAllowListedTLS admits a TLS connection by its server name and
// checks that the ClientHello read to decide reaches the server intact.
func TestEgressAllowListedTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tls:"+r.TLS.ServerName)
	}))
	t.Cleanup(srv.Close)
	dst := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "https://"))
	r := newEgressRig(t, mapResolver{"secure.example.com": {netip.MustParseAddr("203.0.113.20")}, "other.example.com": {netip.MustParseAddr("203.0.113.20")}})
	dst = r.route("203.0.113.20", dst)
	pc := allowListed(&meshv1.EgressRule{Source: "shop/tls", Hosts: []string{"secure.example.com"}})
	for _, tt := range []struct {
		name string
		ok   bool
	}{{"secure.example.com", true}, {"other.example.com", false}} {
		conn := r.serve(pc, dst)
		tc := tls.Client(conn, &tls.Config{ServerName: tt.name, InsecureSkipVerify: true}) //nolint:gosec // the test server's certificate
		_, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: "+tt.name+"\r\nConnection: close\r\n\r\n")
		var body []byte
		if err == nil {
			body, err = io.ReadAll(tc)
		}
		tc.Close()
		switch {
		case tt.ok && (err != nil || !strings.HasSuffix(string(body), "tls:"+tt.name)):
			t.Errorf("%s: %q, %v; want the server's answer", tt.name, body, err)
		case !tt.ok && err == nil:
			t.Errorf("%s: handshake and request succeeded, want refused", tt.name)
		}
	}
	r.wg.Wait()
	if got := r.count("secure.example.com", EgressAllowed); got != 1 {
		t.Errorf("allowed count %v", got)
	}
	if got := r.count("other.example.com", EgressRefused); got != 1 {
		t.Errorf("refused count %v", got)
	}
}

// TestEgressAllowAnyLabels passes everything through in ALLOW_ANY, each
// connection counted under the name the app sent.
func TestEgressAllowAnyLabels(t *testing.T) {
	dst, _ := httpServer(t)
	r := newEgressRig(t, nil)
	pc := &meshv1.ProxyConfig{}
	code, body, _ := get(t, r.serve(pc, dst), "Anywhere.Example")
	if code != 200 || body != "external:Anywhere.Example" {
		t.Fatalf("%d %q", code, body)
	}
	r.wg.Wait()
	if got := r.count("anywhere.example", EgressAllowed); got != 1 {
		t.Errorf("allowed count under the host %v, want 1", got)
	}
	// An allow-list that does not compile admits nothing (fail closed).
	bad := allowListed(&meshv1.EgressRule{Cidrs: []string{"not a network"}})
	conn := r.serve(bad, dst)
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes through an invalid allow-list", n)
	}
}

// TestEgressReservedAddr checks that a host rule never admits a name
// pointed at a loopback or link-local address (a cloud's metadata
// service), even when the name resolves there, while a network rule that
// lists the address does.
func TestEgressReservedAddr(t *testing.T) {
	srv, hits := httpServer(t)
	r := newEgressRig(t, mapResolver{
		"metadata.example.com": {netip.MustParseAddr("169.254.169.254"), srv.Addr()},
	})
	metadata := r.route("169.254.169.254", srv)
	port := uint32(srv.Port())
	byHost := allowListed(&meshv1.EgressRule{Source: "shop/api", Hosts: []string{"*.example.com"}, Ports: []uint32{port}})
	for _, dst := range []netip.AddrPort{metadata, srv} {
		code, body, _ := get(t, r.serve(byHost, dst), "metadata.example.com")
		if code != http.StatusForbidden {
			t.Errorf("%s by name: %d %q, want 403", dst, code, body)
		}
	}
	byNet := allowListed(
		&meshv1.EgressRule{Source: "shop/api", Hosts: []string{"*.example.com"}, Ports: []uint32{port}},
		&meshv1.EgressRule{Source: "shop/metadata", Cidrs: []string{"169.254.169.254/32"}, Ports: []uint32{port}})
	if code, body, _ := get(t, r.serve(byNet, metadata), "metadata.example.com"); code != http.StatusOK {
		t.Errorf("listed in cidrs: %d %q, want 200", code, body)
	}
	r.wg.Wait()
	if got := r.count("metadata.example.com", EgressRefused); got != 2 {
		t.Errorf("refused count %v, want 2", got)
	}
	if hits() != 1 {
		t.Errorf("server hit %d times, want 1", hits())
	}
}

// TestEgressRuleLabelsUncapped checks that names the app makes up fill
// the label cap without pushing the rules' own labels into "other".
func TestEgressRuleLabelsUncapped(t *testing.T) {
	srv, _ := httpServer(t)
	r := newEgressRig(t, mapResolver{"api.example.com": {netip.MustParseAddr("203.0.113.10")}})
	r.o.egress.labels.Max = 3
	dst := r.route("203.0.113.10", srv)
	pc := allowListed(&meshv1.EgressRule{Source: "shop/api", Hosts: []string{"api.example.com"}, Ports: []uint32{uint32(srv.Port())}},
		&meshv1.EgressRule{Source: "shop/net", Cidrs: []string{"203.0.113.0/24"}, Ports: []uint32{uint32(srv.Port()) + 1}})
	for i := range 5 {
		if code, _, _ := get(t, r.serve(pc, dst), fmt.Sprintf("junk%d.example", i)); code != http.StatusForbidden {
			t.Fatalf("junk name: %d, want 403", code)
		}
	}
	if code, body, _ := get(t, r.serve(pc, dst), "api.example.com"); code != 200 {
		t.Fatalf("allowed name: %d %q", code, body)
	}
	// Admitted by the network rule; the dial fails (nothing listens), and
	// the failure is counted under the network.
	byNet := r.serve(pc, r.route("203.0.113.10", netip.AddrPortFrom(srv.Addr(), srv.Port()+1)))
	byNet.Read(make([]byte, 1)) //nolint:errcheck // closed by the proxy
	r.wg.Wait()
	if got := r.count("api.example.com", EgressAllowed); got != 1 {
		t.Errorf("count under the rule's pattern %v, want 1", got)
	}
	if got := r.count("203.0.113.0/24", EgressRefused); got != 1 {
		t.Errorf("count under the rule's network %v, want 1", got)
	}
	if got := r.count(egress.OtherDestination, EgressRefused); got != 2 {
		t.Errorf("count of junk names past the cap %v, want 2", got)
	}
}

// TestEgressAllowAnyStreams checks that in ALLOW_ANY the app's bytes reach
// the destination as they come: a request head that stops short of its
// end is not held back for a name.
func TestEgressAllowAnyStreams(t *testing.T) {
	echo := echoServer(t)
	r := newEgressRig(t, nil)
	r.o.cfg.DetectTimeout = time.Hour // what the name may take; never what the bytes wait
	conn := r.serve(&meshv1.ProxyConfig{}, echo)
	rd := bufio.NewReader(conn)
	for _, part := range []string{"GET / HTTP/1.1\r\n", "Host: Echo.Example\r\n", "\r\n"} {
		if _, err := io.WriteString(conn, part); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(part))
		if _, err := io.ReadFull(rd, got); err != nil || string(got) != part {
			t.Fatalf("echo of %q: %q, %v", part, got, err)
		}
	}
	conn.Close()
	r.wg.Wait()
	if got := r.count("echo.example", EgressAllowed); got != 1 {
		t.Errorf("count under the name %v, want 1", got)
	}
	sent := testutil.ToFloat64(r.m.EgressBytes.WithLabelValues("echo.example", EgressAllowed, "sent"))
	if sent != float64(len("GET / HTTP/1.1\r\nHost: Echo.Example\r\n\r\n")) {
		t.Errorf("bytes sent %v", sent)
	}
}

// echoServer returns the address of a loopback server that echoes what
// each connection sends.
func echoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c) //nolint:errcheck // ends with the client
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}
