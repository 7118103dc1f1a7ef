// Package outbound serves the app-facing side of the proxy: local listeners
// that the app calls in plain text, one per upstream service. Each
// connection or request is sent to an endpoint of the service through the
// mTLS tunnel, which verifies that the endpoint proves the identity
// discovery promised.
//
// HTTP/1.1 and HTTP/2 (h2c, gRPC) are proxied request by request, each
// request balanced on its own; opaque TCP is carried as one tunnel stream
// per connection. HTTP/1.1 is served by the lean server of package h1,
// h2c by net/http's; both hand requests to the same handler, which passes
// them on with package forward. It must not depend on Kubernetes packages.
package outbound

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
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

	"golang.org/x/sync/errgroup"

	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/accept"
	"github.com/rampart-mesh/rampart/internal/proxy/forward"
	"github.com/rampart-mesh/rampart/internal/proxy/h1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Refusal reasons counted in rampart_proxy_refusals_total.
const (
	ReasonUnknownService = "unknown_service"
	ReasonNoEndpoints    = "no_endpoints"
	ReasonPeerFailed     = "peer_unavailable"
	// The peer's proxy refused a TCP stream by policy (403) or rate
	// limit (429).
	ReasonPeerDenied      = "peer_denied"
	ReasonPeerRateLimited = "peer_rate_limited"
	ReasonEgressDenied    = "egress_denied"
	ReasonConnect         = "connect_from_app"
	ReasonLoop            = "redirect_loop"
	ReasonNoDestination   = "no_original_destination"
)

// statusClientClosed is the code recorded for a request its caller
// abandoned before the answer (nginx's 499).
const statusClientClosed = 499

// maxAttempts bounds how many endpoints one request or connection tries
// when tunnels cannot be established.
const maxAttempts = 3

// Upstream is one app-facing listener: the service it reaches and where
// the app calls it.
type Upstream struct {
	// Service is "name" (the proxy's own namespace) or "name.namespace".
	Service string
	// Port selects a port of a multi-port service by name or number; empty
	// means the service's only port.
	Port string
	// Listen is the local address the app calls, such as 127.0.0.1:9001.
	Listen string
}

// String renders the upstream as ParseUpstream reads it.
func (u Upstream) String() string {
	s := u.Service
	if u.Port != "" {
		s += ":" + u.Port
	}
	return s + "=" + u.Listen
}

// ParseUpstream reads "service[.namespace][:port]=host:port", the form of
// the proxy's --upstream flag.
func ParseUpstream(s string) (Upstream, error) {
	svc, listen, ok := strings.Cut(s, "=")
	if !ok {
		return Upstream{}, fmt.Errorf("outbound: upstream %q: want service[.namespace][:port]=host:port", s)
	}
	var u Upstream
	u.Service, u.Port, _ = strings.Cut(svc, ":")
	u.Listen = listen
	name, ns, _ := strings.Cut(u.Service, ".")
	if err := identity.ValidateName(name); err != nil {
		return Upstream{}, fmt.Errorf("outbound: upstream %q: service name: %w", s, err)
	}
	if ns != "" {
		if err := identity.ValidateName(ns); err != nil {
			return Upstream{}, fmt.Errorf("outbound: upstream %q: namespace: %w", s, err)
		}
	}
	if _, port, err := net.SplitHostPort(listen); err != nil || port == "" {
		return Upstream{}, fmt.Errorf("outbound: upstream %q: listen address must be host:port", s)
	}
	return u, nil
}

// Config configures an Outbound.
type Config struct {
	// Upstreams are explicit app-facing listeners, one per service.
	Upstreams []Upstream
	// Transparent, when set, is the address of the listener that receives
	// the app's connections redirected by iptables (see
	// internal/proxy/iptables). The original destination of each selects
	// a service by its address or an endpoint by its IP; any other
	// destination is outside the mesh and is passed through or refused,
	// as the configuration's egress mode says.
	Transparent string
	// Namespace is the proxy's own namespace, for upstreams without one.
	Namespace string
	Dialer    *tunnel.Dialer   // required
	Metrics   *metrics.Metrics // required
	Logger    *slog.Logger     // nil discards
	// DrainTimeout bounds how long Run waits for requests and connections
	// in flight after its context ends; default 10s.
	DrainTimeout time.Duration
	// DetectTimeout bounds how long protocol detection waits for a
	// client's first bytes on a port of protocol Auto before treating the
	// connection as opaque; default 1s. Misdetection costs per-request
	// handling, never the connection: the peer accepts both.
	DetectTimeout time.Duration
	// DialTimeout bounds dialing a destination outside the mesh; default 5s.
	DialTimeout time.Duration
}

