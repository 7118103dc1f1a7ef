// Package inbound serves the tunnel's receiving end: requests and CONNECT
// streams from peer proxies, already authenticated by mTLS, forwarded to the
// app on loopback with the caller's verified identity attached.
//
// Only ports the controller declared for this workload are reachable, and
// only with their declared protocol: an opaque stream to an HTTP port (which
// would skip per-request handling) is refused, as is anything to an
// undeclared port. A port whose protocol is detected (Auto) takes both
// requests and streams, as the caller's proxy classified the connection,
// except streams whose first bytes speak HTTP: the caller's proxy would
// have sent those as requests.
//
// Every request and stream is then authorized (package authz) against the
// workload's policy, which comes with the ports in one configuration: a
// request's path and host are normalized first, and the app receives the
// normalized form, so that it sees what the rules saw. Without a policy
// everything is denied. What a policy allows then passes its rate limits
// (package ratelimit).
//
// Requests reach an HTTP/1.1 app through package h1's client, an h2c app
// through net/http's transport, both passed on with package forward.
//
// Connections redirected to the workload without mTLS (iptables sends
// every inbound connection but the tunnel's to the plaintext listener) are
// refused and counted, unless the policy makes their port PERMISSIVE: then
// they are served like tunnel traffic, without an identity, and only TCP
// ports take opaque streams.
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
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/codedigest"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/accesslog"
	"github.com/rampart-mesh/rampart/internal/proxy/forward"
	"github.com/rampart-mesh/rampart/internal/proxy/h1"
	"github.com/rampart-mesh/rampart/internal/proxy/logsample"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/origdst"
	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
	"github.com/rampart-mesh/rampart/internal/proxy/tap"
	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
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
	// MaxPlaintextConns bounds the plaintext connections accepted on
	// PERMISSIVE ports and served at once; beyond it they are closed.
	// Default DefaultMaxPlaintextConns.
	MaxPlaintextConns int
	// DetectTimeout bounds how long protocol detection waits for an
	// accepted plaintext connection's first bytes; default 1s.
	DetectTimeout time.Duration
	// DrainTimeout bounds how long ServePlaintext lets accepted
	// connections finish once its context ends; default 10s.
	DrainTimeout time.Duration
	// OriginalDst returns where a plaintext connection was going before
	// iptables redirected it; nil means origdst.Get.
	OriginalDst func(net.Conn) (netip.AddrPort, error)
	// Tap receives the heads of the requests from the tunnel while a tap
	// (rampart tap) is active; nil taps nothing.
	Tap *tap.Tapper
	// Tracer gives each request a SERVER span; nil traces nothing.
	Tracer *tracing.Tracer
	// AccessLog gets a line per request; nil logs nothing.
	AccessLog *accesslog.Logger
	// Identity is the workload's SPIFFE ID, the destination in access
	// log lines.
	Identity string
}

// DefaultMaxPlaintextConns is the default of Config.MaxPlaintextConns.
const DefaultMaxPlaintextConns = 1024

// Handler is the http.Handler of the tunnel server.
type Handler struct {
	cfg   Config
	log   *slog.Logger
	state atomic.Pointer[state]
	setMu sync.Mutex // serializes SetConfig

	http1 http.RoundTripper // to apps that speak HTTP/1.1
	http2 http.RoundTripper // to apps that speak h2c

	// unknownLimit samples the log of refusals by a limit that the
	// policy's spec does not name.
	unknownLimit limitCounts
	// plainLog samples the log of plaintext connections refused in bulk.
	plainLog sampler
	// unknownDenyLog and unknownAuditLog sample the log of decisions
	// that the policy's spec does not name; streamLog, of streams refused
	// for looking like HTTP.
	unknownDenyLog, unknownAuditLog, streamLog logsample.Bucket
}

// appPort is a declared app port.
type appPort struct {
	port    uint16
	proto   meshv1.Protocol
	addr    string // AppHost:port
	service string // ":port", the service label of its metrics
	series  sync.Map
}

// seriesOf returns the request series of a peer at this port ("" for a
// plaintext client).
func (a *appPort) seriesOf(m *metrics.Metrics, peer string) *metrics.Series {
	if s, ok := a.series.Load(peer); ok {
		return s.(*metrics.Series)
	}
	s, _ := a.series.LoadOrStore(peer, m.Series(a.edge(peer), ""))
	return s.(*metrics.Series)
}

// edge is the edge in metrics of a peer at this port ("" for a plaintext
// client).
func (a *appPort) edge(peer string) metrics.Edge {
	return metrics.Edge{Direction: metrics.Inbound, PeerIdentity: peer, Service: a.service, MTLS: peer != ""}
}

