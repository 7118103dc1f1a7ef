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
// them on with package forward.
//
// Each destination (a service port, or one endpoint reached by its own
// address) keeps a balancer (package balance: peak-EWMA power of two
// choices, outlier ejection) across configuration updates, and each
// service a retry budget; failed attempts are retried on another endpoint
// as package retry's Policy allows. A refusal by the peer's policy or rate
// limit is an answer, never retried and never held against the endpoint.
//
// A service port that HTTPRoutes apply to (package route's tables,
// compiled with each configuration) routes every HTTP request the app
// sends to it: the request's rule picks a backend service port by weight,
// and the request is balanced over the backend's endpoints, by the
// balancer that direct traffic to that service port uses too.
//
// A service's TrafficPolicy (meshv1.TrafficPolicy, checked by
// ValidateTraffic) sets its balancer mode and outlier settings, its retry
// policy and budget, and its idle timeout: an opaque stream or an HTTP
// request with no byte either way for that long is cut (1 hour by
// default; none for gRPC requests unless the policy sets one). See
// docs/traffic.md. It must not depend on Kubernetes packages.
package outbound

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	"github.com/rampart-mesh/rampart/internal/proxy/accesslog"
	"github.com/rampart-mesh/rampart/internal/proxy/balance"
	"github.com/rampart-mesh/rampart/internal/proxy/balance/outlier"
	"github.com/rampart-mesh/rampart/internal/proxy/balance/retry"
	"github.com/rampart-mesh/rampart/internal/proxy/egress"
	"github.com/rampart-mesh/rampart/internal/proxy/forward"
	"github.com/rampart-mesh/rampart/internal/proxy/h1"
	"github.com/rampart-mesh/rampart/internal/proxy/logsample"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	rtable "github.com/rampart-mesh/rampart/internal/proxy/route"
	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
	"github.com/rampart-mesh/rampart/internal/proxy/tap"
	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
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
	// A request to a routed service port that no rule matches (404), or
	// whose rule has no backend to send it to (500).
	ReasonNoRoute        = "no_route"
	ReasonInvalidBackend = "invalid_backend"
)

// statusClientClosed is the code recorded for a request its caller
// abandoned before the answer (nginx's 499).
const statusClientClosed = 499

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
	// EgressResolver resolves the host names that egress rules admit, to
	// check that a connection goes to an address of the name it sends;
	// nil is the system's resolver. See egress.go.
	EgressResolver egress.Resolver
	// Balance configures the balancer of each destination; the zero value
	// is peak-EWMA with outlier ejection, at package balance's and
	// package outlier's defaults.
	Balance balance.Config
	// Retry says which failed attempts are sent again; the zero value is
	// package retry's defaults (3 attempts; connection failures, and
	// 502/503/504 or broken streams of idempotent requests; gRPC
	// UNAVAILABLE).
	Retry retry.Policy
	// Budget configures each service's retry budget; the zero value is
	// package retry's defaults (20% of requests plus 10/s).
	Budget retry.BudgetConfig
	// IdleTimeout closes an opaque TCP stream with no bytes either way
	// for this long, and fails an HTTP request (not a gRPC one) whose
	// response and request sent nothing for this long; zero means
	// DefaultIdleTimeout. A service's TrafficPolicy overrides it, for
	// gRPC requests too.
	IdleTimeout time.Duration
	// Tap receives the heads of the app's requests while a tap (rampart
	// tap) is active; nil taps nothing.
	Tap *tap.Tapper
	// Tracer gives each request sent to a peer a CLIENT span; nil traces
	// nothing.
	Tracer *tracing.Tracer
	// AccessLog gets a line per request sent to a peer; nil logs nothing.
	AccessLog *accesslog.Logger
	// Identity is the workload's SPIFFE ID, the source in access log
	// lines.
	Identity string
}

// DefaultIdleTimeout is the idle timeout of TCP streams and HTTP requests
// when neither Config nor the service's TrafficPolicy sets one: an hour,
// as Linkerd and Envoy close idle TCP streams. gRPC requests have none
// unless the policy sets one, so that a long-lived stream that is quiet
// for a while (a watch) is not cut.
const DefaultIdleTimeout = time.Hour

// Validate reports a setting out of range.
func (c *Config) Validate() error {
	if c.Dialer == nil || c.Metrics == nil {
		return errors.New("outbound: dialer and metrics required")
	}
	if err := c.Balance.Validate(); err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	if err := c.Retry.Validate(); err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	if err := c.Budget.Validate(); err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	if c.IdleTimeout < 0 {
		return errors.New("outbound: negative idle timeout")
	}
	return nil
}

// Outbound owns the app-facing listeners.
type Outbound struct {
	cfg         Config
	log         *slog.Logger
	listeners   []net.Listener // by upstream index
	transparent net.Listener   // nil unless Config.Transparent
	state       atomic.Pointer[state]
	egress      *egressShared // kept across configurations

	mu       sync.Mutex // serializes Update; guards the maps below
	dests    map[destKey]*dest
	services map[string]*service
	ruleLogs map[ruleKey]*logGate
	// workloads names the endpoints of the configuration in force, for
	// metrics.
	workloads map[tunnel.Peer]string
}

// state is what the current configuration says about destinations.
type state struct {
	upstreams []*route                  // by upstream index
	byAddr    map[netip.AddrPort]*route // service address:port and endpoint ip:target port
	egress    meshv1.EgressMode
	// allowed is the egress allow-list, compiled; nil admits nothing.
	allowed *egress.Policy
}

// route is where one destination's traffic goes under the current config.
type route struct {
	service string // name.namespace, for metrics and errors
	known   bool
	port    *meshv1.ServicePort
	dest    *dest // nil unless known
	n       int   // endpoints under this configuration

	// table routes the HTTP requests of a service port that routes apply
	// to (nil for none: they go to dest); routing resolves its backends,
	// in the same configuration.
	table   *rtable.Table
	routing *routing

	// traffic is the service's settings under this configuration, and
	// budget its retry budget.
	traffic *traffic
	budget  *retry.Budget

	metrics    *metrics.Metrics
	targetPort []string // the Rampart-Target-Port header value
	// noPeer holds the request series of requests that reached no peer,
	// made on first use.
	noPeer atomic.Pointer[metrics.EdgeSeries]
}

// unknownRoute is the route of a destination the configuration does not
// describe.
func unknownRoute(m *metrics.Metrics, service string) *route {
	return &route{service: service, metrics: m}
}

// seriesOf returns the request series of an endpoint, or of no peer when
// ep is nil, under the HTTPRoute of rule (nil: none).
func (r *route) seriesOf(ep *endpoint, rule *rtable.Rule) *metrics.Series {
	var es *metrics.EdgeSeries
	if ep != nil {
		es = ep.seriesOf(r.metrics)
	} else if es = r.noPeer.Load(); es == nil {
		es = r.metrics.EdgeSeries(metrics.Edge{Direction: metrics.Outbound, Service: r.service, MTLS: true})
		r.noPeer.Store(es)
	}
	if rule == nil {
		return es.Route("", "")
	}
	return es.Route(rule.Namespace, rule.Route)
}