// Outbound owns the app-facing listeners.
type Outbound struct {
	cfg         Config
	log         *slog.Logger
	listeners   []net.Listener // by upstream index
	transparent net.Listener   // nil unless Config.Transparent
	state       atomic.Pointer[state]
}

// state is what the current configuration says about destinations.
type state struct {
	upstreams []*route                  // by upstream index
	byAddr    map[netip.AddrPort]*route // service address:port and endpoint ip:target port
	egress    meshv1.EgressMode
}

// route is where one destination's traffic goes under the current config.
type route struct {
	service string // name.namespace, for metrics and errors
	known   bool
	port    *meshv1.ServicePort
	peers   []tunnel.Peer
	next    atomic.Uint32

	metrics    *metrics.Metrics
	targetPort []string // the Rampart-Target-Port header value
	// series holds the request series of each peer, by index, and last
	// of requests that reached no peer; each is made on first use.
	series []atomic.Pointer[metrics.Series]
}

// newRoute returns the route of a service port; a nil port is unknown.
func newRoute(m *metrics.Metrics, service string, port *meshv1.ServicePort, peers []tunnel.Peer) *route {
	r := &route{service: service, known: port != nil, port: port, peers: peers, metrics: m}
	if port != nil {
		r.targetPort = []string{strconv.FormatUint(uint64(port.GetTargetPort()), 10)}
		r.series = make([]atomic.Pointer[metrics.Series], len(peers)+1)
	}
	return r
}

// seriesOf returns the request series of the i-th peer, or of no peer
// when i < 0.
func (r *route) seriesOf(i int) *metrics.Series {
	peer := ""
	if i < 0 {
		i = len(r.peers)
	} else {
		peer = r.peers[i].ID.String()
	}
	s := r.series[i].Load()
	if s == nil {
		s = r.metrics.Series(metrics.Outbound, peer, r.service)
		r.series[i].Store(s)
	}
	return s
}

