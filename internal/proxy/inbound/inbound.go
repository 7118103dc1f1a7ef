// Package inbound serves the tunnel's receiving end: requests and CONNECT
// streams from peer proxies, already authenticated by mTLS, forwarded to the
// app on loopback with the caller's verified identity attached.
//
// Only ports the controller declared for this workload are reachable, and
// only with their declared protocol: an opaque stream to an HTTP port (which
// would skip per-request handling) is refused, as is anything to an
// undeclared port. A port whose protocol is detected (Auto) takes both
// requests and streams, as the caller's proxy classified the connection.
//
// Requests reach an HTTP/1.1 app through package h1's client, an h2c app
// through net/http's transport, both passed on with package forward.
//
// Connections redirected to the workload without mTLS (iptables sends
// every inbound connection but the tunnel's to the plaintext listener) are
// refused and counted: the mesh's default is strict mTLS.
//
// It must not depend on Kubernetes packages.
package inbound

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/forward"
	"github.com/rampart-mesh/rampart/internal/proxy/h1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// Refusal reasons counted in rampart_proxy_refusals_total.
const (
	ReasonPortNotAllowed   = "port_not_allowed"
	ReasonProtocolMismatch = "protocol_mismatch"
	ReasonBadTarget        = "bad_target"
	ReasonNoPeerIdentity   = "no_peer_identity"
	ReasonAppUnavailable   = "app_unavailable"
)

// Config configures a Handler.
type Config struct {
	Metrics *metrics.Metrics // required
	Logger  *slog.Logger     // nil discards
	// AppHost is where the app listens; default 127.0.0.1.
	AppHost string
	// DialTimeout bounds connecting to the app; default 5s.
	DialTimeout time.Duration
}

// Handler is the http.Handler of the tunnel server.
type Handler struct {
	cfg   Config
	log   *slog.Logger
	ports atomic.Pointer[map[uint32]*appPort]

	http1 http.RoundTripper // to apps that speak HTTP/1.1
	http2 http.RoundTripper // to apps that speak h2c
}

// appPort is a declared app port.
type appPort struct {
	proto   meshv1.Protocol
	addr    string // AppHost:port
	service string // ":port", the service label of its metrics
	series  sync.Map
}

// seriesOf returns the request series of a peer at this port.
func (a *appPort) seriesOf(m *metrics.Metrics, peer string) *metrics.Series {
	if s, ok := a.series.Load(peer); ok {
		return s.(*metrics.Series)
	}
	s, _ := a.series.LoadOrStore(peer, m.Series(metrics.Inbound, peer, a.service))
	return s.(*metrics.Series)
}

// New returns a Handler that refuses everything until SetPorts.
func New(cfg Config) (*Handler, error) {
	if cfg.Metrics == nil {
		return nil, errors.New("inbound: metrics required")
	}
	if cfg.AppHost == "" {
		cfg.AppHost = "127.0.0.1"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	h := &Handler{cfg: cfg, log: cfg.Logger}
	h.ports.Store(&map[uint32]*appPort{})
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	t1 := &h1.Client{
		DialContext:    dialer.DialContext,
		MaxIdlePerHost: 256,
		IdleTimeout:    90 * time.Second,
	}
	var p2 http.Protocols
	p2.SetUnencryptedHTTP2(true)
	t2 := &http.Transport{DialContext: dialer.DialContext, Protocols: &p2, IdleConnTimeout: 90 * time.Second}
	h.http1, h.http2 = t1, t2
	return h, nil
}

// SetPorts replaces the app ports that may be reached, with their protocols.
func (h *Handler) SetPorts(ports []*meshv1.InboundPort) {
	old := h.ports.Load()
	m := make(map[uint32]*appPort, len(ports))
	for _, p := range ports {
		if o, ok := (*old)[p.GetPort()]; ok && o.proto == p.GetProtocol() {
			m[p.GetPort()] = o // keeps its series
			continue
		}
		port := strconv.FormatUint(uint64(p.GetPort()), 10)
		m[p.GetPort()] = &appPort{
			proto:   p.GetProtocol(),
			addr:    net.JoinHostPort(h.cfg.AppHost, port),
			service: ":" + port,
		}
	}
	h.ports.Store(&m)
}

func (h *Handler) port(s string) (*appPort, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return nil, false
	}
	a, ok := (*h.ports.Load())[uint32(n)]
	return a, ok
}

