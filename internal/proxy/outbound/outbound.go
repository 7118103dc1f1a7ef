// Package outbound serves the app-facing side of the proxy: local listeners
// that the app calls in plain text, one per upstream service. Each
// connection or request is sent to an endpoint of the service through the
// mTLS tunnel, which verifies that the endpoint proves the identity
// discovery promised.
//
// HTTP/1.1 and HTTP/2 (h2c, gRPC) are proxied request by request, each
// request balanced on its own; opaque TCP is carried as one tunnel stream
// per connection. It must not depend on Kubernetes packages.
package outbound

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Refusal reasons counted in rampart_proxy_refusals_total.
const (
	ReasonUnknownService = "unknown_service"
	ReasonNoEndpoints    = "no_endpoints"
	ReasonPeerFailed     = "peer_unavailable"
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
	Upstreams []Upstream
	// Namespace is the proxy's own namespace, for upstreams without one.
	Namespace string
	Dialer    *tunnel.Dialer   // required
	Metrics   *metrics.Metrics // required
	Logger    *slog.Logger     // nil discards
	// DrainTimeout bounds how long Run waits for requests and connections
	// in flight after its context ends; default 10s.
	DrainTimeout time.Duration
}

// Outbound owns the app-facing listeners.
type Outbound struct {
	cfg       Config
	log       *slog.Logger
	listeners []net.Listener
	routes    atomic.Pointer[[]*route]
}

// route is where one upstream's traffic goes under the current config.
type route struct {
	service string // name.namespace, for metrics and errors
	known   bool
	port    *meshv1.ServicePort
	peers   []tunnel.Peer
	next    atomic.Uint32
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
	empty := make([]*route, len(cfg.Upstreams))
	o.routes.Store(&empty)
	return o, nil
}

// Close releases the listeners of an Outbound that will not Run.
func (o *Outbound) Close() { o.closeListeners() }

func (o *Outbound) closeListeners() {
	for _, l := range o.listeners {
		l.Close()
	}
}

// Addr returns the bound address of the i-th upstream.
func (o *Outbound) Addr(i int) string { return o.listeners[i].Addr().String() }

// serviceKey resolves an upstream's service name to name.namespace.
func (o *Outbound) serviceKey(u Upstream) string {
	if strings.Contains(u.Service, ".") {
		return u.Service
	}
	return u.Service + "." + o.cfg.Namespace
}

// Update applies a new configuration. It never fails: an upstream the
// configuration does not describe is refused until one does.
func (o *Outbound) Update(pc *meshv1.ProxyConfig) {
	services := make(map[string]*meshv1.Service, len(pc.GetServices()))
	for _, s := range pc.GetServices() {
		services[s.GetName()+"."+s.GetNamespace()] = s
	}
	routes := make([]*route, len(o.cfg.Upstreams))
	for i, u := range o.cfg.Upstreams {
		key := o.serviceKey(u)
		r := &route{service: key}
		routes[i] = r
		s, ok := services[key]
		if !ok {
			continue
		}
		r.port = pickPort(s.GetPorts(), u.Port)
		r.known = r.port != nil
		for _, e := range s.GetEndpoints() {
			id, err := spiffeid.FromString(e.GetSpiffeId())
			if err != nil {
				continue // validated upstream; never reached
			}
			r.peers = append(r.peers, tunnel.Peer{Address: e.GetAddress(), ID: id})
		}
	}
	o.routes.Store(&routes)
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

func (o *Outbound) route(i int) *route { return (*o.routes.Load())[i] }

// Run serves every upstream until ctx ends, then drains.
func (o *Outbound) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for i := range o.cfg.Upstreams {
		g.Go(func() error { return o.serve(gctx, i) })
	}
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (o *Outbound) serve(ctx context.Context, i int) error {
	l := o.listeners[i]
	httpConns := newChanListener(l.Addr())
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           o.httpHandler(i),
		Protocols:         &p,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.log.Handler(), slog.LevelDebug),
	}
	// Opaque connections get a context of their own that outlives ctx by
	// the drain deadline.
	tcpCtx, cancelTCP := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelTCP()
	var tcpConns sync.WaitGroup

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(httpConns) //nolint:errcheck // always ErrServerClosed after Shutdown
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		l.Close()
	}()

	var acceptErr error
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("outbound: accept on %s: %w", l.Addr(), err)
			}
			break
		}
		r := o.route(i)
		switch {
		case r == nil || !r.known:
			o.refuse(ReasonUnknownService)
			o.log.Warn("refused connection: upstream service is unknown to the mesh", "upstream", o.cfg.Upstreams[i].String())
			conn.Close()
		case r.port.GetProtocol() == meshv1.Protocol_PROTOCOL_TCP:
			tcpConns.Add(1)
			go func() {
				defer tcpConns.Done()
				o.serveTCP(tcpCtx, conn, r)
			}()
		default:
			httpConns.push(conn)
		}
	}

	// Drain: stop accepting (done), let requests and streams in flight
	// finish until the deadline, then cut what is left.
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.DrainTimeout)
	defer cancel()
	httpConns.Close()
	if err := srv.Shutdown(drainCtx); err != nil {
		srv.Close()
	}
	done := make(chan struct{})
	go func() { tcpConns.Wait(); close(done) }()
	select {
	case <-done:
	case <-drainCtx.Done():
		cancelTCP()
		<-done
	}
	wg.Wait()
	return acceptErr
}