// New binds the app-facing listeners; an address in use is an error now
// rather than later.
func New(cfg Config) (*Outbound, error) {
	if cfg.Dialer == nil || cfg.Metrics == nil {
		return nil, errors.New("outbound: dialer and metrics required")
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.DetectTimeout <= 0 {
		cfg.DetectTimeout = time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	o := &Outbound{cfg: cfg, log: cfg.Logger}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	for _, u := range cfg.Upstreams {
		l, err := net.Listen("tcp", u.Listen)
		if err != nil {
			o.closeListeners()
			return nil, fmt.Errorf("outbound: upstream %s: %w", u, err)
		}
		o.listeners = append(o.listeners, l)
	}
	if cfg.Transparent != "" {
		l, err := net.Listen("tcp", cfg.Transparent)
		if err != nil {
			o.closeListeners()
			return nil, fmt.Errorf("outbound: transparent listener: %w", err)
		}
		o.transparent = l
	}
	o.state.Store(&state{upstreams: make([]*route, len(cfg.Upstreams))})
	return o, nil
}

// Close releases the listeners of an Outbound that will not Run.
func (o *Outbound) Close() { o.closeListeners() }

func (o *Outbound) closeListeners() {
	for _, l := range o.listeners {
		l.Close()
	}
	if o.transparent != nil {
		o.transparent.Close()
	}
}

// Addr returns the bound address of the i-th upstream.
func (o *Outbound) Addr(i int) string { return o.listeners[i].Addr().String() }

// TransparentAddr returns the bound address of the transparent listener,
// or "" without one.
func (o *Outbound) TransparentAddr() string {
	if o.transparent == nil {
		return ""
	}
	return o.transparent.Addr().String()
}

// serviceKey resolves an upstream's service name to name.namespace.
func (o *Outbound) serviceKey(u Upstream) string {
	if strings.Contains(u.Service, ".") {
		return u.Service
	}
	return u.Service + "." + o.cfg.Namespace
}

// Update applies a new configuration. It never fails: an upstream the
// configuration does not describe is refused until one does. Connections
// open stay open: each request and connection looks its route up anew.
func (o *Outbound) Update(pc *meshv1.ProxyConfig) {
	services := make(map[string]*meshv1.Service, len(pc.GetServices()))
	for _, s := range pc.GetServices() {
		services[s.GetName()+"."+s.GetNamespace()] = s
	}
	st := &state{
		upstreams: make([]*route, len(o.cfg.Upstreams)),
		egress:    pc.GetSettings().GetEgress(),
	}
	for i, u := range o.cfg.Upstreams {
		key := o.serviceKey(u)
		st.upstreams[i] = newRoute(o.cfg.Metrics, key, nil, nil)
		if s, ok := services[key]; ok {
			st.upstreams[i] = newRoute(o.cfg.Metrics, key, pickPort(s.GetPorts(), u.Port), peersOf(s.GetEndpoints(), nil))
		}
	}
	if o.transparent != nil {
		st.byAddr = addressTable(o.cfg.Metrics, pc.GetServices())
	}
	o.state.Store(st)
}

// addressTable maps every address a transparent proxy may see as an
// original destination to its route: a service address at a service port
// balances over the service's endpoints; an endpoint's own IP at a target
// port goes to that endpoint alone, as a pod IP does on Kubernetes. The
// first service to claim an address wins; the controller refuses
// duplicates.
func addressTable(m *metrics.Metrics, services []*meshv1.Service) map[netip.AddrPort]*route {
	table := make(map[netip.AddrPort]*route)
	for _, s := range services {
		key := s.GetName() + "." + s.GetNamespace()
		all := peersOf(s.GetEndpoints(), nil)
		for _, p := range s.GetPorts() {
			for _, a := range s.GetAddresses() {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue // validated upstream; never reached
				}
				ap := netip.AddrPortFrom(ip.Unmap(), uint16(p.GetPort()))
				if _, dup := table[ap]; !dup {
					table[ap] = newRoute(m, key, p, all)
				}
			}
			for _, e := range s.GetEndpoints() {
				ip, err := netip.ParseAddr(e.GetIp())
				if err != nil {
					continue // no IP of its own: reached through the service only
				}
				ap := netip.AddrPortFrom(ip.Unmap(), uint16(p.GetTargetPort()))
				if _, dup := table[ap]; !dup {
					table[ap] = newRoute(m, key, p, peersOf([]*meshv1.Endpoint{e}, nil))
				}
			}
		}
	}
	return table
}

func peersOf(eps []*meshv1.Endpoint, out []tunnel.Peer) []tunnel.Peer {
	for _, e := range eps {
		id, err := spiffeid.FromString(e.GetSpiffeId())
		if err != nil {
			continue // validated upstream; never reached
		}
		out = append(out, tunnel.Peer{Address: e.GetAddress(), ID: id})
	}
	return out
}

func pickPort(ports []*meshv1.ServicePort, want string) *meshv1.ServicePort {
	if want == "" {
		if len(ports) == 1 {
			return ports[0]
		}
		return nil
	}
	for _, p := range ports {
		if p.GetName() == want || strconv.FormatUint(uint64(p.GetPort()), 10) == want {
			return p
		}
	}
	return nil
}

// target resolves, at each use, the route of one accepted connection, so
// that a configuration change applies to connections already open.
type target interface {
	route() *route
	// name is what logs call the destination.
	name() string
}

type upstreamTarget struct {
	o *Outbound
	i int
}

func (t upstreamTarget) route() *route { return t.o.state.Load().upstreams[t.i] }
func (t upstreamTarget) name() string  { return t.o.serviceKey(t.o.cfg.Upstreams[t.i]) }

type addrTarget struct {
	o   *Outbound
	dst netip.AddrPort
}

func (t addrTarget) route() *route { return t.o.state.Load().byAddr[t.dst] }
func (t addrTarget) name() string  { return t.dst.String() }

// Run serves every listener until ctx ends, then drains: it stops
// accepting, lets requests and connections in flight finish until the
// drain deadline, then cuts what is left.
func (o *Outbound) Run(ctx context.Context) error {
	httpConns := newChanListener(addrOf(o))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           httpHandler{o},
		Protocols:         &p,
		ConnContext:       connContext,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.log.Handler(), slog.LevelDebug),
	}
	// HTTP/1 connections are served by a lean server, each in the
	// goroutine that classified it; HTTP/2 (h2c) by net/http's.
	h1srv := &h1.Server{
		Handler:           httpHandler{o},
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		Logger:            o.log,
		H2C: func(ctx context.Context, nc net.Conn, br *bufio.Reader) {
			httpConns.push(&targetConn{Conn: &bufferedConn{Conn: nc, r: br}, target: ctx.Value(targetKey{}).(target)})
		},
	}
	// Opaque connections get a context of their own that outlives ctx by
	// the drain deadline.
	tcpCtx, cancelTCP := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelTCP()
	c := &conns{o: o, http: httpConns, h1: h1srv, ctx: tcpCtx}

	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		srv.Serve(httpConns) //nolint:errcheck // always ErrServerClosed after Shutdown
	}()

	g, gctx := errgroup.WithContext(ctx)
	for i, l := range o.listeners {
		g.Go(func() error {
			return c.acceptLoop(gctx, l, func(net.Conn) (target, bool) { return upstreamTarget{o, i}, true })
		})
	}
	if o.transparent != nil {
		g.Go(func() error { return c.acceptLoop(gctx, o.transparent, c.transparentTarget) })
	}
	acceptErr := g.Wait()

	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.DrainTimeout)
	defer cancel()
	// Connections still being classified finish dispatching first, so
	// that none reaches the HTTP server after it shut down.
	c.dispatching.Wait()
	httpConns.Close()
	h1Done := make(chan struct{})
	go func() {
		defer close(h1Done)
		h1srv.Shutdown(drainCtx) //nolint:errcheck // past the deadline it cuts what is left
		c.h1conns.Wait()
	}()
	if err := srv.Shutdown(drainCtx); err != nil {
		srv.Close()
	}
	<-h1Done
	done := make(chan struct{})
	go func() { c.tcp.Wait(); close(done) }()
	select {
	case <-done:
	case <-drainCtx.Done():
		cancelTCP()
		<-done
	}
	<-serveDone
	if ctx.Err() != nil {
		return nil
	}
	return acceptErr
}