// New returns a Handler that refuses everything until SetConfig.
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
	if cfg.MaxPlaintextConns <= 0 {
		cfg.MaxPlaintextConns = DefaultMaxPlaintextConns
	}
	if cfg.DetectTimeout <= 0 {
		cfg.DetectTimeout = time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.OriginalDst == nil {
		cfg.OriginalDst = origdst.Get
	}
	h := &Handler{cfg: cfg, log: cfg.Logger}
	h.state.Store(&state{ports: map[uint32]*appPort{}, counts: newPolicyCounts(cfg.Metrics, nil, nil, nil)})
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

// SetConfig replaces, together, the app ports that may be reached (with
// their protocols; ports outside 1-65535 are left out) and the policy that
// authorizes requests to them.
func (h *Handler) SetConfig(ports []*meshv1.InboundPort, pol Policy) {
	h.setMu.Lock()
	defer h.setMu.Unlock()
	old := h.state.Load()
	m := make(map[uint32]*appPort, len(ports))
	for _, p := range ports {
		if p.GetPort() == 0 || p.GetPort() > 65535 {
			continue
		}
		if o, ok := old.ports[p.GetPort()]; ok && o.proto == p.GetProtocol() {
			m[p.GetPort()] = o // keeps its series
			continue
		}
		port := strconv.FormatUint(uint64(p.GetPort()), 10)
		m[p.GetPort()] = &appPort{
			port:    uint16(p.GetPort()),
			proto:   p.GetProtocol(),
			addr:    net.JoinHostPort(h.cfg.AppHost, port),
			service: ":" + port,
		}
	}
	counts := newPolicyCounts(h.cfg.Metrics, pol.Spec, pol.Engine, old.counts)
	h.state.Store(&state{ports: m, policy: pol, counts: counts})
	old.counts.forget(counts)
}

// Policy returns the policy in force (its Limiter is the one to
// Reconfigure for the next).
func (h *Handler) Policy() Policy { return h.state.Load().policy }

// portOf parses a port number as received.
func portOf(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0
	}
	return n
}

type peerKey struct{}

// ConnContext is the http.Server hook that records the verified peer
// identity of a tunnel connection for its requests.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ctx
	}
	cs := tc.ConnectionState()
	id, err := meshtls.PeerID(cs)
	if err != nil {
		return ctx
	}
	p := newPeer(id)
	// The handshake verified the chain: the attested code digest it
	// carries, if any, is the controller's word.
	p.digest, _ = codedigest.FromCertificate(cs.PeerCertificates[0])
	return context.WithValue(ctx, peerKey{}, p)
}

// peer is who sent a request: the verified identity of a tunnel
// connection's peer, with the header value that carries it to the app, or
// a plaintext client, without one.
type peer struct {
	id       spiffeid.ID // zero for a plaintext client
	clientID []string    // Rampart-Client-Id; nil for a plaintext client
	ip       netip.Addr  // the client's address; invalid means r.RemoteAddr
	digest   string      // the attested digest of the peer's code, if its certificate carries one
}

func newPeer(id spiffeid.ID) *peer { return &peer{id: id, clientID: []string{id.String()}} }

// name is the verified SPIFFE ID, or "" without one.
func (p *peer) name() string {
	if p.clientID == nil {
		return ""
	}
	return p.clientID[0]
}

func (p *peer) authenticated() bool { return p.clientID != nil }

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
	st := h.state.Load()
	if r.Method == http.MethodConnect {
		h.serveConnect(w, r, st, peer)
		return
	}
	var target string
	if v := r.Header[tunnel.HeaderTargetPort]; len(v) > 0 {
		target = v[0]
	}
	app, ok := st.port(portOf(target))
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
	code := 0
	if h.cfg.Tracer != nil || h.cfg.AccessLog != nil {
		span := h.cfg.Tracer.Start(r, tracing.Server)
		defer func() { h.observed(r, w.Header(), peer, start, span, code) }()
	}
	code = h.serveRequest(w, r, st, app, rt, peer)
	app.seriesOf(h.cfg.Metrics, peer.name()).ObserveHTTP(r, w.Header(), code, time.Since(start).Seconds())
	if h.cfg.Tap.Active() {
		h.cfg.Tap.Observe(true, peer.name(), r, w.Header(), code, time.Since(start))
	}
}

