package outbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
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
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// mapResolver answers names from a map.
type mapResolver map[string][]netip.Addr

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := m[host]; ok {
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
	r := &egressRig{t: t, o: o, m: m, c: &conns{o: o, ctx: ctx}}
	t.Cleanup(func() { cancel(); r.wg.Wait() })
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
	dst, hits := httpServer(t)
	r := newEgressRig(t, mapResolver{
		"api.example.com":  {dst.Addr()},
		"forged.example":   {netip.MustParseAddr("198.51.100.1")},
		"www.example.org":  {dst.Addr()},
		"evil.example.net": {dst.Addr()},
	})
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
	r := newEgressRig(t, mapResolver{"secure.example.com": {dst.Addr()}, "other.example.com": {dst.Addr()}})
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
