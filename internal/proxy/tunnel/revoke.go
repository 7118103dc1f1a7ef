package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"sync"

	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// connSet is the open tunnel connections of one side, so that those whose
// peer certificate is revoked can be closed.
type connSet struct {
	mu    sync.Mutex
	conns map[*tls.Conn]*x509.Certificate // the peer's leaf
}

// add records c, then closes it at once if revoked refuses its peer: a
// handshake verified against the list in force before a change may finish
// after closeRevoked swept the set.
func (s *connSet) add(c *tls.Conn, revoked *meshtls.Revocations) bool {
	var leaf *x509.Certificate
	if certs := c.ConnectionState().PeerCertificates; len(certs) > 0 {
		leaf = certs[0]
	}
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[*tls.Conn]*x509.Certificate)
	}
	s.conns[c] = leaf
	s.mu.Unlock()
	if leaf != nil && revoked.Check(leaf) != nil {
		s.remove(c)
		closeNow(c)
		return false
	}
	return true
}

func (s *connSet) remove(c *tls.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeMatching closes every connection whose peer's leaf certificate
// match reports, and returns how many.
func (s *connSet) closeMatching(match func(leaf *x509.Certificate) bool) int {
	s.mu.Lock()
	var doomed []*tls.Conn
	for c, leaf := range s.conns {
		if leaf != nil && match(leaf) {
			doomed = append(doomed, c)
			delete(s.conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range doomed {
		closeNow(c)
	}
	return len(doomed)
}

// closeNow closes c's connection without the TLS close_notify, which
// tls.Conn.Close writes and may wait up to its write deadline for on a peer
// that does not read: a revoked peer is owed no goodbye, and applying a
// revocation list must not wait on one. Reads and writes on c fail at once;
// its owner's Close later is harmless.
func closeNow(c *tls.Conn) {
	_ = c.NetConn().Close()
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// trackedConn is a client connection that leaves its set when closed. It
// keeps ConnectionState, which the HTTP/2 transport reads.
type trackedConn struct {
	*tls.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.set.remove(c.Conn) })
	return c.Conn.Close()
}

// CloseRevoked closes the pooled connections to peers whose certificate
// the dialer's revocations (DialerConfig.TLS.Revocations) refuse: requests
// and streams on them fail, and the next request dials again, a handshake
// the revocations refuse. It returns how many it closed.
func (d *Dialer) CloseRevoked() int {
	r := d.cfg.TLS.Revocations
	return d.conns.closeMatching(func(leaf *x509.Certificate) bool { return r.Check(leaf) != nil })
}

// OpenConns is the number of tunnel connections the dialer holds open.
func (d *Dialer) OpenConns() int { return d.conns.len() }

// CloseRevoked closes the accepted connections whose client certificate
// ListenerConfig.Revocations refuses, with the requests and streams on
// them, and returns how many it closed. Connections are known to the
// listener from their handshake until the server reports them closed
// (ConnState).
func (l *Listener) CloseRevoked() int {
	r := l.cfg.Revocations
	return l.open.closeMatching(func(leaf *x509.Certificate) bool { return r.Check(leaf) != nil })
}

// OpenConns is the number of accepted connections not yet reported closed.
func (l *Listener) OpenConns() int { return l.open.len() }

// ConnState is the http.Server hook (http.Server.ConnState) through which
// the listener forgets the connections the server closed or hijacked.
// Without it, the listener holds every connection it ever accepted.
func (l *Listener) ConnState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		l.open.remove(tc)
	}
}