// serveRequest authorizes a request to app from src, and passes it on if
// it may go on. It returns the status code to count.
func (h *Handler) serveRequest(w http.ResponseWriter, r *http.Request, st *state, app *appPort, rt http.RoundTripper, src *peer) int {
	// Conditions see the headers the app will see: none of the tunnel's
	// own, from the caller or its app, nor their lookalikes. The app gets
	// the verified identity, which conditions read as source.principal.
	delete(r.Header, tunnel.HeaderClientID)
	delete(r.Header, tunnel.HeaderTargetPort)
	delete(r.Header, tunnel.HeaderAppProtocol)
	tunnel.StripLookalikes(r.Header)
	req := authz.Request{
		Source:        src.name(),
		Authenticated: src.authenticated(),
		SourceDigest:  src.digest,
		SourceIP:      src.ip,
		Port:          app.port,
		Protocol:      authz.ProtocolHTTP,
		Method:        r.Method,
		Headers:       authz.HTTPHeaders(r.Header),
		Time:          time.Now(),
	}
	if !req.SourceIP.IsValid() {
		req.SourceIP = remoteIP(r.RemoteAddr)
	}
	rawPath, path, host, err := requestPathHost(r)
	if err == nil && !validMethod(r.Method) {
		err = errMethod
	}
	if err != nil {
		return h.refuseRequest(w, r, src, h.invalid(st, &req, rawPath, err))
	}
	req.Path, req.Host = path, host
	if v := h.check(st, &req); v.status != 0 {
		return h.refuseRequest(w, r, src, v)
	}
	return h.forward(w, r, rt, app, src, path, host)
}

// refuseRequest answers a request that v refuses, and returns the status
// code to count. A plaintext client's connection is closed after the
// answer, so that a refused client does not keep one of the few plaintext
// slots.
func (h *Handler) refuseRequest(w http.ResponseWriter, r *http.Request, src *peer, v verdict) int {
	if !src.authenticated() {
		w.Header().Set("Connection", "close")
	}
	return answer(w, r, v)
}

// forward passes a request on to the app, with its normalized path and
// host, and its answer back, and returns the status code to count.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, rt http.RoundTripper, app *appPort, src *peer, path, host string) int {
	x, err := forward.NewExchange(w, r)
	if err != nil {
		return h.appFailed(w, app, err)
	}
	defer x.Close()
	out := x.Out
	out.URL.Scheme = "http"
	out.URL.Host = app.addr
	out.URL.Opaque, out.URL.User = "", nil
	setPath(out.URL, path)
	if host != "" {
		out.Host = host
	}
	delete(out.Header, "Host")
	// serveRequest removed the tunnel's headers. The caller's identity is
	// what mTLS proved, never what the request says; a plaintext caller
	// has none.
	if src.clientID != nil {
		out.Header[tunnel.HeaderClientID] = src.clientID
	}
	res, err := rt.RoundTrip(out)
	x.RoundTripDone()
	if err != nil {
		return h.appFailed(w, app, err)
	}
	stripDecisionID(res)
	if err := x.WriteResponse(res); err != nil {
		// The body broke off: abort, so that the client sees the
		// response incomplete.
		panic(http.ErrAbortHandler)
	}
	return res.StatusCode
}

// stripDecisionID removes Rampart-Decision-Id from the app's response,
// header and trailers: only the proxy marks an answer as its policy's
// refusal, and an app's own mark would otherwise reach the caller and the
// access log as a decision.
func stripDecisionID(res *http.Response) {
	delete(res.Header, HeaderDecisionID)
	delete(res.Trailer, HeaderDecisionID)
	if res.Body != nil && res.Body != http.NoBody {
		// Trailers arrive with the end of the body, announced or not.
		res.Body = &trailerStripper{ReadCloser: res.Body, res: res}
	}
}

// trailerStripper removes Rampart-Decision-Id from its response's
// trailers once the body ends, when they have arrived.
type trailerStripper struct {
	io.ReadCloser
	res *http.Response
}

func (b *trailerStripper) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		delete(b.res.Trailer, HeaderDecisionID)
	}
	return n, err
}

