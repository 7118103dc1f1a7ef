// Package tunnel is the proxy-to-proxy transport: one pooled, multiplexed
// mutual-TLS HTTP/2 connection per peer.
//
// Over that connection, an HTTP request from the app travels as an HTTP/2
// request of its own (so requests are balanced one by one), and an opaque
// TCP connection travels as an HTTP CONNECT stream whose authority names the
// target port on the peer's loopback (HBONE style). Both kinds share the
// connection. A node proxy in ambient mode will speak the same tunnel.
//
// The client side (Dialer) verifies that the server proves exactly the
// SPIFFE ID discovery promised for the address; the server side (Listener)
// completes and verifies mTLS handshakes off the accept path and hands the
// verified connections to an http.Server.
//
// It must not depend on Kubernetes packages or on the controller.
package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// Protocol constants of the tunnel.
const (
	// ALPN is the only application protocol the tunnel negotiates.
	ALPN = "h2"
	// HeaderTargetPort names, on an HTTP request carried through the tunnel,
	// the app port on the peer's loopback. The receiving proxy removes it.
	HeaderTargetPort = "Rampart-Target-Port"
	// HeaderClientID carries, from the inbound proxy to its app, the verified
	// SPIFFE ID of the caller. Proxies remove any copy arriving from outside.
	HeaderClientID = "Rampart-Client-Id"
	// HeaderAppProtocol tells the receiving proxy, for a port whose
	// protocol is detected, that the calling app spoke AppProtocolH2C, so
	// that the request reaches the destination app over HTTP/2 as well.
	// Absent means HTTP/1.1. The receiving proxy removes it.
	HeaderAppProtocol = "Rampart-App-Protocol"
	AppProtocolH2C    = "h2c"
	// HeaderDecisionID names, on a response a proxy refused itself (403,
	// 400 or 429 for a policy decision or a rate limit), the decision's
	// ID: the same ID is in that proxy's log line about it.
	HeaderDecisionID = "Rampart-Decision-Id"
	// ConnectHost is the host part of a CONNECT stream's authority: the
	// target is always the peer's own loopback.
	ConnectHost = "127.0.0.1"
)

// Peer is one remote proxy: where it listens and who it must prove to be.
type Peer struct {
	Address string
	ID      spiffeid.ID
}

func (p Peer) String() string { return p.ID.String() + "@" + p.Address }

// DialError is a failure to establish the tunnel connection to a peer: the
// request was certainly not sent, so it is safe to try another peer.
type DialError struct {
	Peer Peer
	Err  error
}

func (e *DialError) Error() string { return fmt.Sprintf("tunnel: dial %s: %v", e.Peer, e.Err) }
func (e *DialError) Unwrap() error { return e.Err }

// DialerConfig configures a Dialer.
type DialerConfig struct {
	// TLS holds this proxy's SVID and trust bundle. Required.
	TLS meshtls.Config
	// ConnectTimeout bounds TCP connect plus TLS handshake; default 5s.
	ConnectTimeout time.Duration
	// OnRefused, when set, is told about every failed handshake with the
	// address it reached the peer at (nil when the TCP connection failed,
	// which is not reported) and its reason (see meshtls.Reason).
	OnRefused func(peer Peer, remote net.Addr, reason string, err error)
}

// Dialer keeps one HTTP/2 client per peer and opens requests and streams
// over it. It is safe for concurrent use.
type Dialer struct {
	cfg DialerConfig

	mu    sync.Mutex
	peers map[Peer]*http2.Transport

	conns connSet // open connections, for CloseRefused
}

// NewDialer returns a Dialer.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if cfg.TLS.SVID == nil || cfg.TLS.Bundle == nil {
		return nil, errors.New("tunnel: dialer needs an SVID and a trust bundle")
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	cfg.TLS.NextProtos = []string{ALPN}
	return &Dialer{cfg: cfg, peers: make(map[Peer]*http2.Transport)}, nil
}

func (d *Dialer) transport(p Peer) *http2.Transport {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.peers[p]; ok {
		return t
	}
	tlsCfg := d.cfg.TLS.Client(p.ID)
	t := &http2.Transport{
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			return d.dial(ctx, p, tlsCfg)
		},
		// Close connections left idle, including those of peers that
		// discovery no longer lists and that were busy when retired.
		IdleConnTimeout: 90 * time.Second,
		// Probe idle connections so that a dead peer is noticed.
		ReadIdleTimeout:  30 * time.Second,
		PingTimeout:      5 * time.Second,
		WriteByteTimeout: 30 * time.Second,
	}
	d.peers[p] = t
	return t
}

