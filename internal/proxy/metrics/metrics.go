// Package metrics defines the proxy's Prometheus series. One Metrics value
// is created per proxy and handed to the components that count.
//
// Label values are bounded: peer identities and services come from the
// mesh's configuration, status codes from HTTP, reasons from closed sets.
//
// It must not depend on Kubernetes packages.
package metrics

import (
	"net/http"
	"strconv"

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
	// ConfigRejected counts configurations received and refused.
	ConfigRejected prometheus.Counter
	// Detected counts connections classified by protocol detection.
	Detected *prometheus.CounterVec
	// Egress counts transparent connections to destinations outside the
	// mesh, by action (passthrough or refused).
	Egress *prometheus.CounterVec
	// Plaintext counts redirected inbound connections that arrived without
	// mTLS, by detected protocol and action.
	Plaintext *prometheus.CounterVec
}

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
		ConfigRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_proxy_config_rejected_total",
			Help: "Configurations received from the controller and refused as invalid; the last good one stays in force.",
		}),
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
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.RequestDuration, m.TCPConnections, m.TCPBytes, m.TLSRefusals,
		m.Refusals, m.SVIDExpiry, m.SVIDRenewals, m.ControlPlaneConnected,
		m.ConfigUpdates, m.ConfigRejected, m.Detected, m.Egress, m.Plaintext,
	)
	return m
}

// Code renders an HTTP status code as a label value without allocating for
// common codes.
func Code(status int) string {
	switch status {
	case 200:
		return "200"
	case 204:
		return "204"
	case 404:
		return "404"
	case 500:
		return "500"
	case 502:
		return "502"
	case 503:
		return "503"
	}
	return strconv.Itoa(status)
}

// StatusWriter records the status code of the response written through it.
type StatusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader implements http.ResponseWriter.
func (w *StatusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Code is the final status code written, 200 when none was written.
func (w *StatusWriter) Code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach Flush and friends.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