// routing is what the routed destinations of one configuration share.
type routing struct {
	// backends are the routes of the backend service ports that rules
	// name, by service index and port.
	backends map[backendKey]*route
	// logs bound the log of requests a rule could not send to about a
	// line a second per rule; kept across configurations.
	logs map[ruleKey]*logGate
}

// backendKey names a backend service port: the service's index in the
// configuration (route.Backend.ServiceIndex) and its port.
type backendKey struct {
	service int
	port    uint32
}

// logGate lets about one event a second through, and counts the others.
type logGate struct {
	last       atomic.Int64 // Unix nanoseconds of the last event let through
	suppressed atomic.Int64
}

// allow reports whether to log the event that happens at now, and how many
// were held back since the last one let through.
func (g *logGate) allow(now time.Time) (ok bool, suppressed int64) {
	n, last := now.UnixNano(), g.last.Load()
	if n-last < int64(time.Second) || !g.last.CompareAndSwap(last, n) {
		g.suppressed.Add(1)
		return false, 0
	}
	return true, g.suppressed.Swap(0)
}

// ruleKey names a rule of a route across configurations.
type ruleKey struct {
	namespace, route string
	index            int
}

// service is what the destinations of one service share across
// configurations: the retry budget.
type service struct {
	name string
	// budget and the configuration it was made with; replaced when the
	// service's TrafficPolicy changes it. Guarded by Outbound.mu: requests
	// use the budget their route was built with.
	budget    *retry.Budget
	budgetCfg retry.BudgetConfig
	ejections *metrics.Child
	// streamLog samples the log of the service's refused streams.
	streamLog logsample.Bucket
}

// destKey names a destination across configurations.
type destKey struct {
	service string
	port    uint32 // the target port
	// endpoint is the address of the only endpoint of a destination
	// reached by the endpoint's own IP; "" for a service's.
	endpoint string
}

// dest is one destination's balancer, kept across configurations so that
// endpoints that stay keep their latency estimates and standing.
type dest struct {
	svc *service
	bal *balance.Balancer[*endpoint]
	cfg balance.Config            // bal's; a change of mode or outlier settings makes a new dest
	eps map[tunnel.Peer]*endpoint // the current set; guarded by Outbound.mu
}

// endpoint is one peer of a destination.
type endpoint struct {
	peer     tunnel.Peer
	service  string
	workload string                             // for metrics; "" when unknown
	series   atomic.Pointer[metrics.EdgeSeries] // made on first use
}

// peerID is the SPIFFE ID the endpoint proves, "" for none (nil: the
// request reached no endpoint).
func (e *endpoint) peerID() string {
	if e == nil || e.peer.ID.IsZero() {
		return ""
	}
	return e.peer.ID.String()
}

func (e *endpoint) seriesOf(m *metrics.Metrics) *metrics.EdgeSeries {
	s := e.series.Load()
	if s == nil {
		s = m.EdgeSeries(e.edge())
		e.series.Store(s)
	}
	return s
}

// edge is the endpoint's edge in metrics.
func (e *endpoint) edge() metrics.Edge {
	return metrics.Edge{Direction: metrics.Outbound, PeerWorkload: e.workload, PeerIdentity: e.peer.ID.String(), Service: e.service, MTLS: true}
}

// update makes peers the destination's endpoints; workloads names them.
func (d *dest) update(peers []tunnel.Peer, workloads map[tunnel.Peer]string) {
	eps := make(map[tunnel.Peer]*endpoint, len(peers))
	keys := make([]*endpoint, 0, len(peers))
	for _, p := range peers {
		if _, dup := eps[p]; dup {
			continue
		}
		e := d.eps[p]
		if e == nil {
			e = &endpoint{peer: p, service: d.svc.name, workload: workloads[p]}
		}
		eps[p] = e
		keys = append(keys, e)
	}
	d.eps = eps
	d.bal.Update(keys)
}

// New binds the app-facing listeners; an address in use is an error now
// rather than later.
func New(cfg Config) (*Outbound, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
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
	o := &Outbound{cfg: cfg, log: cfg.Logger, dests: make(map[destKey]*dest), services: make(map[string]*service),
		ruleLogs: make(map[ruleKey]*logGate)}
	o.egress = newEgressShared(cfg)
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
	st := &state{upstreams: make([]*route, len(cfg.Upstreams))}
	for i, u := range cfg.Upstreams {
		st.upstreams[i] = unknownRoute(cfg.Metrics, o.serviceKey(u))
	}
	o.state.Store(st)
	cfg.Metrics.SetEjectedSource(o.ejected)
	return o, nil
}

// ejected yields how many endpoints of each service are ejected now.
func (o *Outbound) ejected(yield func(service string, n int) bool) {
	o.mu.Lock()
	counts := make(map[string]int, len(o.services))
	for svc := range o.services {
		counts[svc] = 0
	}
	for _, d := range o.dests {
		for _, st := range d.bal.Endpoints() {
			if !st.EjectedUntil.IsZero() {
				counts[d.svc.name]++
			}
		}
	}
	o.mu.Unlock()
	for svc, n := range counts {
		if !yield(svc, n) {
			return
		}
	}
}

// Endpoints returns the state of the endpoints of every destination, for
// display: by "service:port", or "service:port@endpoint" for an endpoint
// reached by its own address.
func (o *Outbound) Endpoints() map[string][]balance.Status[tunnel.Peer] {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string][]balance.Status[tunnel.Peer], len(o.dests))
	for k, d := range o.dests {
		name := k.service + ":" + strconv.FormatUint(uint64(k.port), 10)
		if k.endpoint != "" {
			name += "@" + k.endpoint
		}
		for _, st := range d.bal.Endpoints() {
			out[name] = append(out[name], balance.Status[tunnel.Peer]{
				Endpoint: st.Endpoint.peer, InFlight: st.InFlight, Latency: st.Latency,
				Weight: st.Weight, EjectedUntil: st.EjectedUntil,
			})
		}
	}
	return out
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

// Update applies a new configuration, its routes compiled with
// route.Compile. A configuration whose routes do not compile is refused as
// a whole (the error wraps route.ErrInvalid) and the last one stays in
// force; see UpdateCompiled.
func (o *Outbound) Update(pc *meshv1.ProxyConfig) error {
	if err := ValidateTraffic(pc.GetServices()); err != nil {
		return err
	}
	ts, err := rtable.Compile(pc.GetServices())
	if err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	o.UpdateCompiled(pc, ts)
	return nil
}

