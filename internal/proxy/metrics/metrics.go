// Package metrics defines the proxy's Prometheus series. One Metrics value
// is created per proxy and handed to the components that count.
//
// Label values are bounded: peer identities and services come from the
// mesh's configuration, status codes from HTTP, reasons from closed sets,
// policy, rule and limit names from the authorization policy in force,
// never from a request.
//
// It must not depend on Kubernetes packages.
package metrics

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Directions.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Metrics is every series the proxy exports.
type Metrics struct {
	Registry *prometheus.Registry

	// Requests counts HTTP requests by direction, peer identity, service
	// and response status code.
	Requests *prometheus.CounterVec
	// RequestDuration observes time to the end of the response.
	RequestDuration *prometheus.HistogramVec
	// TCPConnections counts opaque TCP connections carried.
	TCPConnections *prometheus.CounterVec
	// TCPBytes counts bytes carried by opaque TCP connections, by flow.
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
	// mesh, by action (passthrough or refused).
	Egress *prometheus.CounterVec
	// Plaintext counts redirected inbound connections that arrived without
	// mTLS, by detected protocol and action.
	Plaintext *prometheus.CounterVec
	// AuthzDecisions counts authorization decisions on inbound requests
	// and streams, by decision (allow or deny), code, and the policy and
	// rule that decided ("" for none).
	AuthzDecisions *prometheus.CounterVec
	// AuthzAudits counts the AUDIT rules that matched, by policy and rule.
	AuthzAudits *prometheus.CounterVec
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

	ejected ejectedCollector
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

// New creates the series on a fresh registry with Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_requests_total",
			Help: "HTTP requests proxied, by direction, peer SPIFFE ID, service and response status code.",
		}, []string{"direction", "peer_id", "service", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rampart_proxy_request_duration_seconds",
			Help:    "Time from receiving a request to the end of its response.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"direction", "peer_id", "service"}),
		TCPConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tcp_connections_total",
			Help: "Opaque TCP connections carried, by direction, peer SPIFFE ID and service.",
		}, []string{"direction", "peer_id", "service"}),
		TCPBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tcp_bytes_total",
			Help: "Bytes carried on opaque TCP connections; flow is sent (towards the peer) or received.",
		}, []string{"direction", "peer_id", "service", "flow"}),
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
			Help: "Intercepted connections to destinations outside the mesh, by action (passthrough or refused).",
		}, []string{"action"}),
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
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.RequestDuration, m.TCPConnections, m.TCPBytes, m.TLSRefusals,
		m.Refusals, m.SVIDExpiry, m.SVIDRenewals, m.ControlPlaneConnected,
		m.ConfigUpdates, m.ConfigRejected, m.Detected, m.Egress, m.Plaintext,
		m.AuthzDecisions, m.AuthzAudits, m.RateLimited, m.Retries, m.Ejections, &m.ejected,
	)
	return m
}

// Series counts the requests of one direction, peer and service. It
// holds the children of Requests and RequestDuration once they exist, so
// that counting a request hashes no label values. A child is created on
// first use, as WithLabelValues would: a series that never happened does
// not appear. Safe for concurrent use.
type Series struct {
	m                        *Metrics
	direction, peer, service string
	duration                 atomic.Pointer[observer]
	codes                    [len(commonCodes)]atomic.Pointer[counter]
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

// Series returns the request series of one direction, peer and service.
// Callers keep it for as long as the peer and service are current.
func (m *Metrics) Series(direction, peer, service string) *Series {
	return &Series{m: m, direction: direction, peer: peer, service: service}
}

// Observe counts one request with its final status code and duration in
// seconds.
func (s *Series) Observe(status int, seconds float64) {
	s.requests(status).Inc()
	d := s.duration.Load()
	if d == nil {
		d = &observer{s.m.RequestDuration.WithLabelValues(s.direction, s.peer, s.service)}
		s.duration.Store(d)
	}
	d.Observe(seconds)
}

func (s *Series) requests(status int) prometheus.Counter {
	i := codeIndex(status)
	if i < 0 {
		return s.m.Requests.WithLabelValues(s.direction, s.peer, s.service, Code(status))
	}
	c := s.codes[i].Load()
	if c == nil {
		// Racing first requests create the same child: WithLabelValues
		// returns the one that exists.
		c = &counter{s.m.Requests.WithLabelValues(s.direction, s.peer, s.service, Code(status))}
		s.codes[i].Store(c)
	}
	return c
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