func addrOf(o *Outbound) net.Addr {
	if len(o.listeners) > 0 {
		return o.listeners[0].Addr()
	}
	if o.transparent != nil {
		return o.transparent.Addr()
	}
	return &net.TCPAddr{}
}

// conns tracks the connections of one Run.
type conns struct {
	o           *Outbound
	http        *chanListener // to net/http's server (h2c)
	h1          *h1.Server
	ctx         context.Context // of opaque connections
	dispatching sync.WaitGroup  // connections being classified
	tcp         sync.WaitGroup  // opaque connections being carried
	h1conns     sync.WaitGroup  // connections served by h1
}

// acceptLoop accepts on l until ctx ends or accepting fails, and hands
// each connection to dispatch.
func (c *conns) acceptLoop(ctx context.Context, l net.Listener, targetOf func(net.Conn) (target, bool)) error {
	err := accept.Loop(ctx, l, func(conn net.Conn) {
		t, ok := targetOf(conn)
		if !ok {
			return // handled (passed through or refused)
		}
		c.dispatching.Add(1)
		go c.dispatch(conn, t)
	})
	if err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	return nil
}

// dispatch classifies a connection by its route's protocol, detecting it
// when the port says Auto, and hands it to the HTTP server or carries it
// as an opaque stream.
func (c *conns) dispatch(conn net.Conn, t target) {
	o := c.o
	r := t.route()
	if r == nil || !r.known {
		c.dispatching.Done()
		o.refuse(ReasonUnknownService)
		o.log.Warn("refused connection: destination is unknown to the mesh", "destination", t.name())
		conn.Close()
		return
	}
	proto := r.port.GetProtocol()
	h2c := false
	if proto == meshv1.Protocol_PROTOCOL_AUTO {
		p, detected, err := sniff.Detect(conn, o.cfg.DetectTimeout)
		if err != nil {
			c.dispatching.Done()
			conn.Close()
			return
		}
		o.cfg.Metrics.Detected.WithLabelValues(metrics.Outbound, p.String()).Inc()
		conn = detected
		switch p {
		case sniff.HTTP1:
			proto = meshv1.Protocol_PROTOCOL_HTTP
		case sniff.HTTP2:
			proto, h2c = meshv1.Protocol_PROTOCOL_HTTP, true
		default:
			proto = meshv1.Protocol_PROTOCOL_TCP
		}
	}
	switch {
	case proto == meshv1.Protocol_PROTOCOL_TCP:
		c.tcp.Add(1)
		c.dispatching.Done()
		defer c.tcp.Done()
		o.serveTCP(c.ctx, conn, t)
	case h2c:
		c.http.push(&targetConn{Conn: conn, target: t})
		c.dispatching.Done()
	default:
		// HTTP/1, or h2c with prior knowledge, which the server hands to
		// net/http's.
		c.h1conns.Add(1)
		c.dispatching.Done()
		defer c.h1conns.Done()
		c.h1.ServeConn(context.WithValue(context.Background(), targetKey{}, t), conn, nil)
	}
}

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// targetConn carries a connection's target to the HTTP handler.
type targetConn struct {
	net.Conn
	target target
}