// UpdateCompiled applies a new configuration whose routes the caller
// compiled: ts is route.Compile(pc.GetServices()), nil for no routes, and
// whose traffic policies it checked with ValidateTraffic (a policy that
// does not pass gets the defaults, and is logged). It never fails: an
// upstream the configuration does not describe is refused until one does. Connections open stay open: each request and connection
// looks its route up anew, and the new routes, weights included, apply
// from the next request on, while requests in flight finish where they
// were sent. Destinations that stay keep their balancers, and endpoints
// that stay their estimates and standing.
func (o *Outbound) UpdateCompiled(pc *meshv1.ProxyConfig, ts *rtable.Tables) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.workloads = workloadsOf(pc)
	services := make(map[string]int, len(pc.GetServices()))
	for i, s := range pc.GetServices() {
		key := s.GetName() + "." + s.GetNamespace()
		if _, dup := services[key]; !dup {
			services[key] = i
		}
	}
	st := &state{
		upstreams: make([]*route, len(o.cfg.Upstreams)),
		egress:    pc.GetSettings().GetEgress(),
		allowed:   compileEgress(pc),
	}
	u := updater{
		o: o, used: make(map[destKey]bool), usedSvc: make(map[string]bool),
		services: pc.GetServices(), index: services, tables: ts,
		traffic: make(map[string]*traffic),
	}
	for i, up := range o.cfg.Upstreams {
		key := o.serviceKey(up)
		st.upstreams[i] = unknownRoute(o.cfg.Metrics, key)
		if si, ok := services[key]; ok {
			s := pc.GetServices()[si]
			if p := pickPort(s.GetPorts(), up.Port); p != nil {
				st.upstreams[i] = u.route(key, p, "", peersOf(s.GetEndpoints(), nil))
				u.attachTable(st.upstreams[i], si)
			}
		}
	}
	if o.transparent != nil {
		st.byAddr = u.addressTable(pc.GetServices())
	}
	for k := range o.dests {
		if !u.used[k] {
			delete(o.dests, k)
		}
	}
	for k := range o.services {
		if !u.usedSvc[k] {
			delete(o.services, k)
		}
	}
	if u.routing != nil {
		o.ruleLogs = u.routing.logs
	} else {
		clear(o.ruleLogs)
	}
	o.state.Store(st)
}

// updater builds the routes of one configuration; it runs under o.mu.
type updater struct {
	o       *Outbound
	used    map[destKey]bool
	usedSvc map[string]bool

	services []*meshv1.Service // the configuration's
	index    map[string]int    // services by name.namespace
	tables   *rtable.Tables
	traffic  map[string]*traffic // by name.namespace, made on first use
	// routing is made when the first destination gets a table; resolved
	// says which services' backends it holds.
	routing  *routing
	resolved map[int]bool
}

// attachTable makes r, the route of a port of the service at index si,
// route its HTTP requests when routes apply to that port. Opaque TCP
// never is: a TCP port keeps no table, and an Auto port's opaque
// connections still go to the service's own endpoints.
func (u *updater) attachTable(r *route, si int) {
	if r.port.GetProtocol() == meshv1.Protocol_PROTOCOL_TCP {
		return
	}
	tbl := u.tables.Table(si, r.port.GetPort())
	if tbl == nil {
		return
	}
	if u.routing == nil {
		u.routing = &routing{backends: make(map[backendKey]*route), logs: make(map[ruleKey]*logGate)}
		u.resolved = make(map[int]bool)
	}
	r.table, r.routing = tbl, u.routing
	if u.resolved[si] {
		return
	}
	u.resolved[si] = true
	// The backends of every rule of the service's routes, resolved as
	// route.Compile resolves them; an invalid backend (missing, no such
	// port, TCP) is answered 500 before it is looked up here.
	for _, rt := range u.services[si].GetRoutes() {
		for i, rule := range rt.GetRules() {
			k := ruleKey{namespace: rt.GetNamespace(), route: rt.GetName(), index: i}
			if u.routing.logs[k] == nil {
				b := u.o.ruleLogs[k]
				if b == nil {
					b = new(logGate)
				}
				u.routing.logs[k] = b
			}
			for _, be := range rule.GetBackends() {
				name := be.GetService() + "." + be.GetNamespace()
				bi, ok := u.index[name]
				if !ok {
					continue
				}
				svc := u.services[bi]
				for _, p := range svc.GetPorts() {
					if p.GetPort() != be.GetPort() || p.GetProtocol() == meshv1.Protocol_PROTOCOL_TCP {
						continue
					}
					bk := backendKey{service: bi, port: p.GetPort()}
					if u.routing.backends[bk] == nil {
						u.routing.backends[bk] = u.route(name, p, "", peersOf(svc.GetEndpoints(), nil))
					}
					break
				}
			}
		}
	}
}

// route returns the route of a known service port to peers, with the
// destination's balancer, made now or kept from earlier configurations.
func (u *updater) route(svc string, port *meshv1.ServicePort, only string, peers []tunnel.Peer) *route {
	o := u.o
	tr := u.trafficOf(svc)
	sv := o.services[svc]
	if sv == nil {
		// Checked by trafficOf: the budget cannot fail.
		b, _ := retry.NewBudget(tr.budget)
		sv = &service{name: svc, budget: b, budgetCfg: tr.budget, ejections: metrics.NewChild(o.cfg.Metrics.Ejections, svc)}
		o.services[svc] = sv
	} else if !u.usedSvc[svc] && !sameBudget(sv.budgetCfg, tr.budget) {
		// The policy changed the budget: start a new one. Requests in
		// flight keep drawing on the old.
		sv.budget, _ = retry.NewBudget(tr.budget)
		sv.budgetCfg = tr.budget
	}
	u.usedSvc[svc] = true
	key := destKey{service: svc, port: port.GetTargetPort(), endpoint: only}
	d := o.dests[key]
	if d == nil || !sameBalance(d.cfg, tr.balance) {
		// New, or the policy changed the balancer's mode or outlier
		// settings: a new balancer, whose endpoints start afresh.
		// Requests in flight finish on the old one.
		bal, _ := balance.New[*endpoint](tr.balance) // checked by trafficOf
		d = &dest{svc: sv, bal: bal, cfg: tr.balance}
		o.dests[key] = d
	}
	if !u.used[key] {
		u.used[key] = true
		d.update(peers, u.o.workloads)
	}
	r := &route{
		service: svc, known: true, port: port, dest: d, n: len(peers), metrics: o.cfg.Metrics,
		traffic: tr, budget: sv.budget,
		targetPort: []string{strconv.FormatUint(uint64(port.GetTargetPort()), 10)},
	}
	return r
}

// trafficOf returns the settings of the service svc under this
// configuration.
func (u *updater) trafficOf(svc string) *traffic {
	if t := u.traffic[svc]; t != nil {
		return t
	}
	var tp *meshv1.TrafficPolicy
	if i, ok := u.index[svc]; ok {
		tp = u.services[i].GetTraffic()
	}
	t, err := trafficOf(&u.o.cfg, tp)
	if err != nil {
		// The caller skipped ValidateTraffic: the defaults, which New
		// checked.
		u.o.log.Warn("traffic policy ignored: it does not validate; the defaults apply", "service", svc, "err", err)
		t, _ = trafficOf(&u.o.cfg, nil)
	}
	u.traffic[svc] = t
	return t
}

