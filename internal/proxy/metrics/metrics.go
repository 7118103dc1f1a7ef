// Package metrics defines the proxy's Prometheus series. One Metrics value
// is created per proxy and handed to the components that count.
//
// Label values are bounded: the proxy's own workload and identity are
// fixed, peer identities, workloads, services and routes come from the
// mesh's configuration and its certificates, status codes from HTTP,
// reasons from closed sets, policy, rule and limit names from the
// authorization policy in force, never from a request.
// docs/observability.md lists every series with its bound.
//
// Every request and stream counted here also feeds the per-edge telemetry
// (package telemetry) when Options name an aggregator.
//
// It must not depend on Kubernetes packages.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/telemetry"
)

// Directions.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Metrics is every series the proxy exports.
type Metrics struct {
	Registry *prometheus.Registry

	// Requests counts HTTP requests by edge (EdgeLabels), route and
	// response status code.
	Requests *prometheus.CounterVec
	// RequestDuration observes time to the end of the response, by edge
	// and route.
	RequestDuration *prometheus.HistogramVec
	// TCPConnections counts opaque TCP connections carried, by edge.
	TCPConnections *prometheus.CounterVec
	// TCPBytes counts bytes carried by opaque TCP connections, by edge
	// and flow.
	TCPBytes *prometheus.CounterVec
	// TLSRefusals counts mTLS handshakes refused, by direction and reason.
	TLSRefusals *prometheus.CounterVec
	// Refusals counts requests and streams refused after the handshake.
	Refusals *prometheus.CounterVec
	// SVIDExpiry is when the current certificate expires.
	SVIDExpiry prometheus.Gauge
	// SVIDRenewals counts certificate requests by result.
	SVIDRenewals *prometheus.CounterVec
	// ControlPlaneConnected is 1 while the discovery stream is up.
	ControlPlaneConnected prometheus.Gauge
	// ConfigUpdates counts configurations received and applied.
	ConfigUpdates prometheus.Counter
	// ConfigRejected counts configurations received and refused, by the
	// part of the configuration at fault.
	ConfigRejected *prometheus.CounterVec
	// Detected counts connections classified by protocol detection.
	Detected *prometheus.CounterVec
	// Egress counts transparent connections to destinations outside the
	// mesh, by destination and action (allowed or refused). The
	// destination is the egress rule's host pattern or network that
	// admitted the connection, else the name the app sent (TLS server
	// name, HTTP host), else the address; capped at
	// egress.DefaultMaxDestinations distinct values, then "other".
	Egress *prometheus.CounterVec
	// EgressBytes counts the bytes of those connections, by destination
	// (as Egress), action and direction (sent by the app, or received).
	EgressBytes *prometheus.CounterVec
	// Plaintext counts redirected inbound connections that arrived without
	// mTLS, by detected protocol and action.
	Plaintext *prometheus.CounterVec
	// AuthzDecisions counts authorization decisions on inbound requests
	// and streams, by decision (allow or deny), code, and the policy and
	// rule that decided ("" for none).
	AuthzDecisions *prometheus.CounterVec
	// AuthzAudits counts the AUDIT rules that matched, by policy and rule.
	AuthzAudits *prometheus.CounterVec
	// AuthzAuditMode counts the requests and streams whose decision the
	// policies in AUDIT mode would change, by result (would_deny or
	// would_allow) and policy (the one that would decide, or the ALLOW
	// policies in AUDIT mode when no rule would).
	AuthzAuditMode *prometheus.CounterVec
	// RateLimited counts requests and streams refused by a rate limit, by
	// the policy that sets it and its name.
	RateLimited *prometheus.CounterVec
	// Retries counts the decisions taken after a failed outbound attempt,
	// by service and verdict (retry.Verdict's names: retry,
	// budget_exhausted, not_retryable, ...).
	Retries *prometheus.CounterVec
	// Ejections counts endpoints taken out of balancing by outlier
	// detection, by service.
	Ejections *prometheus.CounterVec
	// TelemetryReports counts per-edge reports sent to the controller;
	// TelemetryDropped, reports dropped from a full queue;
	// TelemetryOverflowEdges, edges folded into a report's overflow edge.
	TelemetryReports, TelemetryDropped, TelemetryOverflowEdges prometheus.Counter

	local     Options
	telemetry *telemetry.Aggregator
	ejected   ejectedCollector
}

// Options says who the proxy is, for the own side of its series, and
// where its per-edge telemetry goes.
type Options struct {
	// Workload and Identity (SPIFFE ID) of the proxy's own workload.
	Workload, Identity string
	// Telemetry receives every request and stream per edge; nil for none.
	Telemetry *telemetry.Aggregator
}

