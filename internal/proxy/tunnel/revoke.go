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
// peer the mesh stops trusting (a revoked certificate, a quarantined
// identity) can be closed.
type connSet struct {
	mu    sync.Mutex
	conns map[*tls.Conn]*x509.Certificate // the peer's leaf
}

// add records c, then closes it at once if refuse refuses its peer, and
// returns why: a handshake verified against the lists in force before a
// change may finish after closeMatching swept the set. A nil refuse
// refuses nothing.
func (s *connSet) add(c *tls.Conn, refuse func(leaf *x509.Certificate) error) error {
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
	if leaf != nil && refuse != nil {
		if err := refuse(leaf); err != nil {
			s.remove(c)
			closeNow(c)
			return &meshtls.PeerError{Leaf: leaf, Err: err}
		}
	}
	return nil
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
// that does not read: a refused peer is owed no goodbye, and applying a
// revocation or quarantine list must not wait on one. Reads and writes on c fail at once;
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

// CloseRefused closes the pooled connections to peers that the dialer's
// TLS configuration now refuses (meshtls.Config.CheckPeer: a revoked
// certificate, a quarantined identity): requests and streams on them
// fail, and the next request dials again, a handshake refused the same
// way. It returns how many it closed.
func (d *Dialer) CloseRefused() int {
	check := d.cfg.TLS.CheckPeer
	return d.conns.closeMatching(func(leaf *x509.Certificate) bool { return check(leaf) != nil })
}

// OpenConns is the number of tunnel connections the dialer holds open.
func (d *Dialer) OpenConns() int { return d.conns.len() }

// CloseRefused closes the accepted connections whose client certificate
// ListenerConfig.Refuse now refuses, with the requests and streams on
// them, and returns how many it closed. Connections are known to the
// listener from their handshake until the server reports them closed
// (ConnState).
func (l *Listener) CloseRefused() int {
	refuse := l.cfg.Refuse
	if refuse == nil {
		return 0
	}
	return l.open.closeMatching(func(leaf *x509.Certificate) bool { return refuse(leaf) != nil })
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