type peerKey struct{}

// ConnContext is the http.Server hook that records the verified peer
// identity of a tunnel connection for its requests.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ctx
	}
	id, err := meshtls.PeerID(tc.ConnectionState())
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, newPeer(id))
}

// peer is the verified identity of a connection's peer, with the header
// value that carries it to the app.
type peer struct {
	id       spiffeid.ID
	clientID []string // Rampart-Client-Id
}

func newPeer(id spiffeid.ID) *peer { return &peer{id: id, clientID: []string{id.String()}} }

func peerOf(ctx context.Context) (*peer, bool) {
	switch v := ctx.Value(peerKey{}).(type) {
	case *peer:
		return v, true
	case spiffeid.ID:
		return newPeer(v), true
	}
	return nil, false
}

// PeerID returns the verified identity of the peer that sent the request.
func PeerID(ctx context.Context) (spiffeid.ID, bool) {
	p, ok := peerOf(ctx)
	if !ok {
		return spiffeid.ID{}, false
	}
	return p.id, true
}

func (h *Handler) refuse(w http.ResponseWriter, status int, reason, msg string) {
	h.cfg.Metrics.Refusals.WithLabelValues(metrics.Inbound, reason).Inc()
	http.Error(w, "rampart: "+msg, status)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer, ok := peerOf(r.Context())
	if !ok {
		// Unreachable through Listener; fail closed all the same.
		h.refuse(w, http.StatusForbidden, ReasonNoPeerIdentity, "no verified peer identity")
		return
	}
	if r.Method == http.MethodConnect {
		h.serveConnect(w, r, peer.id)
		return
	}
	var target string
	if v := r.Header[tunnel.HeaderTargetPort]; len(v) > 0 {
		target = v[0]
	}
	app, ok := h.port(target)
	if !ok {
		h.log.Warn("refused request to an undeclared port", "peer", peer.id, "target_port", target)
		h.refuse(w, http.StatusForbidden, ReasonPortNotAllowed, "target port is not served by this workload")
		return
	}
	var rt http.RoundTripper
	switch app.proto {
	case meshv1.Protocol_PROTOCOL_HTTP:
		rt = h.http1
	case meshv1.Protocol_PROTOCOL_HTTP2:
		rt = h.http2
	case meshv1.Protocol_PROTOCOL_AUTO:
		// Detected at the caller: speak to the app as the caller's app
		// spoke.
		rt = h.http1
		if v := r.Header[tunnel.HeaderAppProtocol]; len(v) > 0 && v[0] == tunnel.AppProtocolH2C {
			rt = h.http2
		}
	default:
		h.refuse(w, http.StatusForbidden, ReasonProtocolMismatch, "target port does not speak HTTP")
		return
	}
	start := time.Now()
	code := h.forward(w, r, rt, app, peer)
	app.seriesOf(h.cfg.Metrics, peer.id.String()).Observe(code, time.Since(start).Seconds())
}