// EjectedDesc describes rampart_proxy_endpoints_ejected, the endpoints of
// each service out of balancing now, reported at scrape time from the
// source given to SetEjectedSource.
var EjectedDesc = prometheus.NewDesc("rampart_proxy_endpoints_ejected",
	"Endpoints of a service currently ejected by outlier detection.", []string{"service"}, nil)

// EjectedSource yields, at scrape time, each service and how many of its
// endpoints are ejected.
type EjectedSource func(yield func(service string, ejected int) bool)

type ejectedCollector struct {
	src atomic.Pointer[EjectedSource]
}

func (c *ejectedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- EjectedDesc }

func (c *ejectedCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.src.Load()
	if src == nil {
		return
	}
	for svc, n := range *src {
		ch <- prometheus.MustNewConstMetric(EjectedDesc, prometheus.GaugeValue, float64(n), svc)
	}
}

// SetEjectedSource sets what rampart_proxy_endpoints_ejected reports.
func (m *Metrics) SetEjectedSource(src EjectedSource) { m.ejected.src.Store(&src) }

// Label values of tls.
const (
	MTLS      = "mtls"
	Plaintext = "plaintext"
)

// edgeLabels are the labels of every per-edge series, in this order.
var edgeLabels = []string{"direction", "src_workload", "src_identity", "dst_workload", "dst_identity", "dst_service", "tls"}

func withEdge(extra ...string) []string {
	return append(append([]string(nil), edgeLabels...), extra...)
}

// New creates the series on a fresh registry with Go and process
// collectors, for a proxy without a name and without telemetry (tests).
func New() *Metrics { return NewWith(Options{}) }

// NewWith creates the series of the proxy that o describes.
func NewWith(o Options) *Metrics {
	m := &Metrics{
		Registry:  prometheus.NewRegistry(),
		local:     o,
		telemetry: o.Telemetry,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_requests_total",
			Help: "HTTP requests proxied, by direction, source and destination workload and SPIFFE ID, destination service, HTTPRoute, response status code and TLS state.",
		}, withEdge("route", "code")),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rampart_proxy_request_duration_seconds",
			Help:    "Time from receiving a request to the end of its response, by direction, source and destination, HTTPRoute and TLS state.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, withEdge("route")),
		TCPConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tcp_connections_total",
			Help: "Opaque TCP connections carried, by direction, source and destination workload and SPIFFE ID, destination service and TLS state.",
		}, withEdge()),
		TCPBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tcp_bytes_total",
			Help: "Bytes carried on opaque TCP connections, by edge; flow is sent (towards the peer) or received.",
		}, withEdge("flow")),
		TLSRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tls_refusals_total",
			Help: "mTLS handshakes refused, by direction and reason.",
		}, []string{"direction", "reason"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_refusals_total",
			Help: "Requests or streams refused after authentication, by direction and reason.",
		}, []string{"direction", "reason"}),
		SVIDExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_proxy_svid_expiry_timestamp_seconds",
			Help: "Unix time at which the proxy's current certificate expires.",
		}),
		SVIDRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_svid_requests_total",
			Help: "Certificate requests to the controller, by result (issued or failed).",
		}, []string{"result"}),
		ControlPlaneConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_proxy_controlplane_connected",
			Help: "1 while the proxy holds a discovery stream to the controller.",
		}),
		ConfigUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_proxy_config_updates_total",
			Help: "Configurations received from the controller and applied.",
		}),
		ConfigRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_config_rejected_total",
			Help: "Configurations received from the controller and refused as invalid, by the part at fault; the last good one stays in force.",
		}, []string{"reason"}),
		Detected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_protocol_detections_total",
			Help: "Connections classified by protocol detection, by direction and protocol (http/1.1, h2c, tls, tcp).",
		}, []string{"direction", "protocol"}),
		Egress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_egress_connections_total",
			Help: "Intercepted connections to destinations outside the mesh, by destination (the egress rule that admitted it, else the name or address; at most 100 values, then \"other\") and action (allowed or refused).",
		}, []string{"destination", "action"}),
		Plaintext: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_plaintext_connections_total",
			Help: "Redirected inbound connections that arrived without mTLS, by detected protocol and action.",
		}, []string{"protocol", "action"}),
		AuthzDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_authz_decisions_total",
			Help: "Authorization decisions on inbound requests and streams, by decision, code, and the policy and rule that decided (empty when none did).",
		}, []string{"decision", "code", "policy", "rule"}),
		AuthzAudits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_authz_audits_total",
			Help: "AUDIT rules that matched inbound requests and streams, by policy and rule.",
		}, []string{"policy", "rule"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_rate_limited_total",
			Help: "Inbound requests and streams refused by a rate limit, by the policy that sets it and the limit's name.",
		}, []string{"policy", "limit"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_retries_total",
			Help: "Decisions after a failed outbound attempt, by service and verdict (retry: sent again; the others say why not).",
		}, []string{"service", "verdict"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_endpoint_ejections_total",
			Help: "Endpoints ejected from balancing by outlier detection, by service.",
		}, []string{"service"}),
	}
	m.TelemetryReports = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rampart_proxy_telemetry_reports_total",
		Help: "Per-edge telemetry reports sent to the controller.",
	})
	m.TelemetryDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rampart_proxy_telemetry_dropped_total",
		Help: "Per-edge telemetry reports dropped, oldest first, because the queue to the controller was full.",
	})
	m.TelemetryOverflowEdges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rampart_proxy_telemetry_overflow_edges_total",
		Help: "Edges folded into a telemetry report's overflow edge because the report held its bound of edges.",
	})
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.RequestDuration, m.TCPConnections, m.TCPBytes, m.TLSRefusals,
		m.Refusals, m.SVIDExpiry, m.SVIDRenewals, m.ControlPlaneConnected,
		m.ConfigUpdates, m.ConfigRejected, m.Detected, m.Egress, m.Plaintext,
		m.AuthzDecisions, m.AuthzAudits, m.RateLimited, m.Retries, m.Ejections, &m.ejected,
		m.TelemetryReports, m.TelemetryDropped, m.TelemetryOverflowEdges,
	)
	m.EgressBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_proxy_egress_bytes_total",
		Help: "Bytes of intercepted connections to destinations outside the mesh, by destination (as rampart_proxy_egress_connections_total), action and direction (sent by the app, or received).",
	}, []string{"destination", "action", "direction"})
	m.Registry.MustRegister(m.EgressBytes)
	m.AuthzAuditMode = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_proxy_authz_audit_mode_total",
		Help: "Inbound requests and streams whose decision the authorization policies in AUDIT mode would change, by result (would_deny or would_allow) and the policy that would decide (or the ALLOW policies in AUDIT mode, comma-separated, when no rule would).",
	}, []string{"result", "policy"})
	m.Registry.MustRegister(m.AuthzAuditMode)
	return m
}