type targetKey struct{}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*targetConn); ok {
		return context.WithValue(ctx, targetKey{}, tc.target)
	}
	return ctx
}

func (o *Outbound) refuse(reason string) {
	o.cfg.Metrics.Refusals.WithLabelValues(metrics.Outbound, reason).Inc()
}

// httpHandler serves the app's HTTP requests: each goes to the next
// endpoint of its route.
type httpHandler struct{ o *Outbound }

func (h httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o := h.o
	t, _ := r.Context().Value(targetKey{}).(target)
	var rt *route
	if t != nil {
		rt = t.route()
	}
	switch {
	case r.Method == http.MethodConnect:
		// CONNECT is the tunnel's own stream request: an app that sent one
		// would reach any opaque port of the peer, whatever port it
		// dialled. Opaque traffic goes through a TCP or Auto port instead.
		o.refuse(ReasonConnect)
		http.Error(w, "rampart: CONNECT is not proxied; send opaque traffic to a TCP port", http.StatusMethodNotAllowed)
		return
	case rt == nil || !rt.known:
		name := "unknown"
		if t != nil {
			name = t.name()
		}
		o.refuse(ReasonUnknownService)
		o.cfg.Metrics.Requests.WithLabelValues(metrics.Outbound, "", "", metrics.Code(http.StatusServiceUnavailable)).Inc()
		localError(w, r, http.StatusServiceUnavailable, "rampart: destination "+name+" is unknown to the mesh")
		return
	case len(rt.peers) == 0:
		o.refuse(ReasonNoEndpoints)
		o.cfg.Metrics.Requests.WithLabelValues(metrics.Outbound, "", rt.service, metrics.Code(http.StatusServiceUnavailable)).Inc()
		localError(w, r, http.StatusServiceUnavailable, "rampart: service "+rt.service+" has no endpoints")
		return
	}
	start := time.Now()
	code, peer := o.forward(w, r, rt)
	rt.seriesOf(peer).Observe(code, time.Since(start).Seconds())
}

// forward sends a request to an endpoint of its route, trying the next
// endpoint when a tunnel cannot be established (the request was then
// certainly not sent), and writes the answer. It returns the status code
// to count and the index of the peer that answered or failed last (-1 for
// none).
func (o *Outbound) forward(w http.ResponseWriter, r *http.Request, rt *route) (code, peer int) {
	x, err := forward.NewExchange(w, r)
	if err != nil {
		return o.failed(w, r, rt, err), -1
	}
	defer x.Close()
	out := x.Out
	out.Header[tunnel.HeaderTargetPort] = rt.targetPort
	// The app may not speak for anyone, itself included: the receiving
	// proxy sets the caller's identity.
	delete(out.Header, tunnel.HeaderClientID)
	delete(out.Header, tunnel.HeaderAppProtocol)
	tunnel.StripLookalikes(out.Header)
	if r.ProtoMajor == 2 && rt.port.GetProtocol() == meshv1.Protocol_PROTOCOL_AUTO {
		// Detected HTTP/2: the app's server speaks it too.
		out.Header[tunnel.HeaderAppProtocol] = appProtocolH2C
	}
	var res *http.Response
	peer = -1
	n := uint32(len(rt.peers))
	first := rt.next.Add(1)
	for k := range min(n, maxAttempts) {
		peer = int((first + k) % n)
		res, err = o.cfg.Dialer.RoundTrip(rt.peers[peer], out)
		if err == nil || !retriable(r.Context(), err) {
			break
		}
	}
	x.RoundTripDone()
	if err != nil {
		return o.failed(w, out, rt, err), peer
	}
	if err := x.WriteResponse(res); err != nil {
		// The body broke off: abort, so that the client sees the
		// response incomplete.
		panic(http.ErrAbortHandler)
	}
	return res.StatusCode, peer
}