func (d *Dialer) dial(ctx context.Context, p Peer, cfg *tls.Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConnectTimeout)
	defer cancel()
	var nd net.Dialer
	raw, err := nd.DialContext(ctx, "tcp", p.Address)
	if err != nil {
		return nil, &DialError{Peer: p, Err: err}
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		if d.cfg.OnRefused != nil {
			d.cfg.OnRefused(p, raw.RemoteAddr(), meshtls.Reason(err), err)
		}
		return nil, &DialError{Peer: p, Err: err}
	}
	if conn.ConnectionState().NegotiatedProtocol != ALPN {
		conn.Close()
		return nil, &DialError{Peer: p, Err: errors.New("peer did not negotiate the tunnel protocol")}
	}
	if err := d.conns.add(conn, d.cfg.TLS.CheckPeer); err != nil {
		if d.cfg.OnRefused != nil {
			d.cfg.OnRefused(p, raw.RemoteAddr(), meshtls.Reason(err), err)
		}
		return nil, &DialError{Peer: p, Err: err}
	}
	return &trackedConn{Conn: conn, set: &d.conns}, nil
}

// RoundTrip sends an HTTP request to the peer through the tunnel. The
// request's Host header is kept; its URL is pointed at the peer.
func (d *Dialer) RoundTrip(p Peer, req *http.Request) (*http.Response, error) {
	req.URL.Scheme = "https"
	req.URL.Host = p.Address
	resp, err := d.transport(p).RoundTrip(req)
	if err != nil {
		var de *DialError
		if errors.As(err, &de) {
			return nil, de
		}
		return nil, fmt.Errorf("tunnel: %s: %w", p, err)
	}
	return resp, nil
}

// Connect opens an opaque stream to port on the peer's loopback. Bytes
// read from up are sent; the returned body yields the bytes received. The
// stream ends when up returns EOF and the peer closes its side, or when ctx
// is cancelled. After an error, a read from up may still be pending: the
// caller unblocks it by closing up's source.
func (d *Dialer) Connect(ctx context.Context, p Peer, port int, up io.Reader) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "https://"+p.Address, up)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	req.Host = net.JoinHostPort(ConnectHost, strconv.Itoa(port))
	req.ContentLength = -1
	resp, err := d.RoundTrip(p, req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		// Cancel first: closing the body otherwise waits for the request
		// body, a read from up that only the caller can end.
		cancel()
		resp.Body.Close()
		return nil, &RefusedError{Peer: p, Status: resp.StatusCode, Decision: resp.Header.Get(HeaderDecisionID)}
	}
	return &streamBody{ReadCloser: resp.Body, cancel: cancel}, nil
}

// RefusedError is a stream the peer's proxy refused: its authorization
// policy denied it (403), a rate limit refused it (429), or the peer could
// not serve the port.
type RefusedError struct {
	Peer   Peer
	Status int
	// Decision is the peer's decision ID, when the refusal was a policy
	// decision or a rate limit.
	Decision string
}

func (e *RefusedError) Error() string {
	msg := fmt.Sprintf("tunnel: %s refused the stream: %d %s", e.Peer, e.Status, http.StatusText(e.Status))
	if e.Decision != "" {
		msg += " (decision " + e.Decision + ")"
	}
	return msg
}

// streamBody releases the stream's context once the stream is closed.
type streamBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *streamBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// Retain closes the pooled connections of every peer not in keep. Streams
// in flight on them finish first.
func (d *Dialer) Retain(keep map[Peer]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for p, t := range d.peers {
		if !keep[p] {
			t.CloseIdleConnections()
			delete(d.peers, p)
		}
	}
}

// Close closes idle connections to every peer.
func (d *Dialer) Close() {
	d.Retain(nil)
}

// StripLookalikes removes the headers whose names read as one of the
// tunnel's own once underscores are taken for dashes, such as
// Rampart_Client_Id: apps behind CGI-style interfaces treat the two
// alike, so a caller could otherwise slip a forged identity past the
// proxy. The tunnel's own headers are set or removed by name separately.
func StripLookalikes(h http.Header) {
	for k := range h {
		if strings.IndexByte(k, '_') < 0 {
			continue
		}
		n := strings.ReplaceAll(k, "_", "-")
		if strings.EqualFold(n, HeaderClientID) || strings.EqualFold(n, HeaderTargetPort) || strings.EqualFold(n, HeaderAppProtocol) {
			delete(h, k)
		}
	}
}