// addressTable maps every address a transparent proxy may see as an
// original destination to its route: a service address at a service port
// balances over the service's endpoints; an endpoint's own IP at a target
// port goes to that endpoint alone, as a pod IP does on Kubernetes. The
// first service to claim an address wins; the controller refuses
// duplicates.
func (u *updater) addressTable(services []*meshv1.Service) map[netip.AddrPort]*route {
	table := make(map[netip.AddrPort]*route)
	for si, s := range services {
		key := s.GetName() + "." + s.GetNamespace()
		all := peersOf(s.GetEndpoints(), nil)
		for _, p := range s.GetPorts() {
			var svcRoute *route
			for _, a := range s.GetAddresses() {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue // validated upstream; never reached
				}
				ap := netip.AddrPortFrom(ip.Unmap(), uint16(p.GetPort()))
				if _, dup := table[ap]; !dup {
					if svcRoute == nil {
						svcRoute = u.route(key, p, "", all)
						u.attachTable(svcRoute, si)
					}
					table[ap] = svcRoute
				}
			}
			for _, e := range s.GetEndpoints() {
				ip, err := netip.ParseAddr(e.GetIp())
				if err != nil {
					continue // no IP of its own: reached through the service only
				}
				ap := netip.AddrPortFrom(ip.Unmap(), uint16(p.GetTargetPort()))
				if _, dup := table[ap]; !dup {
					table[ap] = u.route(key, p, e.GetAddress(), peersOf([]*meshv1.Endpoint{e}, nil))
				}
			}
		}
	}
	return table
}

// workloadsOf names the workload of every endpoint of pc, for metrics.
func workloadsOf(pc *meshv1.ProxyConfig) map[tunnel.Peer]string {
	names := make(map[tunnel.Peer]string)
	for _, s := range pc.GetServices() {
		for _, e := range s.GetEndpoints() {
			if id, err := spiffeid.FromString(e.GetSpiffeId()); err == nil && e.GetWorkload() != "" {
				names[tunnel.Peer{Address: e.GetAddress(), ID: id}] = e.GetWorkload()
			}
		}
	}
	return names
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
	httpConns := accept.NewChanListener(addrOf(o))
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
			httpConns.Push(&targetConn{Conn: &bufferedConn{Conn: nc, r: br}, target: ctx.Value(targetKey{}).(target)})
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
	http        *accept.ChanListener // to net/http's server (h2c)
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
		c.http.Push(&targetConn{Conn: conn, target: t})
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
		o.cfg.Metrics.CountLocal(metrics.Edge{Direction: metrics.Outbound, MTLS: true}, "", http.StatusServiceUnavailable)
		localError(w, r, http.StatusServiceUnavailable, "rampart: destination "+name+" is unknown to the mesh")
		return
	case rt.table != nil:
		o.serveRouted(w, r, rt)
		return
	case rt.n == 0:
		o.refuse(ReasonNoEndpoints)
		o.cfg.Metrics.CountLocal(metrics.Edge{Direction: metrics.Outbound, Service: rt.service, MTLS: true}, "", http.StatusServiceUnavailable)
		localError(w, r, http.StatusServiceUnavailable, "rampart: service "+rt.service+" has no endpoints")
		return
	}
	start := time.Now()
	var (
		code int
		ep   *endpoint
	)
	if o.cfg.Tracer != nil || o.cfg.AccessLog != nil {
		span := o.cfg.Tracer.Start(r, tracing.Client)
		defer func() { o.observed(r, w.Header(), start, span, code, ep) }()
	}
	code, ep = o.forward(w, r, rt, sendTo{be: rt})
	rt.seriesOf(ep, nil).ObserveHTTP(r, w.Header(), code, time.Since(start).Seconds())
	if o.cfg.Tap.Active() {
		o.cfg.Tap.Observe(false, ep.peerID(), r, w.Header(), code, time.Since(start))
	}
}

// serveRouted serves a request to a service port that routes apply to: it
// goes to a backend of the rule it matches, within the rule's timeouts.
// It is counted under the backend service it was sent to, or under rt's
// when it reached no backend.
func (o *Outbound) serveRouted(w http.ResponseWriter, r *http.Request, rt *route) {
	start := time.Now()
	rule, ok := rt.table.Match(r.Method, r.URL.EscapedPath(), r.Header)
	if !ok {
		o.refuse(ReasonNoRoute)
		o.cfg.Metrics.CountLocal(metrics.Edge{Direction: metrics.Outbound, Service: rt.service, MTLS: true}, "", http.StatusNotFound)
		localError(w, r, http.StatusNotFound, "rampart: no route of service "+rt.service+" matches the request")
		return
	}
	b := rule.Pick(rand.Uint64())
	var be *route
	if b != nil && b.Valid() {
		be = rt.routing.backends[backendKey{service: b.ServiceIndex, port: b.Port.GetPort()}]
	}
	if be == nil {
		o.refuse(ReasonInvalidBackend)
		o.cfg.Metrics.CountLocal(metrics.Edge{Direction: metrics.Outbound, Service: rt.service, MTLS: true}, rule.Namespace+"/"+rule.Route, http.StatusInternalServerError)
		o.logNoBackend(r.Context(), rt, rule, b)
		localError(w, r, http.StatusInternalServerError, "rampart: "+rule.String()+" has no valid backend to send the request to")
		return
	}
	if be.n == 0 {
		o.refuse(ReasonNoEndpoints)
		o.cfg.Metrics.CountLocal(metrics.Edge{Direction: metrics.Outbound, Service: be.service, MTLS: true}, rule.Namespace+"/"+rule.Route, http.StatusServiceUnavailable)
		localError(w, r, http.StatusServiceUnavailable, "rampart: service "+be.service+" has no endpoints")
		return
	}
	to := sendTo{be: be, rule: rule, backend: b}
	if rule.RequestTimeout > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), rule.RequestTimeout)
		defer cancel()
		to.app = r.Context()
		r = r.WithContext(ctx)
	}
	var (
		code int
		ep   *endpoint
	)
	if o.cfg.Tracer != nil || o.cfg.AccessLog != nil {
		span := o.cfg.Tracer.Start(r, tracing.Client)
		defer func() { o.observed(r, w.Header(), start, span, code, ep) }()
	}
	code, ep = o.forward(w, r, rt, to)
	be.seriesOf(ep, rule).ObserveHTTP(r, w.Header(), code, time.Since(start).Seconds())
	if o.cfg.Tap.Active() {
		o.cfg.Tap.Observe(false, ep.peerID(), r, w.Header(), code, time.Since(start))
	}
}

