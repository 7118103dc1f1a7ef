package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"time"
)

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	// TLS is the server configuration (see meshtls.Config.Server); its
	// NextProtos is set to the tunnel's ALPN.
	TLS *tls.Config
	// HandshakeTimeout bounds each handshake; default 10s.
	HandshakeTimeout time.Duration
	// OnRefused is told about every handshake that failed, with the error.
	OnRefused func(remote net.Addr, err error)
	// MaxHandshakes bounds handshakes in progress; a connection beyond it
	// is closed at once. Default 1024.
	MaxHandshakes int
	// Refuse, when set, says why a client whose certificate verified is
	// no longer accepted (meshtls.Config.CheckPeer of the configuration
	// TLS was built from: revoked, quarantined). A connection whose
	// handshake ends after the lists changed is checked again before it
	// is served, and CloseRefused closes the accepted connections it
	// refuses. Nil refuses nothing more than TLS does.
	Refuse func(leaf *x509.Certificate) error
}

// ErrTooManyHandshakes is the refusal of a connection that arrived while
// MaxHandshakes handshakes were in progress.
var ErrTooManyHandshakes = errors.New("tunnel: too many handshakes in progress")

// Listener accepts TCP connections, completes their mTLS handshakes
// concurrently (a slow or hostile client never blocks the others) and
// returns only verified *tls.Conn values that negotiated the tunnel
// protocol. It is meant for http.Server.Serve.
type Listener struct {
	inner net.Listener
	cfg   ListenerConfig

	conns     chan net.Conn
	done      chan struct{}
	slots     chan struct{} // one per handshake in progress
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu        sync.Mutex
	acceptErr error // why the inner listener failed, when it did

	open connSet // accepted connections, for CloseRefused
}

var _ net.Listener = (*Listener)(nil)

// NewListener wraps inner and starts accepting.
func NewListener(inner net.Listener, cfg ListenerConfig) *Listener {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 1024
	}
	tlsCfg := cfg.TLS.Clone()
	tlsCfg.NextProtos = []string{ALPN}
	cfg.TLS = tlsCfg
	l := &Listener{inner: inner, cfg: cfg, conns: make(chan net.Conn), done: make(chan struct{}),
		slots: make(chan struct{}, cfg.MaxHandshakes)}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				l.mu.Lock()
				l.acceptErr = err
				l.mu.Unlock()
				l.Close()
				return
			}
			// Anything else (out of file descriptors, a connection reset
			// before accept) passes: back off as net/http does, never stop
			// serving because of what a client did.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
				continue
			case <-l.done:
				return
			}
		}
		delay = 0
		select {
		case l.slots <- struct{}{}:
		default:
			if l.cfg.OnRefused != nil {
				l.cfg.OnRefused(raw.RemoteAddr(), ErrTooManyHandshakes)
			}
			raw.Close()
			continue
		}
		l.wg.Add(1)
		go l.handshake(raw)
	}
}

func (l *Listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	released := false
	release := func() {
		if !released {
			released = true
			<-l.slots
		}
	}
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.HandshakeTimeout)
	defer cancel()
	conn := tls.Server(raw, l.cfg.TLS)
	err := conn.HandshakeContext(ctx)
	if err == nil && conn.ConnectionState().NegotiatedProtocol != ALPN {
		err = errors.New("tunnel: client did not negotiate the tunnel protocol (ALPN h2)")
	}
	if err != nil {
		if l.cfg.OnRefused != nil {
			l.cfg.OnRefused(raw.RemoteAddr(), err)
		}
		raw.Close()
		return
	}
	release() // the handshake is over; waiting for Accept is cheap
	if err := l.open.add(conn, l.cfg.Refuse); err != nil {
		if l.cfg.OnRefused != nil {
			l.cfg.OnRefused(raw.RemoteAddr(), err)
		}
		return
	}
	select {
	case l.conns <- conn:
	case <-l.done:
		l.open.remove(conn)
		conn.Close()
	}
}

// Accept returns the next verified connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.acceptErr != nil && !errors.Is(l.acceptErr, net.ErrClosed) {
			return nil, l.acceptErr
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting. It is idempotent.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

// Wait blocks until every accept and handshake goroutine has returned.
func (l *Listener) Wait() { l.wg.Wait() }

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }
