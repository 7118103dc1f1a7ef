package tunnel_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type pki struct {
	ca     *ca.CA
	bundle *meshtls.Bundle
}

func newPKI(t *testing.T) pki {
	t.Helper()
	c, err := ca.Open(ca.Config{Dir: t.TempDir(), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	b := new(meshtls.Bundle)
	b.SetRoots(td, c.Roots())
	return pki{c, b}
}

func (p pki) config(t *testing.T, sa string) meshtls.Config {
	t.Helper()
	id := spiffeid.RequireFromPath(td, "/ns/test/sa/"+sa)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	chain, err := p.ca.SignCSR(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := new(meshtls.SVID)
	if err := s.Set(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	return meshtls.Config{SVID: s, Bundle: p.bundle}
}

// serve runs an HTTP/2 server behind a tunnel.Listener.
func serve(t *testing.T, cfg meshtls.Config, h http.Handler) (addr string, refused chan error) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused = make(chan error, 10)
	l := tunnel.NewListener(inner, tunnel.ListenerConfig{
		TLS:              cfg.Server(nil),
		HandshakeTimeout: 2 * time.Second,
		OnRefused:        func(_ net.Addr, err error) { refused <- err },
	})
	var p http.Protocols
	p.SetHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		l.Wait()
	})
	return l.Addr().String(), refused
}

func TestRequestsAndStreamsShareOneConnection(t *testing.T) {
	p := newPKI(t)
	serverCfg, clientCfg := p.config(t, "server"), p.config(t, "client")
	var (
		mu    sync.Mutex
		conns = map[string]bool{}
	)
	addr, _ := serve(t, serverCfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		if r.Method == http.MethodConnect {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			io.Copy(w, r.Body) // echo
			return
		}
		io.WriteString(w, "hello "+r.Host)
	}))
	d, err := tunnel.NewDialer(tunnel.DialerConfig{TLS: clientCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	peer := tunnel.Peer{Address: addr, ID: serverCfg.SVID.Get().ID}

	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, "http://orders.example/", nil)
		resp, err := d.RoundTrip(peer, req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello orders.example" {
			t.Fatalf("body %q", b)
		}
	}
	body, err := d.Connect(context.Background(), peer, 8080, strings.NewReader("opaque bytes"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	body.Close()
	if !bytes.Equal(got, []byte("opaque bytes")) {
		t.Fatalf("echo %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 1 {
		t.Fatalf("requests and streams used %d connections, want 1", len(conns))
	}
}

func TestDialerRefusesTheWrongServer(t *testing.T) {
	p := newPKI(t)
	serverCfg, clientCfg := p.config(t, "rogue"), p.config(t, "client")
	addr, _ := serve(t, serverCfg, http.NotFoundHandler())
	var reasons []string
	d, _ := tunnel.NewDialer(tunnel.DialerConfig{TLS: clientCfg, OnRefused: func(_ tunnel.Peer, _ net.Addr, reason string, _ error) {
		reasons = append(reasons, reason)
	}})
	defer d.Close()
	want := spiffeid.RequireFromPath(td, "/ns/test/sa/server")
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	_, err := d.RoundTrip(tunnel.Peer{Address: addr, ID: want}, req)
	var de *tunnel.DialError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want a DialError", err)
	}
	if len(reasons) != 1 || reasons[0] != meshtls.ReasonWrongIdentity {
		t.Fatalf("reasons %v, want [wrong_identity]", reasons)
	}
}

func TestListenerIsNotBlockedBySlowClients(t *testing.T) {
	p := newPKI(t)
	serverCfg, clientCfg := p.config(t, "server"), p.config(t, "client")
	addr, refused := serve(t, serverCfg, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	// Three clients connect and never say anything.
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	d, _ := tunnel.NewDialer(tunnel.DialerConfig{TLS: clientCfg})
	defer d.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	resp, err := d.RoundTrip(tunnel.Peer{Address: addr, ID: serverCfg.SVID.Get().ID}, req)
	if err != nil {
		t.Fatalf("a good client waited behind silent ones: %v", err)
	}
	resp.Body.Close()
	// The silent ones are cut at the handshake timeout.
	for range 3 {
		select {
		case <-refused:
		case <-time.After(10 * time.Second):
			t.Fatal("a silent client was never cut off")
		}
	}
}

func TestListenerRequiresTheTunnelProtocol(t *testing.T) {
	p := newPKI(t)
	serverCfg, clientCfg := p.config(t, "server"), p.config(t, "client")
	addr, refused := serve(t, serverCfg, http.NotFoundHandler())
	tc := clientCfg.Client(serverCfg.SVID.Get().ID)
	tc.NextProtos = nil // no ALPN: an HTTP/1 client, say
	c, err := tls.Dial("tcp", addr, tc)
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
		c.Close()
	}
	select {
	case err := <-refused:
		if !strings.Contains(err.Error(), "ALPN") {
			t.Fatalf("refusal %v, want one naming ALPN", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a client without the tunnel ALPN was accepted")
	}
}

func TestListenerBoundsHandshakesInProgress(t *testing.T) {
	p := newPKI(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 10)
	l := tunnel.NewListener(inner, tunnel.ListenerConfig{
		TLS:              p.config(t, "server").Server(nil),
		HandshakeTimeout: 5 * time.Second,
		MaxHandshakes:    1,
		OnRefused:        func(_ net.Addr, err error) { refused <- err },
	})
	defer func() {
		l.Close()
		l.Wait()
	}()
	// The first client holds the only handshake slot by saying nothing.
	first, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	time.Sleep(100 * time.Millisecond)
	second, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	select {
	case err := <-refused:
		if !errors.Is(err, tunnel.ErrTooManyHandshakes) {
			t.Fatalf("refusal %v, want ErrTooManyHandshakes", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a connection beyond MaxHandshakes was not refused")
	}
	second.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := second.Read(make([]byte, 1)); err == nil {
		t.Fatal("the refused connection is still open")
	}
}

func TestStripLookalikes(t *testing.T) {
	h := http.Header{
		"Rampart_Client_Id":    {"forged"},
		"rampart_client_id":    {"forged"},
		"Rampart_Target_Port":  {"1"},
		"Rampart_App-Protocol": {"h2c"},
		"Rampart-Client-Id":    {"set by name elsewhere"},
		"X_Request_Id":         {"kept"},
	}
	tunnel.StripLookalikes(h)
	want := http.Header{"Rampart-Client-Id": {"set by name elsewhere"}, "X_Request_Id": {"kept"}}
	if len(h) != len(want) || h.Get("Rampart-Client-Id") == "" || h["X_Request_Id"] == nil {
		t.Errorf("after StripLookalikes: %v, want %v", h, want)
	}
}