// logNoBackend logs, about once a second per rule, a request that its
// rule had no valid backend to send to.
func (o *Outbound) logNoBackend(ctx context.Context, rt *route, rule *rtable.Rule, b *rtable.Backend) {
	g := rt.routing.logs[ruleKey{namespace: rule.Namespace, route: rule.Route, index: rule.Index}]
	if g == nil {
		return // not reached: every rule of the configuration has one
	}
	ok, suppressed := g.allow(time.Now())
	if !ok {
		return
	}
	problem := "no backend has a nonzero weight"
	if b != nil {
		problem = b.Problem
	}
	o.log.Log(ctx, slog.LevelWarn, "request answered 500: its rule has no valid backend",
		"service", rt.service, "rule", rule.String(), "problem", problem, "suppressed_since_last", suppressed)
}

// attemptTimer bounds one attempt at a time by the per-try timeout.
type attemptTimer struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// start stops the previous attempt's timer and returns the context of a
// new attempt, which ends d from now.
func (t *attemptTimer) start(parent context.Context, d time.Duration) context.Context {
	t.stop()
	t.ctx, t.cancel = context.WithTimeout(parent, d)
	return t.ctx
}

func (t *attemptTimer) stop() {
	if t.cancel != nil {
		t.cancel()
	}
}

// expired reports whether the last attempt ran out of time.
func (t *attemptTimer) expired() bool {
	return t.ctx != nil && errors.Is(t.ctx.Err(), context.DeadlineExceeded)
}

// sendTo says where forward sends a request, beyond the route the app
// addressed (whose service's retry budget it draws on).
type sendTo struct {
	// be is the route whose endpoints get the request: the addressed
	// route itself, or the backend its rule picked.
	be *route
	// rule and backend are the rule the request matched and the backend
	// picked, whose header changes apply; nil when not routed.
	rule    *rtable.Rule
	backend *rtable.Backend
	// app is the app's context when the request's context carries the
	// rule's request timeout; nil otherwise.
	app context.Context
}

// forward sends a request to an endpoint of to.be, retrying on another
// endpoint of it as the retry policy and the budget of rt's service allow,
// and writes the answer. It returns the status code to count and the
// endpoint that answered or failed last (nil for none).
func (o *Outbound) forward(w http.ResponseWriter, r *http.Request, rt *route, to sendTo) (code int, ep *endpoint) {
	x, err := forward.NewExchange(w, r)
	if err != nil {
		return o.failed(w, r, rt, err), nil
	}
	defer x.Close()
	out := x.Out
	be := to.be
	if to.rule != nil {
		// The route's changes first, so that the proxy's own headers
		// below win over anything they did.
		to.rule.ModifyRequest(out.Header)
		to.backend.ModifyRequest(out.Header)
	}
	out.Header[tunnel.HeaderTargetPort] = be.targetPort
	// The app may not speak for anyone, itself included: the receiving
	// proxy sets the caller's identity.
	delete(out.Header, tunnel.HeaderClientID)
	delete(out.Header, tunnel.HeaderAppProtocol)
	tunnel.StripLookalikes(out.Header)
	if r.ProtoMajor == 2 && be.port.GetProtocol() == meshv1.Protocol_PROTOCOL_AUTO {
		// Detected HTTP/2: the app's server speaks it too.
		out.Header[tunnel.HeaderAppProtocol] = appProtocolH2C
	}
	// The app's context: r's, unless r's carries the rule's request
	// timeout.
	app := r.Context()
	if to.app != nil {
		app = to.app
	}
	var perTry time.Duration
	if to.rule != nil {
		perTry = to.rule.BackendRequestTimeout
	}
	var try attemptTimer
	defer try.stop()

	d := be.dest
	// Retries follow the policy, and draw on the budget, of the service
	// the app addressed.
	policy, svcName := &rt.traffic.retry, rt.dest.svc.name
	rt.budget.Deposit()
	req := retry.Request{Method: r.Method, GRPC: isGRPC(r)}
	// The idle timeout, of the rule when it sets one, else of the service
	// the app addressed: each attempt ends when neither its answer nor the
	// app's body moved for it.
	var (
		idle *idleState
		iw   *idleWatch
	)
	defer func() { iw.stop() }()
	if to.rule != nil && to.rule.IdleTimeout > 0 {
		idle = newIdleState(to.rule.IdleTimeout)
	} else if t := rt.traffic.idleHTTP; t > 0 && !req.GRPC {
		idle = newIdleState(t)
	} else if t := rt.traffic.idleGRPC; t > 0 && req.GRPC {
		idle = newIdleState(t)
	}
	if idle != nil && out.Body != nil {
		out.Body = &idleReader{ReadCloser: out.Body, s: idle}
	}
	if out.Body != nil && (req.GRPC || retry.IdempotentMethod(r.Method)) {
		// Only these may be retried once sent: keep the start of their
		// body for a retry. Any other request is retried only when it was
		// not sent, its body unread.
		req.Body = retry.NewReplay(out.Body, 0)
		defer req.Body.Close()
	}
	h, ok := d.bal.Pick()
	if !ok {
		return o.failed(w, r, rt, errNoEndpoint), nil
	}
	if req.Body != nil {
		out.Body, _ = req.Body.Rewind() // a fresh Replay always rewinds
	}
	var res *http.Response
	for n := 1; ; n++ {
		ep = h.Endpoint()
		send := out
		if idle != nil || perTry > 0 {
			ctx := out.Context()
			if idle != nil {
				iw.stop() // the previous attempt's
				ctx, iw = idle.watch(ctx)
			}
			if perTry > 0 {
				ctx = try.start(ctx, perTry)
			}
			send = out.WithContext(ctx)
			if n > 1 {
				// An attempt that timed out may still be writing its
				// request: the next one gets a URL of its own, which
				// the dialer sets the peer in.
				u := *out.URL
				send.URL = &u
			}
		}
		res, err = o.cfg.Dialer.RoundTrip(ep.peer, send)
		if err == nil && res.StatusCode < 500 && !req.GRPC && res.Header[tunnel.HeaderDecisionID] == nil {
			// The common case: answered, nothing to retry.
			h.Done(h.Elapsed(), balance.Success)
			break
		}
		// A timeout of the route is the endpoint's failure (an attempt
		// broken, retried when idempotent); only the app leaving is
		// abandoned.
		result, outcome, decided := resultOf(app, res, err, req.GRPC)
		if h.Done(h.Elapsed(), outcome) {
			o.ejectedOne(d, ep)
		}
		if outcome == balance.Abandoned || decided {
			// The caller left, or the peer's policy or rate limit
			// refused the request: a decision, not a fault, and never
			// retried across the boundary it was refused at.
			break
		}
		delay, v := policy.Next(rt.budget, n, req, result, remaining(r.Context()))
		if v == retry.Answered {
			break
		}
		o.cfg.Metrics.Retries.WithLabelValues(svcName, v.String()).Inc()
		if v != retry.Retry {
			break
		}
		if req.Body != nil {
			body, ok := req.Body.Rewind()
			if !ok {
				// The attempt read past what is kept after the policy
				// looked: answer with what it got.
				break
			}
			out.Body = body
		}
		if res != nil {
			res.Body.Close()
			res = nil
		}
		if err = wait(r.Context(), delay); err != nil {
			break
		}
		if h, ok = d.bal.Repick(h); !ok {
			err = errNoEndpoint
			break
		}
	}
	if req.Body != nil {
		// The answer is committed: stop keeping the body.
		req.Body.Commit()
	}
	x.RoundTripDone()
	if err != nil {
		switch {
		case app.Err() != nil:
		case iw.expired() && r.Context().Err() == nil && !try.expired():
			o.refuse(ReasonIdleTimeout)
			localError(w, out, http.StatusGatewayTimeout, "rampart: service "+be.service+" sent nothing for the idle timeout ("+idle.d.String()+")")
			return http.StatusGatewayTimeout, ep
		case r.Context().Err() != nil || try.expired():
			// The rule's request or per-try timeout ran out.
			localError(w, out, http.StatusGatewayTimeout, "rampart: "+to.rule.String()+": timed out waiting for service "+be.service)
			return http.StatusGatewayTimeout, ep
		}
		return o.failed(w, out, rt, err), ep
	}
	if idle != nil {
		idle.touch()
		res.Body = &idleReader{ReadCloser: res.Body, s: idle}
	}
	if err := x.WriteResponse(res); err != nil {
		if iw.expired() {
			o.refuse(ReasonIdleTimeout)
		}
		// The body broke off: abort, so that the client sees the
		// response incomplete.
		panic(http.ErrAbortHandler)
	}
	return res.StatusCode, ep
}