// Telemetry returns the aggregator that receives the proxy's per-edge
// telemetry, nil for none.
func (m *Metrics) Telemetry() *telemetry.Aggregator { return m.telemetry }

// Edge is one edge of the traffic graph as the proxy sees it: its own
// workload on one side (filled in from Options), a peer on the other.
type Edge struct {
	// Direction is Inbound or Outbound.
	Direction string
	// PeerWorkload and PeerIdentity are the other side's workload name
	// and SPIFFE ID, "" when unknown (inbound: the workload; a plaintext
	// client: both; a request that reached no peer: both).
	PeerWorkload, PeerIdentity string
	// Service is the destination service: "name.namespace" outbound,
	// ":port" (the app port) inbound.
	Service string
	// MTLS: the peer is on the other end of the mTLS tunnel; false for a
	// plaintext client.
	MTLS bool
}

// labels returns the values of edgeLabels for e, then extra.
func (m *Metrics) labels(e Edge, extra ...string) []string {
	tls := Plaintext
	if e.MTLS {
		tls = MTLS
	}
	srcW, srcID, dstW, dstID := m.local.Workload, m.local.Identity, e.PeerWorkload, e.PeerIdentity
	if e.Direction == Inbound {
		srcW, srcID, dstW, dstID = dstW, dstID, srcW, srcID
	}
	return append([]string{e.Direction, srcW, srcID, dstW, dstID, e.Service, tls}, extra...)
}

// edge returns the telemetry edge of e, nil without telemetry.
func (m *Metrics) edge(e Edge) *telemetry.Edge {
	if m.telemetry == nil {
		return nil
	}
	k := telemetry.EdgeKey{
		Direction:    meshv1.Direction_DIRECTION_OUTBOUND,
		PeerIdentity: e.PeerIdentity,
		PeerWorkload: e.PeerWorkload,
		Service:      serviceName(e.Service),
		MTLS:         e.MTLS,
	}
	if e.Direction == Inbound {
		k.Direction = meshv1.Direction_DIRECTION_INBOUND
	}
	return m.telemetry.Edge(k)
}

// serviceName turns a series' "name.namespace" into telemetry's
// "namespace/name"; an inbound ":port" or anything else is "".
func serviceName(s string) string {
	name, ns, ok := strings.Cut(s, ".")
	if !ok || name == "" || ns == "" {
		return ""
	}
	return ns + "/" + name
}

