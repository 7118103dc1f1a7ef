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
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
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
	ports atomic.Pointer[map[uint32]meshv1.Protocol]

	http1 *httputil.ReverseProxy
	http2 *httputil.ReverseProxy
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
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	t1 := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	var p2 http.Protocols
	p2.SetUnencryptedHTTP2(true)
	t2 := &http.Transport{DialContext: dialer.DialContext, Protocols: &p2, IdleConnTimeout: 90 * time.Second}
	h.http1 = h.reverseProxy(t1)
	h.http2 = h.reverseProxy(t2)
	return h, nil
}

func (h *Handler) reverseProxy(t http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport: t,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = net.JoinHostPort(h.cfg.AppHost, pr.In.Header.Get(tunnel.HeaderTargetPort))
			pr.Out.Header.Del(tunnel.HeaderTargetPort)
			pr.Out.Header.Del(tunnel.HeaderAppProtocol)
			// The caller's identity is what mTLS proved, never what the
			// request says.
			pr.Out.Header.Del(tunnel.HeaderClientID)
			if id, ok := PeerID(pr.In.Context()); ok {
				pr.Out.Header.Set(tunnel.HeaderClientID, id.String())
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			h.cfg.Metrics.Refusals.WithLabelValues(metrics.Inbound, ReasonAppUnavailable).Inc()
			h.log.Warn("app unreachable", "target_port", r.Header.Get(tunnel.HeaderTargetPort), "err", err)
			http.Error(w, "rampart: the destination app is unavailable", http.StatusBadGateway)
		},
	}
}

// SetPorts replaces the app ports that may be reached, with their protocols.
func (h *Handler) SetPorts(ports []*meshv1.InboundPort) {
	m := make(map[uint32]meshv1.Protocol, len(ports))
	for _, p := range ports {
		m[p.GetPort()] = p.GetProtocol()
	}
	h.ports.Store(&m)
}

func (h *Handler) port(s string) (uint32, meshv1.Protocol, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, 0, false
	}
	m := h.ports.Load()
	if m == nil {
		return 0, 0, false
	}
	proto, ok := (*m)[uint32(n)]
	return uint32(n), proto, ok
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
	return context.WithValue(ctx, peerKey{}, id)
}

// PeerID returns the verified identity of the peer that sent the request.
func PeerID(ctx context.Context) (spiffeid.ID, bool) {
	id, ok := ctx.Value(peerKey{}).(spiffeid.ID)
	return id, ok
}

func (h *Handler) refuse(w http.ResponseWriter, status int, reason, msg string) {
	h.cfg.Metrics.Refusals.WithLabelValues(metrics.Inbound, reason).Inc()
	http.Error(w, "rampart: "+msg, status)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer, ok := PeerID(r.Context())
	if !ok {
		// Unreachable through Listener; fail closed all the same.
		h.refuse(w, http.StatusForbidden, ReasonNoPeerIdentity, "no verified peer identity")
		return
	}
	if r.Method == http.MethodConnect {
		h.serveConnect(w, r, peer)
		return
	}
	port, proto, ok := h.port(r.Header.Get(tunnel.HeaderTargetPort))
	if !ok {
		h.log.Warn("refused request to an undeclared port", "peer", peer, "target_port", r.Header.Get(tunnel.HeaderTargetPort))
		h.refuse(w, http.StatusForbidden, ReasonPortNotAllowed, "target port is not served by this workload")
		return
	}
	var rp *httputil.ReverseProxy
	switch proto {
	case meshv1.Protocol_PROTOCOL_HTTP:
		rp = h.http1
	case meshv1.Protocol_PROTOCOL_HTTP2:
		rp = h.http2
	case meshv1.Protocol_PROTOCOL_AUTO:
		// Detected at the caller: speak to the app as the caller's app
		// spoke.
		rp = h.http1
		if r.Header.Get(tunnel.HeaderAppProtocol) == tunnel.AppProtocolH2C {
			rp = h.http2
		}
	default:
		h.refuse(w, http.StatusForbidden, ReasonProtocolMismatch, "target port does not speak HTTP")
		return
	}
	start := time.Now()
	sw := &metrics.StatusWriter{ResponseWriter: w}
	rp.ServeHTTP(sw, r)
	peerID := peer.String()
	service := ":" + strconv.FormatUint(uint64(port), 10)
	h.cfg.Metrics.Requests.WithLabelValues(metrics.Inbound, peerID, service, metrics.Code(sw.Code())).Inc()
	h.cfg.Metrics.RequestDuration.WithLabelValues(metrics.Inbound, peerID, service).Observe(time.Since(start).Seconds())
}

func (h *Handler) serveConnect(w http.ResponseWriter, r *http.Request, peer spiffeid.ID) {
	host, portStr, err := net.SplitHostPort(r.Host)
	if err != nil || host != tunnel.ConnectHost {
		h.refuse(w, http.StatusBadRequest, ReasonBadTarget, "CONNECT authority must be "+tunnel.ConnectHost+":<port>")
		return
	}
	port, proto, ok := h.port(portStr)
	if !ok {
		h.log.Warn("refused stream to an undeclared port", "peer", peer, "target_port", portStr)
		h.refuse(w, http.StatusForbidden, ReasonPortNotAllowed, "target port is not served by this workload")
		return
	}
	if proto != meshv1.Protocol_PROTOCOL_TCP && proto != meshv1.Protocol_PROTOCOL_AUTO {
		h.refuse(w, http.StatusForbidden, ReasonProtocolMismatch, "target port speaks HTTP; send requests, not a stream")
		return
	}
	app, err := net.DialTimeout("tcp", net.JoinHostPort(h.cfg.AppHost, portStr), h.cfg.DialTimeout)
	if err != nil {
		h.log.Warn("app unreachable", "target_port", portStr, "err", err)
		h.refuse(w, http.StatusServiceUnavailable, ReasonAppUnavailable, "the destination app is unavailable")
		return
	}
	defer app.Close()
	// A stream reset by the peer (or a proxy draining) ends the app side.
	stop := context.AfterFunc(r.Context(), func() { app.Close() })
	defer stop()
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	peerID, service := peer.String(), ":"+strconv.FormatUint(uint64(port), 10)
	h.cfg.Metrics.TCPConnections.WithLabelValues(metrics.Inbound, peerID, service).Inc()

	var wg sync.WaitGroup
	var fromPeer int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		fromPeer, _ = io.Copy(app, r.Body)
		closeWrite(app)
	}()
	toPeer, _ := copyFlush(w, rc, app)
	// The app is done sending; stop reading from the peer too. Closing the
	// body unblocks a read pending on the HTTP/2 stream.
	app.Close()
	r.Body.Close()
	wg.Wait()
	h.cfg.Metrics.TCPBytes.WithLabelValues(metrics.Inbound, peerID, service, "sent").Add(float64(toPeer))
	h.cfg.Metrics.TCPBytes.WithLabelValues(metrics.Inbound, peerID, service, "received").Add(float64(fromPeer))
}

// copyFlush copies src to w, flushing after every read so that interactive
// protocols see each write at once.
func copyFlush(w io.Writer, rc *http.ResponseController, src io.Reader) (int64, error) {
	buf := make([]byte, 32*1024)
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