var errNoEndpoint = errors.New("outbound: no endpoint to pick")

var appProtocolH2C = []string{tunnel.AppProtocolH2C}

// isGRPC reports whether a request is a gRPC call.
func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	return r.ProtoMajor == 2 && len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}

// resultOf says how an attempt ended: for the retry policy, for the
// balancer, and whether the answer is a decision of the peer's policy or
// rate limit (it carries a decision ID), which is neither a failure of the
// endpoint nor retried.
func resultOf(ctx context.Context, res *http.Response, err error, grpc bool) (result retry.Result, o balance.Outcome, decided bool) {
	if err != nil {
		var de *tunnel.DialError
		switch {
		case ctx.Err() != nil:
			return retry.Result{Broken: true}, balance.Abandoned, false
		case errors.As(err, &de):
			return retry.Result{NotSent: true}, balance.Failure, false
		}
		return retry.Result{Broken: true}, balance.Failure, false
	}
	result.Status = res.StatusCode
	if grpc {
		if v := res.Header["Grpc-Status"]; len(v) > 0 {
			result.GRPCStatus = v[0]
		}
	}
	if res.Header[tunnel.HeaderDecisionID] != nil && isRefusal(res.StatusCode, result.GRPCStatus != "") {
		return result, balance.Success, true
	}
	if result.Failed() {
		return result, balance.Failure, false
	}
	return result, balance.Success, false
}

// isRefusal reports whether a status is one a proxy refuses with by
// policy or rate limit: 400, 403 or 429, or a gRPC trailers-only answer.
// An app's 5xx with a forged decision ID still counts as a failure.
func isRefusal(status int, grpcStatus bool) bool {
	switch status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusTooManyRequests:
		return true
	case http.StatusOK:
		return grpcStatus
	}
	return false
}

// remaining is the time left before ctx's deadline.
func remaining(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return retry.NoDeadline
}

// wait waits d, or until ctx ends.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ejectedOne counts and logs an endpoint that outlier detection ejected.
func (o *Outbound) ejectedOne(d *dest, ep *endpoint) {
	d.svc.ejections.Inc()
	o.log.Warn("endpoint ejected after failures", "service", d.svc.name, "peer", ep.peer.String())
}

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

// connectRequest is what the retry policy knows of a CONNECT stream: not
// idempotent, so retried only when it was not sent (its bytes unread).
var connectRequest = retry.Request{Method: http.MethodConnect}