// CountLocal counts a request the proxy answered itself (no route, no
// endpoint, no valid backend) with status, under e: no latency is
// observed.
func (m *Metrics) CountLocal(e Edge, route string, status int) {
	m.Requests.WithLabelValues(m.labels(e, route, Code(status))...).Inc()
	m.edge(e).Request(telemetry.Request{Status: status, Seconds: -1, Failed: status >= 500})
}

// StreamOpened counts an opaque TCP stream carried on e.
func (m *Metrics) StreamOpened(e Edge) {
	m.TCPConnections.WithLabelValues(m.labels(e)...).Inc()
	m.edge(e).Request(telemetry.Request{Status: http.StatusOK, Seconds: -1})
}

// StreamClosed counts the bytes an opaque TCP stream on e carried:
// sent towards the peer, received from it.
func (m *Metrics) StreamClosed(e Edge, sent, received int64) {
	m.TCPBytes.WithLabelValues(m.labels(e, "sent")...).Add(float64(max(sent, 0)))
	m.TCPBytes.WithLabelValues(m.labels(e, "received")...).Add(float64(max(received, 0)))
	m.edge(e).Bytes(uint64(max(sent, 0)), uint64(max(received, 0)))
}

// StreamRefused counts, in the per-edge telemetry, an opaque TCP stream
// on e that did not open: status 403 is an authorization decision, 429 a
// rate limit, anything else a failure.
func (m *Metrics) StreamRefused(e Edge, status int) {
	m.edge(e).Request(telemetry.Request{
		Status: status, Seconds: -1,
		Denied:      status == http.StatusForbidden,
		RateLimited: status == http.StatusTooManyRequests,
		Failed:      status != http.StatusForbidden && status != http.StatusTooManyRequests,
	})
}

// Series counts the requests of one edge under one route. It holds the
// children of Requests and RequestDuration once they exist, and the
// edge's telemetry, so that counting a request hashes no label values. A
// child is created on first use, as WithLabelValues would: a series that
// never happened does not appear. Safe for concurrent use.
type Series struct {
	m        *Metrics
	inbound  bool
	labels   []string // edgeLabels, then route
	edge     *telemetry.Edge
	duration atomic.Pointer[observer]
	codes    [len(commonCodes)]atomic.Pointer[counter]
}

type observer struct{ prometheus.Observer }

type counter struct{ prometheus.Counter }

// commonCodes are the status codes whose counters a Series keeps at hand.
var commonCodes = [...]int{200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 409, 429, 499, 500, 502, 503, 504}

func codeIndex(status int) int {
	switch status {
	case 200:
		return 0
	case 201:
		return 1
	case 204:
		return 2
	case 206:
		return 3
	case 301:
		return 4
	case 302:
		return 5
	case 304:
		return 6
	case 400:
		return 7
	case 401:
		return 8
	case 403:
		return 9
	case 404:
		return 10
	case 405:
		return 11
	case 409:
		return 12
	case 429:
		return 13
	case 499:
		return 14
	case 500:
		return 15
	case 502:
		return 16
	case 503:
		return 17
	case 504:
		return 18
	}
	return -1
}

// Series returns the request series of an edge under a route
// ("namespace/name" of the HTTPRoute that applied; "" for none). Callers
// keep it for as long as the edge and route are current.
func (m *Metrics) Series(e Edge, route string) *Series {
	return &Series{m: m, inbound: e.Direction == Inbound, labels: m.labels(e, route), edge: m.edge(e)}
}

// Observe counts one request with its final status code and duration in
// seconds, without its method and path (see ObserveHTTP).
func (s *Series) Observe(status int, seconds float64) {
	s.observe(status, seconds)
	s.edge.Request(telemetry.Request{Status: status, Seconds: seconds, Failed: status >= 500})
}

// DecisionHeader is the response header by which a proxy marks a refusal
// of its authorization policy or rate limit (tunnel.HeaderDecisionID).
const DecisionHeader = "Rampart-Decision-Id"

