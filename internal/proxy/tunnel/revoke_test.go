package tunnel_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func revokeSerialOf(r *meshtls.Revocations, cfg meshtls.Config) {
	r.Set(meshtls.NewRevocationSet([]string{meshtls.SerialOf(cfg.SVID.Get().Certificates[0])}, nil))
}

// TestCloseRefused revokes the client's certificate at the server: the
// open connection, with a stream in flight, is closed and the client's next
// handshake refused; then the server's at the client.
func TestCloseRefused(t *testing.T) {
	p := newPKI(t)
	serverCfg, clientCfg := p.config(t, "server"), p.config(t, "client")
	serverCfg.Revocations, clientCfg.Revocations = new(meshtls.Revocations), new(meshtls.Revocations)

	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 10)
	l := tunnel.NewListener(inner, tunnel.ListenerConfig{
		TLS:       serverCfg.Server(nil),
		Refuse:    serverCfg.CheckPeer,
		OnRefused: func(_ net.Addr, err error) { refused <- err },
	})
	var protos http.Protocols
	protos.SetHTTP2(true)
	srv := &http.Server{Protocols: &protos, ConnState: l.ConnState,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodConnect {
				w.WriteHeader(http.StatusOK)
				http.NewResponseController(w).Flush()
				io.Copy(w, r.Body) // echo
				return
			}
			io.WriteString(w, "ok")
		})}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		l.Wait()
	})

	clientRefused := make(chan string, 10)
	d, err := tunnel.NewDialer(tunnel.DialerConfig{TLS: clientCfg,
		OnRefused: func(_ tunnel.Peer, _ net.Addr, reason string, _ error) { clientRefused <- reason }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	peer := tunnel.Peer{Address: l.Addr().String(), ID: serverCfg.SVID.Get().ID}
	get := func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://orders.example/", nil)
		resp, err := d.RoundTrip(peer, req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		return err
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	upR, upW := io.Pipe()
	defer upW.Close()
	stream, err := d.Connect(context.Background(), peer, 9, upR)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if l.OpenConns() != 1 || d.OpenConns() != 1 {
		t.Fatalf("open connections: listener %d, dialer %d; want 1 each", l.OpenConns(), d.OpenConns())
	}

	// Nothing revoked yet among the peers: nothing closed.
	serverCfg.Revocations.Set(meshtls.NewRevocationSet([]string{"abc"}, nil))
	if n := l.CloseRefused(); n != 0 {
		t.Fatalf("CloseRefused closed %d connections with nothing revoked", n)
	}

	revokeSerialOf(serverCfg.Revocations, clientCfg)
	if n := l.CloseRefused(); n != 1 {
		t.Fatalf("CloseRefused closed %d connections, want 1", n)
	}
	// The stream in flight ends with the connection.
	readDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stream)
		readDone <- err
	}()
	select {
	case <-readDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream on the closed connection is still open")
	}
	waitUntil(t, "the server to forget the closed connection", func() bool { return l.OpenConns() == 0 })
	waitUntil(t, "the client to forget the closed connection", func() bool { return d.OpenConns() == 0 })

	// The next handshake is refused by the server, for the revocation (in
	// TLS 1.3 the client learns it from the server's alert, after its own
	// side of the handshake is done).
	if err := get(); err == nil {
		t.Fatal("request after the revocation succeeded")
	}
	select {
	case err := <-refused:
		if meshtls.Reason(err) != meshtls.ReasonRevoked {
			t.Fatalf("server refused with %v (reason %s), want revoked", err, meshtls.Reason(err))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server reported no refusal")
	}

	// Identity revocation at the client: the server's certificate
	// predates it.
	serverCfg.Revocations.Set(nil)
	if err := get(); err != nil {
		t.Fatalf("request after lifting the revocation: %v", err)
	}
	clientCfg.Revocations.Set(meshtls.NewRevocationSet(nil, map[spiffeid.ID]time.Time{peer.ID: time.Now()}))
	if n := d.CloseRefused(); n != 1 {
		t.Fatalf("dialer CloseRefused closed %d connections, want 1", n)
	}
	if err := get(); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("request to a revoked server = %v", err)
	}
	select {
	case reason := <-clientRefused:
		if reason != meshtls.ReasonRevoked {
			t.Fatalf("client refusal reason %q, want revoked", reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the dialer reported no refusal")
	}
}