func (o *Outbound) serveTCP(ctx context.Context, conn net.Conn, t target) {
	defer conn.Close()
	r := t.route()
	if r == nil || !r.known {
		o.refuse(ReasonUnknownService)
		o.log.Warn("refused connection: destination is unknown to the mesh", "destination", t.name())
		return
	}
	if r.n == 0 {
		o.refuse(ReasonNoEndpoints)
		o.log.Warn("refused connection: service has no endpoints", "service", r.service)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The stream ends when no byte went either way for the idle timeout.
	idle := newIdleState(r.traffic.idleTCP)
	ctx, iw := idle.watch(ctx)
	defer iw.stop()
	// Cutting the stream (idle, or the drain deadline) closes the app's
	// connection too: a read of it blocks the stream's request body.
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	up := newCountingReader(conn)
	up.idle = idle
	d := r.dest
	r.budget.Deposit()
	var (
		body io.ReadCloser
		peer tunnel.Peer
		last *endpoint // the endpoint of the last attempt
		err  error
	)
	h, ok := d.bal.Pick()
	if !ok {
		o.refuse(ReasonNoEndpoints)
		return
	}
	for n := 1; ; n++ {
		ep := h.Endpoint()
		peer, last = ep.peer, ep
		body, err = o.cfg.Dialer.Connect(ctx, peer, int(r.port.GetTargetPort()), up)
		result, outcome, decided := streamResultOf(ctx, err)
		if h.Done(h.Elapsed(), outcome) {
			o.ejectedOne(d, ep)
		}
		if err == nil || outcome == balance.Abandoned || decided {
			break
		}
		delay, v := r.traffic.retry.Next(r.budget, n, connectRequest, result, retry.NoDeadline)
		o.cfg.Metrics.Retries.WithLabelValues(d.svc.name, v.String()).Inc()
		if v != retry.Retry {
			break
		}
		if wait(ctx, delay) != nil {
			break
		}
		if h, ok = d.bal.Repick(h); !ok {
			break
		}
	}
	if err != nil {
		// Only a refusal with a decision ID is the destination's policy
		// or rate limit; a 403 without one (an undeclared port) is not.
		var re *tunnel.RefusedError
		decided := errors.As(err, &re) && re.Decision != ""
		reason, level, msg := ReasonPeerFailed, slog.LevelWarn, "tunnel stream failed"
		switch {
		case decided && re.Status == http.StatusForbidden:
			reason, level, msg = ReasonPeerDenied, slog.LevelInfo, "connection denied by the destination's policy"
		case decided && re.Status == http.StatusTooManyRequests:
			reason, level, msg = ReasonPeerRateLimited, slog.LevelInfo, "connection refused by the destination's rate limit"
		}
		o.refuse(reason)
		status := http.StatusBadGateway
		if decided {
			status = re.Status
		}
		o.cfg.Metrics.StreamRefused(last.edge(), status)
		// The calling app can open streams as fast as they are refused:
		// sample the log, per service.
		if ok, suppressed := d.svc.streamLog.Allow(time.Now()); ok {
			attrs := []any{"service", r.service, "peer", peer.String()}
			if reason == ReasonPeerFailed {
				attrs = append(attrs, "err", err)
			} else {
				attrs = append(attrs, "decision", re.Decision)
			}
			o.log.Log(ctx, level, msg, append(attrs, "suppressed_since_last", suppressed)...)
		}
		return
	}
	defer body.Close()
	peerID, edge := peer.ID.String(), last.edge()
	o.cfg.Metrics.StreamOpened(edge)
	received, _ := io.Copy(conn, &idleReader{ReadCloser: body, s: idle})
	closeWrite(conn)
	// Wait for the app to finish sending (or the stream to be cut).
	select {
	case <-up.done:
	case <-ctx.Done():
	}
	if iw.stop() {
		o.refuse(ReasonIdleTimeout)
		o.log.Info("TCP stream closed: nothing sent either way for the idle timeout",
			"service", r.service, "peer", peerID, "idle_timeout", idle.d.String())
	}
	o.cfg.Metrics.StreamClosed(edge, up.n.Load(), received)
}

// streamResultOf says how an attempt to open a CONNECT stream ended, as
// resultOf does for a request.
func streamResultOf(ctx context.Context, err error) (result retry.Result, o balance.Outcome, decided bool) {
	if err == nil {
		return result, balance.Success, false
	}
	var (
		de *tunnel.DialError
		re *tunnel.RefusedError
	)
	switch {
	case ctx.Err() != nil:
		return retry.Result{Broken: true}, balance.Abandoned, false
	case errors.As(err, &de):
		return retry.Result{NotSent: true}, balance.Failure, false
	case errors.As(err, &re):
		result.Status = re.Status
		if re.Decision != "" && isRefusal(re.Status, false) {
			return result, balance.Success, true
		}
		if result.Failed() {
			return result, balance.Failure, false
		}
		return result, balance.Success, false
	}
	return retry.Result{Broken: true}, balance.Failure, false
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// countingReader counts bytes read and signals when reading ended.
type countingReader struct {
	r    io.Reader
	idle *idleState // touched at every read that returns data; nil for none
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
	if n > 0 && c.idle != nil {
		c.idle.touch()
	}
	if err != nil {
		c.once.Do(func() { close(c.done) })
	}
	return n, err
}

// localError answers a request the proxy could not send. A gRPC caller gets
// a gRPC status in a trailers-only response, which its client library
// understands (UNAVAILABLE; for a route's 404, 500 and 504, UNIMPLEMENTED,
// INTERNAL and DEADLINE_EXCEEDED); anyone else gets the HTTP status and a
// text body.
func localError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		status := "14" // UNAVAILABLE
		switch code {
		case http.StatusNotFound:
			status = "12" // UNIMPLEMENTED, as gRPC maps a 404
		case http.StatusInternalServerError:
			status = "13" // INTERNAL
		case http.StatusGatewayTimeout:
			status = "4" // DEADLINE_EXCEEDED
		}
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", status)
		h.Set("Grpc-Message", url.PathEscape(msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Error(w, msg, code)
}

// ReasonIdleTimeout is the refusal of a TCP stream or HTTP request cut
// because nothing was sent either way for the idle timeout.
const ReasonIdleTimeout = "idle_timeout"

// traffic is one service's settings: its TrafficPolicy over Config's.
type traffic struct {
	balance balance.Config
	retry   retry.Policy
	budget  retry.BudgetConfig
	// The idle timeouts of opaque TCP streams, HTTP requests and gRPC
	// requests; zero for none.
	idleTCP, idleHTTP, idleGRPC time.Duration
}

// Bounds of a TrafficPolicy, as the controller validates it.
const (
	maxIdleTimeout      = 24 * time.Hour
	maxAttempts         = 10
	maxMinRetriesPerSec = 1000
	maxConsecutive      = 1000
	maxBaseEjection     = time.Hour
)

// ValidateTraffic checks the TrafficPolicy of every service strictly: a
// known balancer, durations and counts within the bounds the controller
// enforces, HTTP statuses of failures and gRPC codes that exist. The
// error names the service and the field.
func ValidateTraffic(services []*meshv1.Service) error {
	var cfg Config
	for _, s := range services {
		if s.GetTraffic() == nil {
			continue
		}
		if _, err := trafficOf(&cfg, s.GetTraffic()); err != nil {
			return fmt.Errorf("service %s.%s: %w", s.GetName(), s.GetNamespace(), err)
		}
	}
	return nil
}

// trafficOf applies tp, which may be nil, over cfg's settings.
func trafficOf(cfg *Config, tp *meshv1.TrafficPolicy) (*traffic, error) {
	t := &traffic{balance: cfg.Balance, retry: cfg.Retry, budget: cfg.Budget, idleTCP: cfg.IdleTimeout, idleHTTP: cfg.IdleTimeout}
	if t.idleTCP == 0 {
		t.idleTCP, t.idleHTTP = DefaultIdleTimeout, DefaultIdleTimeout
	}
	if tp == nil {
		return t, nil
	}
	switch tp.GetLoadBalancer() {
	case meshv1.LoadBalancer_LOAD_BALANCER_UNSPECIFIED:
	case meshv1.LoadBalancer_LOAD_BALANCER_PEAK_EWMA:
		t.balance.Mode = balance.PeakEWMA
	case meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN:
		t.balance.Mode = balance.RoundRobin
	default:
		return nil, fmt.Errorf("traffic: unknown load balancer %d", tp.GetLoadBalancer())
	}
	if d := tp.GetIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, fmt.Errorf("traffic: idle timeout: %w", err)
		}
		switch v := d.AsDuration(); {
		case v < 0 || v > maxIdleTimeout:
			return nil, fmt.Errorf("traffic: idle timeout %v is not within 0..24h", v)
		case v > 0:
			t.idleTCP, t.idleHTTP, t.idleGRPC = v, v, v
		}
	}
	if r := tp.GetRetry(); r != nil {
		if err := t.applyRetry(r); err != nil {
			return nil, err
		}
	}
	if od := tp.GetOutlierDetection(); od != nil {
		if err := t.applyOutlier(od); err != nil {
			return nil, err
		}
	}
	// What the packages check themselves, should the bounds above miss
	// anything.
	if err := t.balance.Validate(); err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	if err := t.retry.Validate(); err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	if err := t.budget.Validate(); err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	return t, nil
}

func (t *traffic) applyRetry(r *meshv1.TrafficPolicy_Retry) error {
	switch a := r.GetAttempts(); {
	case a > maxAttempts:
		return fmt.Errorf("traffic: retry attempts %d is more than %d", a, maxAttempts)
	case a > 0:
		t.retry.MaxAttempts = int(a)
	}
	if r.BudgetPercent != nil {
		switch p := r.GetBudgetPercent(); {
		case p > 100:
			return fmt.Errorf("traffic: retry budget percent %d is more than 100", p)
		case p == 0:
			t.budget.Ratio = -1 // none: the minimum rate only
		default:
			t.budget.Ratio = float64(p) / 100
		}
	}
	if r.BudgetMinPerSecond != nil {
		switch n := r.GetBudgetMinPerSecond(); {
		case n > maxMinRetriesPerSec:
			return fmt.Errorf("traffic: retry budget minimum %d per second is more than %d", n, maxMinRetriesPerSec)
		case n == 0:
			t.budget.MinPerSecond = -1
		default:
			t.budget.MinPerSecond = float64(n)
		}
	}
	if on := r.GetRetryOn(); on != nil {
		// Non-nil, even when empty: an empty list retries on no answer.
		t.retry.HTTPStatuses = make([]int, 0, len(on.GetHttpStatuses()))
		for _, s := range on.GetHttpStatuses() {
			if s < 500 || s > 599 {
				return fmt.Errorf("traffic: retry on HTTP status %d: not within 500..599", s)
			}
			t.retry.HTTPStatuses = append(t.retry.HTTPStatuses, int(s))
		}
		t.retry.GRPCCodes = make([]retry.Code, 0, len(on.GetGrpcCodes()))
		for _, c := range on.GetGrpcCodes() {
			if c == uint32(retry.OK) || c > uint32(retry.Unauthenticated) {
				return fmt.Errorf("traffic: retry on gRPC status %d: not a failure's code (1..16)", c)
			}
			t.retry.GRPCCodes = append(t.retry.GRPCCodes, retry.Code(c))
		}
	}
	return nil
}

func (t *traffic) applyOutlier(od *meshv1.TrafficPolicy_OutlierDetection) error {
	o := &t.balance.Outlier
	if od.ConsecutiveFailures != nil {
		switch n := od.GetConsecutiveFailures(); {
		case n > maxConsecutive:
			return fmt.Errorf("traffic: outlier consecutive failures %d is more than %d", n, maxConsecutive)
		case n == 0:
			o.ConsecutiveFailures = -1 // the rule is off
		default:
			o.ConsecutiveFailures = int(n)
		}
	}
	if od.FailurePercent != nil {
		switch p := od.GetFailurePercent(); {
		case p > 100:
			return fmt.Errorf("traffic: outlier failure percent %d is more than 100", p)
		case p == 0:
			o.FailureRate = -1
		default:
			o.FailureRate = float64(p) / 100
		}
	}
	if d := od.GetBaseEjectionTime(); d != nil {
		if err := d.CheckValid(); err != nil {
			return fmt.Errorf("traffic: outlier base ejection time: %w", err)
		}
		switch v := d.AsDuration(); {
		case v < 0 || v > maxBaseEjection:
			return fmt.Errorf("traffic: outlier base ejection time %v is not within 0..1h", v)
		case v > 0:
			o.BaseEjection = v
			if max := cmpOr(o.MaxEjection, outlier.DefaultMaxEjection); max < v {
				o.MaxEjection = v
			}
		}
	}
	switch p := od.GetMaxEjectedPercent(); {
	case p > 100:
		return fmt.Errorf("traffic: outlier max ejected percent %d is more than 100", p)
	case p > 0:
		o.MaxEjectedPercent = int(p)
	}
	return nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// sameBalance reports whether balancers made with a and b behave alike
// (their clocks and random sources aside).
func sameBalance(a, b balance.Config) bool {
	ao, bo := a.Outlier, b.Outlier
	return a.Mode == b.Mode && a.Decay == b.Decay && a.WarmUp == b.WarmUp &&
		a.WarmUpMinWeight == b.WarmUpMinWeight && a.FailurePenalty == b.FailurePenalty &&
		ao.ConsecutiveFailures == bo.ConsecutiveFailures && ao.FailureRate == bo.FailureRate &&
		ao.MinRequests == bo.MinRequests && ao.Window == bo.Window && ao.BaseEjection == bo.BaseEjection &&
		ao.MaxEjection == bo.MaxEjection && ao.MaxEjectedPercent == bo.MaxEjectedPercent
}

// sameBudget reports whether budgets made with a and b behave alike.
func sameBudget(a, b retry.BudgetConfig) bool {
	return a.Ratio == b.Ratio && a.MinPerSecond == b.MinPerSecond && a.Window == b.Window
}

// idleState is what the attempts of one request share about its
// activity: when a byte last went either way.
type idleState struct {
	d    time.Duration
	base time.Time
	last atomic.Int64 // since base
	// first is the first watch, made with the state: most requests
	// have one attempt.
	first idleWatch
}

func newIdleState(d time.Duration) *idleState { return &idleState{d: d, base: time.Now()} }

func (s *idleState) touch() { s.last.Store(int64(time.Since(s.base))) }

// idleFor is how long nothing went either way.
func (s *idleState) idleFor() time.Duration {
	return time.Since(s.base) - time.Duration(s.last.Load())
}

// idleWatch ends a context when its idleState has been idle for its
// timeout.
type idleWatch struct {
	s      *idleState
	cancel func()
	mu     sync.Mutex
	t      *time.Timer
	done   bool // stopped, or fired
	fired  atomic.Bool
}

// watch returns a context that ends, as ctx does or when s has been idle
// for its timeout, and the watch to stop once done with it.
func (s *idleState) watch(ctx context.Context) (context.Context, *idleWatch) {
	s.touch()
	ctx, cancel := context.WithCancel(ctx)
	w := &s.first
	if w.s != nil {
		w = new(idleWatch)
	}
	w.s, w.cancel = s, cancel
	w.mu.Lock()
	w.t = time.AfterFunc(s.d, w.check)
	w.mu.Unlock()
	return ctx, w
}

// expired reports whether the watch fired. Safe on a nil watch.
func (w *idleWatch) expired() bool { return w != nil && w.fired.Load() }

func (w *idleWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	if idle := w.s.idleFor(); idle < w.s.d {
		w.t.Reset(w.s.d - idle)
		return
	}

	w.done = true
	w.fired.Store(true)
	w.cancel()
}

// stop ends the watch and its context; it reports whether the watch had
// fired. Safe on a nil watch.
func (w *idleWatch) stop() bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	w.done = true
	w.t.Stop()
	w.mu.Unlock()
	w.cancel()
	return w.fired.Load()
}

// idleReader touches its idleState at every read that returns data.
type idleReader struct {
	io.ReadCloser
	s *idleState
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 {
		r.s.touch()
	}
	return n, err
}