// ObserveHTTP counts one request r, answered with status (the code the
// proxy counts: a refusal's, for a gRPC refusal answered 200) after
// seconds, whose response carried header h. The response's
// DecisionHeader marks a refusal by authorization (403, or gRPC
// PERMISSION_DENIED) or a rate limit (429, or RESOURCE_EXHAUSTED); bytes
// are the bodies' declared Content-Length, where declared.
func (s *Series) ObserveHTTP(r *http.Request, h http.Header, status int, seconds float64) {
	s.observe(status, seconds)
	if s.edge == nil {
		return
	}
	t := telemetry.Request{Method: r.Method, Status: status, Seconds: seconds, Failed: status >= 500}
	if r.URL != nil {
		t.Path = r.URL.Path
	}
	if h[DecisionHeader] != nil {
		grpc := ""
		if v := h["Grpc-Status"]; len(v) > 0 {
			grpc = v[0]
		}
		t.Denied = status == http.StatusForbidden || grpc == "7"
		t.RateLimited = status == http.StatusTooManyRequests || grpc == "8"
	}
	var fromPeer, toPeer uint64
	if r.ContentLength > 0 {
		fromPeer = uint64(r.ContentLength) // inbound: the peer sent it
	}
	if v := h["Content-Length"]; len(v) > 0 {
		if n, err := strconv.ParseUint(v[0], 10, 63); err == nil {
			toPeer = n
		}
	}
	if !s.inbound {
		fromPeer, toPeer = toPeer, fromPeer
	}
	s.edge.Request(t)
	s.edge.Bytes(toPeer, fromPeer)
}

func (s *Series) observe(status int, seconds float64) {
	s.requests(status).Inc()
	d := s.duration.Load()
	if d == nil {
		d = &observer{s.m.RequestDuration.WithLabelValues(s.labels...)}
		s.duration.Store(d)
	}
	d.Observe(seconds)
}

func (s *Series) requests(status int) prometheus.Counter {
	i := codeIndex(status)
	if i < 0 {
		return s.m.Requests.WithLabelValues(append(s.labels[:len(s.labels):len(s.labels)], Code(status))...)
	}
	c := s.codes[i].Load()
	if c == nil {
		// Racing first requests create the same child: WithLabelValues
		// returns the one that exists.
		c = &counter{s.m.Requests.WithLabelValues(append(s.labels[:len(s.labels):len(s.labels)], Code(status))...)}
		s.codes[i].Store(c)
	}
	return c
}

// EdgeSeries holds the request series of one edge, one per route, each
// made on first use. Safe for concurrent use; looking a series up does
// not allocate.
type EdgeSeries struct {
	m      *Metrics
	edge   Edge
	plain  atomic.Pointer[Series]
	mu     sync.Mutex                            // serializes adding to routed
	routed atomic.Pointer[map[[2]string]*Series] // copied on write
}

// EdgeSeries returns the series of e.
func (m *Metrics) EdgeSeries(e Edge) *EdgeSeries { return &EdgeSeries{m: m, edge: e} }

// Route returns the series of the edge's requests that the HTTPRoute
// namespace/name applied to; ("", "") for requests no route applied to.
func (es *EdgeSeries) Route(namespace, name string) *Series {
	if namespace == "" && name == "" {
		s := es.plain.Load()
		if s == nil {
			s = es.m.Series(es.edge, "")
			if !es.plain.CompareAndSwap(nil, s) {
				s = es.plain.Load()
			}
		}
		return s
	}
	k := [2]string{namespace, name}
	if m := es.routed.Load(); m != nil {
		if s := (*m)[k]; s != nil {
			return s
		}
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	old := es.routed.Load()
	if old != nil {
		if s := (*old)[k]; s != nil {
			return s
		}
	}
	next := make(map[[2]string]*Series, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	s := es.m.Series(es.edge, namespace+"/"+name)
	next[k] = s
	es.routed.Store(&next)
	return s
}

// Child is one child of a CounterVec for fixed label values, created on
// first use (as WithLabelValues would: a series that never happened does
// not appear) and kept, so that counting hashes no label values. Safe for
// concurrent use.
type Child struct {
	vec    *prometheus.CounterVec
	labels []string
	c      atomic.Pointer[counter]
}

// NewChild returns the child of vec for labels, which it keeps.
func NewChild(vec *prometheus.CounterVec, labels ...string) *Child {
	return &Child{vec: vec, labels: labels}
}

// Inc counts one.
func (c *Child) Inc() {
	k := c.c.Load()
	if k == nil {
		// Racing first uses create the same child: WithLabelValues
		// returns the one that exists.
		k = &counter{c.vec.WithLabelValues(c.labels...)}
		c.c.Store(k)
	}
	k.Inc()
}

// Code renders an HTTP status code as a label value without allocating for
// common codes.
func Code(status int) string {
	if i := codeIndex(status); i >= 0 {
		return codeNames[i]
	}
	return strconv.Itoa(status)
}

var codeNames = func() (names [len(commonCodes)]string) {
	for i, c := range commonCodes {
		names[i] = strconv.Itoa(c)
	}
	return names
}()