// setPath sets the path of u to p, a normalized path, so that it is sent
// exactly as p.
func setPath(u *url.URL, p string) {
	if strings.IndexByte(p, '%') < 0 {
		u.Path, u.RawPath = p, ""
		return
	}
	// A normalized path holds only valid escapes, none of '/', and only
	// characters that need none: EscapedPath gives RawPath back as is.
	dec, err := url.PathUnescape(p)
	if err != nil {
		dec = p // unreachable for a normalized path
	}
	u.Path, u.RawPath = dec, p
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

func (h *Handler) serveConnect(w http.ResponseWriter, r *http.Request, st *state, peer *peer) {
	host, portStr, err := net.SplitHostPort(r.Host)
	if err != nil || host != tunnel.ConnectHost {
		h.refuse(w, http.StatusBadRequest, ReasonBadTarget, "CONNECT authority must be "+tunnel.ConnectHost+":<port>")
		return
	}
	app, ok := st.port(portOf(portStr))
	if !ok {
		h.log.Warn("refused stream to an undeclared port", "peer", peer.id, "target_port", portStr)
		h.refuse(w, http.StatusForbidden, ReasonPortNotAllowed, "target port is not served by this workload")
		return
	}
	if app.proto != meshv1.Protocol_PROTOCOL_TCP && app.proto != meshv1.Protocol_PROTOCOL_AUTO {
		h.refuse(w, http.StatusForbidden, ReasonProtocolMismatch, "target port speaks HTTP; send requests, not a stream")
		return
	}
	req := authz.Request{
		Source:        peer.name(),
		SourceDigest:  peer.digest,
		Authenticated: peer.authenticated(),
		SourceIP:      peer.ip,
		Port:          app.port,
		Protocol:      authz.ProtocolTCP,
		Time:          time.Now(),
	}
	if !req.SourceIP.IsValid() {
		req.SourceIP = remoteIP(r.RemoteAddr)
	}
	if v := h.check(st, &req); v.status != 0 {
		h.cfg.Metrics.StreamRefused(app.edge(peer.name()), v.status)
		// The caller's proxy closes the app's connection on any answer
		// but 200.
		answer(w, nil, v)
		return
	}
	// A caller's proxy sends HTTP to an Auto port as requests: a stream
	// that starts like HTTP would skip per-request authorization.
	var start *streamStart
	if app.proto == meshv1.Protocol_PROTOCOL_AUTO {
		start = newStreamStart(r.Body)
		if start.wait(h.cfg.DetectTimeout) {
			h.httpStream(peer, app)
			h.refuse(w, http.StatusForbidden, ReasonProtocolMismatch, "the stream speaks HTTP; send requests, not a stream")
			return
		}
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
	edge := app.edge(peer.name())
	h.cfg.Metrics.StreamOpened(edge)

	var wg sync.WaitGroup
	var fromPeer int64
	var httpLate atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		if start != nil {
			// Nothing came before the detection timeout: the app may be
			// the one to speak first. The first bytes still decide,
			// whenever they come, before the app sees any.
			if start.http() {
				httpLate.Store(true)
				conn.Close()
				return
			}
			n, err := conn.Write(start.bytes())
			fromPeer += int64(n)
			if err != nil || start.err != nil {
				closeWrite(conn)
				return
			}
		}
		n, _ := io.Copy(conn, r.Body)
		fromPeer += n
		closeWrite(conn)
	}()
	toPeer, _ := copyFlush(w, rc, conn)
	// The app is done sending; stop reading from the peer too. Closing the
	// body unblocks a read pending on the HTTP/2 stream.
	conn.Close()
	r.Body.Close()
	wg.Wait()
	h.cfg.Metrics.StreamClosed(edge, toPeer, fromPeer)
	if httpLate.Load() {
		h.cfg.Metrics.Refusals.WithLabelValues(metrics.Inbound, ReasonProtocolMismatch).Inc()
		h.httpStream(peer, app)
		panic(http.ErrAbortHandler) // reset the stream: it was cut, not ended
	}
}

// httpStream logs a stream refused because it speaks HTTP.
func (h *Handler) httpStream(peer *peer, app *appPort) {
	if ok, suppressed := h.streamLog.Allow(time.Now()); ok {
		h.log.Info("refused stream: it speaks HTTP, which goes to an Auto port as requests",
			"direction", metrics.Inbound, "peer", peer.name(), "target_port", app.port,
			"suppressed_since_last", suppressed)
	}
}

// streamStart reads the first bytes of a stream until sniff.Classify
// decides what they are, or the stream ends.
type streamStart struct {
	done chan struct{}
	mu   sync.Mutex
	n    int   // guarded by mu until done
	err  error // the read error that ended it early; set before done
	buf  [sniff.MaxPeek]byte
}

func newStreamStart(r io.Reader) *streamStart {
	s := &streamStart{done: make(chan struct{})}
	go s.read(r)
	return s
}

func (s *streamStart) read(r io.Reader) {
	defer close(s.done)
	for n := 0; n < len(s.buf); {
		m, err := r.Read(s.buf[n:])
		n += m
		s.mu.Lock()
		s.n = n
		s.mu.Unlock()
		if _, complete := sniff.Classify(s.buf[:n]); complete {
			return
		}
		if err != nil {
			s.err = err
			return
		}
	}
}

// wait waits up to timeout for the first bytes to be read, and reports
// whether the stream must be refused: it speaks HTTP, or it stopped,
// still open, in the middle of something that could be HTTP. A stream
// that sent nothing yet may go on; http decides once its bytes come.
func (s *streamStart) wait(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		return s.http()
	case <-t.C:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.n > 0
	}
}

// http waits for the first bytes to be read, and reports whether they
// speak HTTP/1 or HTTP/2. What ended (closed, reset) before it could be
// classified is not HTTP that an app would serve.
func (s *streamStart) http() bool {
	<-s.done
	p, _ := sniff.Classify(s.buf[:s.n])
	return p == sniff.HTTP1 || p == sniff.HTTP2
}

// bytes returns the bytes read; once done.
func (s *streamStart) bytes() []byte { return s.buf[:s.n] }

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
