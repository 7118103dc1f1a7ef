package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallConn is a connection whose writes, once stalled, block until it is
// closed: a peer that has stopped reading.
type stallConn struct {
	net.Conn
	stalled      atomic.Bool
	stalledWrite atomic.Int32
	closed       chan struct{}
	once         sync.Once
}

func (c *stallConn) Write(b []byte) (int, error) {
	if c.stalled.Load() {
		c.stalledWrite.Add(1)
		<-c.closed
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// TestCloseMatchingDoesNotWaitOnPeer: closing a revoked peer's connection
// writes nothing to it (no close_notify), so a peer that does not read
// cannot stall the sweep.
func TestCloseMatchingDoesNotWaitOnPeer(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "peer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	a, b := net.Pipe()
	raw := &stallConn{Conn: a, closed: make(chan struct{})}
	client := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // a test peer
	server := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	t.Cleanup(func() { server.NetConn().Close(); client.NetConn().Close() })
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	var s connSet
	if err := s.add(client, nil); err != nil {
		t.Fatalf("add refused a connection with nothing to refuse it: %v", err)
	}
	raw.stalled.Store(true) // the server side reads no more
	done := make(chan int, 1)
	go func() { done <- s.closeMatching(func(*x509.Certificate) bool { return true }) }()
	select {
	case n := <-done:
		if n != 1 {
			t.Fatalf("closeMatching closed %d connections, want 1", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("closeMatching blocked writing to a peer that does not read")
	}
	if n := raw.stalledWrite.Load(); n != 0 {
		t.Errorf("closing wrote %d times to the revoked peer, want none", n)
	}
	select {
	case <-raw.closed:
	default:
		t.Error("the connection was not closed")
	}
	if s.len() != 0 {
		t.Errorf("%d connections left in the set", s.len())
	}
}
