package controlplane

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// telemetryMetrics are the Telemetry service's series, and the count of
// open streams per identity they bound.
type telemetryMetrics struct {
	perIdentity *streamLimit

	reports *prometheus.CounterVec
	refused *prometheus.CounterVec
	skipped *prometheus.CounterVec
	// security counts the security counts of accepted reports skipped.
	security *prometheus.CounterVec
	streams  prometheus.Gauge
}

// newTelemetryMetrics makes the Telemetry service's series, and the size
// of g when it is set, and registers them with reg unless it is nil.
func newTelemetryMetrics(reg prometheus.Registerer, g *graph.Graph) (*telemetryMetrics, error) {
	m := &telemetryMetrics{
		perIdentity: newStreamLimit(MaxStreamsPerIdentity),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_telemetry_reports_total",
			Help: "Telemetry reports from proxies by result (accepted, dropped) and, for a dropped one, the reason.",
		}, []string{"result", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_telemetry_streams_refused_total",
			Help: "Telemetry report streams refused or ended by the controller, by reason (not_registered: the report names a workload the caller did not register; too_fast: over the report rate; too_many_streams: the identity holds the most streams one may).",
		}, []string{"reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_telemetry_request_counts_skipped_total",
			Help: "Per-route request counts skipped from accepted telemetry reports, by reason (too_many, bad_method, bad_path, bad_status_class); the rest of the report is kept.",
		}, []string{"reason"}),
		security: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_telemetry_security_skipped_total",
			Help: "Security counts (refused handshakes and plaintext) skipped from accepted telemetry reports, by reason (too_many, bad_kind, bad_peer_ip, bad_spiffe_id, bad_serial, bad_issuer, bad_port, bad_count); the rest of the report is kept.",
		}, []string{"reason"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_controller_telemetry_streams",
			Help: "Telemetry report streams open now.",
		}),
	}
	m.reports.WithLabelValues(ReportAccepted, "")
	for _, r := range reportReasons {
		m.reports.WithLabelValues(ReportDropped, r)
	}
	for _, r := range telemetryRefusals {
		m.refused.WithLabelValues(r)
	}
	for _, r := range skipReasons {
		m.skipped.WithLabelValues(r)
	}
	for _, r := range securitySkipReasons {
		m.security.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.reports, m.refused, m.skipped, m.security, m.streams}
	if g != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rampart_controller_telemetry_graph_instances",
				Help: "Workload instances the live traffic graph holds.",
			}, func() float64 { i, _, _ := g.Size(); return float64(i) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rampart_controller_telemetry_graph_edges",
				Help: "Edge series (one instance's view of one edge) the live traffic graph holds.",
			}, func() float64 { _, e, _ := g.Size(); return float64(e) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "rampart_controller_telemetry_graph_evicted_total",
				Help: "Instances and edge series evicted from the live traffic graph at its bounds (least recently reported first).",
			}, func() float64 { _, _, ev := g.Size(); return float64(ev) }),
		)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("controlplane: register telemetry metrics: %w", err)
		}
	}
	return m, nil
}