var appProtocolH2C = []string{tunnel.AppProtocolH2C}

// failed answers a request that could not be sent, and returns the status
// code to count.
func (o *Outbound) failed(w http.ResponseWriter, r *http.Request, rt *route, err error) int {
	if errors.Is(err, context.Canceled) {
		return statusClientClosed
	}
	o.cfg.Metrics.Refusals.WithLabelValues(metrics.Outbound, ReasonPeerFailed).Inc()
	o.log.Warn("upstream request failed", "service", rt.service, "err", err)
	localError(w, r, http.StatusBadGateway, "rampart: no endpoint of the service could be reached")
	return http.StatusBadGateway
}

// candidates yields up to maxAttempts distinct endpoints, in round-robin
// order.
func (r *route) candidates() iter.Seq[tunnel.Peer] {
	return func(yield func(tunnel.Peer) bool) {
		n := uint32(len(r.peers))
		start := r.next.Add(1)
		for k := uint32(0); k < min(n, maxAttempts); k++ {
			if !yield(r.peers[(start+k)%n]) {
				return
			}
		}
	}
}

func retriable(ctx context.Context, err error) bool {
	var de *tunnel.DialError
	return ctx.Err() == nil && errors.As(err, &de)
}

func (o *Outbound) serveTCP(ctx context.Context, conn net.Conn, t target) {
	defer conn.Close()
	r := t.route()
	if r == nil || !r.known {
		o.refuse(ReasonUnknownService)
		o.log.Warn("refused connection: destination is unknown to the mesh", "destination", t.name())
		return
	}
	if len(r.peers) == 0 {
		o.refuse(ReasonNoEndpoints)
		o.log.Warn("refused connection: service has no endpoints", "service", r.service)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	up := newCountingReader(conn)
	var (
		body io.ReadCloser
		peer tunnel.Peer
		err  error
	)
	for p := range r.candidates() {
		peer = p
		body, err = o.cfg.Dialer.Connect(ctx, p, int(r.port.GetTargetPort()), up)
		if err == nil || !retriable(ctx, err) {
			break
		}
	}
	if err != nil {
		var re *tunnel.RefusedError
		switch {
		case errors.As(err, &re) && re.Status == http.StatusForbidden:
			o.refuse(ReasonPeerDenied)
			o.log.Info("connection denied by the destination's policy", "service", r.service, "peer", peer.String(), "decision", re.Decision)
		case errors.As(err, &re) && re.Status == http.StatusTooManyRequests:
			o.refuse(ReasonPeerRateLimited)
			o.log.Info("connection refused by the destination's rate limit", "service", r.service, "peer", peer.String(), "decision", re.Decision)
		default:
			o.refuse(ReasonPeerFailed)
			o.log.Warn("tunnel stream failed", "service", r.service, "peer", peer.String(), "err", err)
		}
		return
	}
	defer body.Close()
	peerID := peer.ID.String()
	o.cfg.Metrics.TCPConnections.WithLabelValues(metrics.Outbound, peerID, r.service).Inc()
	received, _ := io.Copy(conn, body)
	closeWrite(conn)
	// Wait for the app to finish sending (or the stream to be cut).
	select {
	case <-up.done:
	case <-ctx.Done():
	}
	o.cfg.Metrics.TCPBytes.WithLabelValues(metrics.Outbound, peerID, r.service, "sent").Add(float64(up.n.Load()))
	o.cfg.Metrics.TCPBytes.WithLabelValues(metrics.Outbound, peerID, r.service, "received").Add(float64(received))
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// countingReader counts bytes read and signals when reading ended.
type countingReader struct {
	r    io.Reader
	n    atomic.Int64
	once sync.Once
	done chan struct{}
}

func newCountingReader(r io.Reader) *countingReader {
	return &countingReader{r: r, done: make(chan struct{})}
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if err != nil {
		c.once.Do(func() { close(c.done) })
	}
	return n, err
}

// chanListener hands connections accepted elsewhere to an http.Server.
type chanListener struct {
	addr      net.Addr
	ch        chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// localError answers a request the proxy could not send. A gRPC caller gets
// a gRPC status (UNAVAILABLE) in a trailers-only response, which its client
// library understands; anyone else gets the HTTP status and a text body.
func localError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", "14") // UNAVAILABLE
		h.Set("Grpc-Message", url.PathEscape(msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Error(w, msg, code)
}