// forward passes a request on to the app and its answer back, and returns
// the status code to count.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, rt http.RoundTripper, app *appPort, peer *peer) int {
	x, err := forward.NewExchange(w, r)
	if err != nil {
		return h.appFailed(w, app, err)
	}
	defer x.Close()
	out := x.Out
	out.URL.Scheme = "http"
	out.URL.Host = app.addr
	delete(out.Header, tunnel.HeaderTargetPort)
	delete(out.Header, tunnel.HeaderAppProtocol)
	tunnel.StripLookalikes(out.Header)
	// The caller's identity is what mTLS proved, never what the request
	// says.
	out.Header[tunnel.HeaderClientID] = peer.clientID
	res, err := rt.RoundTrip(out)
	x.RoundTripDone()
	if err != nil {
		return h.appFailed(w, app, err)
	}
	if err := x.WriteResponse(res); err != nil {
		// The body broke off: abort, so that the client sees the
		// response incomplete.
		panic(http.ErrAbortHandler)
	}
	return res.StatusCode
}

// appFailed answers a request the app could not be asked, and returns the
// status code to count.
func (h *Handler) appFailed(w http.ResponseWriter, app *appPort, err error) int {
	if errors.Is(err, context.Canceled) {
		return http.StatusOK // nothing was written, as before
	}
	h.cfg.Metrics.Refusals.WithLabelValues(metrics.Inbound, ReasonAppUnavailable).Inc()
	h.log.Warn("app unreachable", "target_port", app.service[1:], "err", err)
	http.Error(w, "rampart: the destination app is unavailable", http.StatusBadGateway)
	return http.StatusBadGateway
}

func (h *Handler) serveConnect(w http.ResponseWriter, r *http.Request, peer spiffeid.ID) {
	host, portStr, err := net.SplitHostPort(r.Host)
	if err != nil || host != tunnel.ConnectHost {
		h.refuse(w, http.StatusBadRequest, ReasonBadTarget, "CONNECT authority must be "+tunnel.ConnectHost+":<port>")
		return
	}
	app, ok := h.port(portStr)
	if !ok {
		h.log.Warn("refused stream to an undeclared port", "peer", peer, "target_port", portStr)
		h.refuse(w, http.StatusForbidden, ReasonPortNotAllowed, "target port is not served by this workload")
		return
	}
	if app.proto != meshv1.Protocol_PROTOCOL_TCP && app.proto != meshv1.Protocol_PROTOCOL_AUTO {
		h.refuse(w, http.StatusForbidden, ReasonProtocolMismatch, "target port speaks HTTP; send requests, not a stream")
		return
	}
	conn, err := net.DialTimeout("tcp", app.addr, h.cfg.DialTimeout)
	if err != nil {
		h.log.Warn("app unreachable", "target_port", portStr, "err", err)
		h.refuse(w, http.StatusServiceUnavailable, ReasonAppUnavailable, "the destination app is unavailable")
		return
	}
	defer conn.Close()
	// A stream reset by the peer (or a proxy draining) ends the app side.
	stop := context.AfterFunc(r.Context(), func() { conn.Close() })
	defer stop()
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	peerID, service := peer.String(), app.service
	h.cfg.Metrics.TCPConnections.WithLabelValues(metrics.Inbound, peerID, service).Inc()

	var wg sync.WaitGroup
	var fromPeer int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		fromPeer, _ = io.Copy(conn, r.Body)
		closeWrite(conn)
	}()
	toPeer, _ := copyFlush(w, rc, conn)
	// The app is done sending; stop reading from the peer too. Closing the
	// body unblocks a read pending on the HTTP/2 stream.
	conn.Close()
	r.Body.Close()
	wg.Wait()
	h.cfg.Metrics.TCPBytes.WithLabelValues(metrics.Inbound, peerID, service, "sent").Add(float64(toPeer))
	h.cfg.Metrics.TCPBytes.WithLabelValues(metrics.Inbound, peerID, service, "received").Add(float64(fromPeer))
}

// copyFlush copies src to w, flushing after every read so that interactive
// protocols see each write at once.
func copyFlush(w io.Writer, rc *http.ResponseController, src io.Reader) (int64, error) {
	bp := forward.GetBuffer()
	defer forward.PutBuffer(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if err := rc.Flush(); err != nil {
				return n, err
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return n, nil
			}
			return n, rerr
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