func (o *Outbound) refuse(reason string) {
	o.cfg.Metrics.Refusals.WithLabelValues(metrics.Outbound, reason).Inc()
}

type stateKey struct{}

// reqState carries, from the handler to RoundTrip and back, the route of a
// request and the peer that served it.
type reqState struct {
	route  *route
	peer   tunnel.Peer
	failed int // status the proxy answered itself, when it did
}

func (o *Outbound) httpHandler(i int) http.Handler {
	rp := &httputil.ReverseProxy{
		Transport: o,
		Rewrite: func(pr *httputil.ProxyRequest) {
			st := pr.In.Context().Value(stateKey{}).(*reqState)
			pr.Out.Header.Set(tunnel.HeaderTargetPort, strconv.FormatUint(uint64(st.route.port.GetTargetPort()), 10))
			// The app may not speak for anyone, itself included: the
			// receiving proxy sets the caller's identity.
			pr.Out.Header.Del(tunnel.HeaderClientID)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				if st, ok := r.Context().Value(stateKey{}).(*reqState); ok {
					st.failed = statusClientClosed
				}
				return
			}
			o.cfg.Metrics.Refusals.WithLabelValues(metrics.Outbound, ReasonPeerFailed).Inc()
			o.log.Warn("upstream request failed", "upstream", o.cfg.Upstreams[i].Service, "err", err)
			if st, ok := r.Context().Value(stateKey{}).(*reqState); ok {
				st.failed = http.StatusBadGateway
			}
			localError(w, r, http.StatusBadGateway, "rampart: no endpoint of the service could be reached")
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := o.route(i)
		switch {
		case rt == nil || !rt.known:
			o.refuse(ReasonUnknownService)
			key := o.serviceKey(o.cfg.Upstreams[i])
			o.cfg.Metrics.Requests.WithLabelValues(metrics.Outbound, "", key, metrics.Code(http.StatusServiceUnavailable)).Inc()
			localError(w, r, http.StatusServiceUnavailable, "rampart: service "+key+" is unknown to the mesh")
			return
		case len(rt.peers) == 0:
			o.refuse(ReasonNoEndpoints)
			o.cfg.Metrics.Requests.WithLabelValues(metrics.Outbound, "", rt.service, metrics.Code(http.StatusServiceUnavailable)).Inc()
			localError(w, r, http.StatusServiceUnavailable, "rampart: service "+rt.service+" has no endpoints")
			return
		}
		start := time.Now()
		st := &reqState{route: rt}
		sw := &metrics.StatusWriter{ResponseWriter: w}
		rp.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
		peer, code := st.peer.ID.String(), sw.Code()
		if st.failed != 0 {
			code = st.failed
		}
		o.cfg.Metrics.Requests.WithLabelValues(metrics.Outbound, peer, rt.service, metrics.Code(code)).Inc()
		o.cfg.Metrics.RequestDuration.WithLabelValues(metrics.Outbound, peer, rt.service).Observe(time.Since(start).Seconds())
	})
}

// RoundTrip sends a request to an endpoint of its route, trying the next
// endpoint when a tunnel cannot be established (the request was then
// certainly not sent).
func (o *Outbound) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(stateKey{}).(*reqState)
	var err error
	for p := range st.route.candidates() {
		st.peer = p
		var resp *http.Response
		resp, err = o.cfg.Dialer.RoundTrip(p, req)
		if err == nil || !retriable(req.Context(), err) {
			return resp, err
		}
	}
	return nil, err
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

func (o *Outbound) serveTCP(ctx context.Context, conn net.Conn, r *route) {
	defer conn.Close()
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
		o.refuse(ReasonPeerFailed)
		o.log.Warn("tunnel stream failed", "service", r.service, "peer", peer.String(), "err", err)
		return
	}
	defer body.Close()
	peerID := peer.ID.String()
	o.cfg.Metrics.TCPConnections.WithLabelValues(metrics.Outbound, peerID, r.service).Inc()
	received, _ := io.Copy(conn, body)
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	// Wait for the app to finish sending (or the stream to be cut).
	select {
	case <-up.done:
	case <-ctx.Done():
	}
	o.cfg.Metrics.TCPBytes.WithLabelValues(metrics.Outbound, peerID, r.service, "sent").Add(float64(up.n.Load()))
	o.cfg.Metrics.TCPBytes.WithLabelValues(metrics.Outbound, peerID, r.service, "received").Add(float64(received))
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
