package controller

// This file runs the threat-detection engine (internal/insights) in the
// controller: it builds the engine on the state directory, feeds it from
// the control plane, applies the DetectionPolicy of the config directory,
// and sends each event to the sinks: the log, the event log
// (internal/insights/eventlog), the metrics and the optional webhook
// (webhook.go). It also answers GET /api/v1/events.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/insights/eventlog"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// Files in Config.StateDir of the insights engine.
const (
	// InsightsFile is the learnt baseline and the traffic ledger.
	InsightsFile = "insights.json"
	// EventsFile is the event log, one JSON event a line.
	EventsFile = "events.jsonl"
)

// Bounds of GET /api/v1/events.
const (
	// MaxEventsSince bounds the since parameter.
	MaxEventsSince = 7 * 24 * time.Hour
	// MaxEventsLimit bounds the limit parameter; DefaultEventsLimit is
	// what no limit means.
	MaxEventsLimit     = 1000
	DefaultEventsLimit = 100
)

// EventsResponse is the answer of GET /api/v1/events: events newest first.
type EventsResponse struct {
	Events []insights.Event `json:"events"`
}

// Insights is the threat-detection engine, for in-process callers.
func (c *Controller) Insights() *insights.Engine { return c.insights }

// Events is the event log, for in-process callers.
func (c *Controller) Events() *eventlog.Log { return c.events }

// initInsights opens the event log, registers the sinks' metrics, builds
// the webhook sink when Config.EventsWebhook is set and the engine with
// the DetectionPolicy of the config directory (DefaultPolicy without
// one). Call it after the config directory is loaded and before the
// control plane is built.
func (c *Controller) initInsights() error {
	c.detections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_detections_total",
		Help: "Security events detected, by detection, severity and action taken (Alert, Quarantine).",
	}, []string{"detection", "severity", "action"})
	for _, d := range insights.Detections {
		for _, s := range []insights.Severity{insights.SeverityLow, insights.SeverityMedium, insights.SeverityHigh, insights.SeverityCritical} {
			c.detections.WithLabelValues(string(d), string(s), string(insights.ActionAlert))
			c.detections.WithLabelValues(string(d), string(s), string(insights.ActionQuarantine))
		}
	}
	skipped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rampart_controller_event_log_skipped_total",
		Help: "Lines of the event log (events.jsonl in the state directory) skipped when the controller started because they were not a valid event.",
	})
	c.reg.MustRegister(c.detections, skipped)

	log, err := eventlog.Open(filepath.Join(c.cfg.StateDir, EventsFile), c.cfg.EventLogMax)
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	if n := log.Skipped(); n > 0 {
		skipped.Add(float64(n))
		c.logger.Warn("event log lines skipped: not a valid event", "file", filepath.Join(c.cfg.StateDir, EventsFile), "lines", n)
	}
	c.events = log

	if c.cfg.EventsWebhook != "" {
		wh, err := newWebhook(webhookConfig{
			URL: c.cfg.EventsWebhook, CAFile: c.cfg.EventsWebhookCA,
			Logger: c.logger.With("component", "events-webhook"), Registerer: c.reg,
		})
		if err != nil {
			log.Close()
			return err
		}
		c.webhook = wh
	} else if err := registerWebhookMetrics(c.reg); err != nil {
		log.Close()
		return err
	}

	pol := insights.DefaultPolicy()
	if res := c.resources.Load(); res != nil {
		p, err := c.detectionPolicy(res)
		if err != nil {
			log.Close()
			return configDirError(c.cfg.ConfigDir, err)
		}
		pol = p
	}
	engine, err := insights.New(insights.Config{
		Now:        c.cfg.Now,
		Policy:     pol,
		Store:      insights.NewFileStore(filepath.Join(c.cfg.StateDir, InsightsFile)),
		OnEvent:    c.onEvent,
		Quarantine: c.quarantineIdentity,
		Logger:     c.logger.With("component", "insights"),
	})
	if err != nil {
		log.Close()
		return fmt.Errorf("controller: %w", err)
	}
	c.insights = engine
	c.reg.MustRegister(insightsCollector{engine})
	c.logger.Info("detection policy in force", "learning_period", pol.LearningPeriod, "quarantine_duration", pol.QuarantineDuration,
		"exempt", len(pol.Exempt), "rules", len(pol.Rules))
	return nil
}

// detectionPolicy compiles the DetectionPolicy in force among res, and
// logs the ones that are not; without one, DefaultPolicy.
func (c *Controller) detectionPolicy(res *localconfig.Resources) (insights.Policy, error) {
	active, ignored := res.ActiveDetectionPolicy()
	for _, name := range ignored {
		c.logger.Warn("DetectionPolicy not in force: only the oldest in namespace "+v1alpha1.DetectionPolicyNamespace+" applies",
			"policy", name)
	}
	if active == nil {
		return insights.DefaultPolicy(), nil
	}
	pol, err := active.Compile()
	if err == nil {
		err = pol.Validate()
	}
	if err != nil {
		return insights.Policy{}, fmt.Errorf("DetectionPolicy %s/%s: %w", active.Namespace, active.Name, err)
	}
	return pol, nil
}

// checkDetectionPolicy compiles the DetectionPolicy of a reloaded config
// directory and returns the function that puts it in force, so that a
// reload is all or nothing.
func (c *Controller) checkDetectionPolicy(res *localconfig.Resources) (apply func(), err error) {
	pol, err := c.detectionPolicy(res)
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	return func() {
		if err := c.insights.SetPolicy(pol); err != nil {
			// Validated above: the engine refusing it is a bug.
			c.logger.Error("DetectionPolicy not put in force", "error", err.Error())
			return
		}
		c.logger.Info("detection policy in force", "learning_period", pol.LearningPeriod, "quarantine_duration", pol.QuarantineDuration,
			"exempt", len(pol.Exempt), "rules", len(pol.Rules))
	}, nil
}

// runInsights runs the engine and the webhook sink until ctx ends, then
// closes the event log.
func (c *Controller) runInsights(ctx context.Context) error {
	defer c.events.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.insights.Run(gctx) })
	if c.webhook != nil {
		g.Go(func() error { return c.webhook.Run(gctx) })
	}
	return g.Wait()
}

// onEvent sends e to every sink. The engine calls it from one goroutine
// at a time; nothing here blocks on the network.
func (c *Controller) onEvent(e insights.Event) {
	level := slog.LevelInfo
	if e.Severity == insights.SeverityHigh || e.Severity == insights.SeverityCritical {
		level = slog.LevelWarn
	}
	attrs := []any{"id", e.ID, "detection", string(e.Detection), "severity", string(e.Severity), "action", string(e.Action),
		"summary", e.Summary}
	if e.Source.SPIFFEID != "" {
		attrs = append(attrs, "source_spiffe_id", e.Source.SPIFFEID)
		if e.Source.Claimed {
			attrs = append(attrs, "source_claimed", true)
		}
	}
	if e.Source.IP != "" {
		attrs = append(attrs, "source_ip", e.Source.IP)
	}
	if d := e.Destination; d != nil && d.Workload != "" {
		attrs = append(attrs, "destination", d.Namespace+"/"+d.Workload)
	}
	if e.QuarantinedUntil != nil {
		attrs = append(attrs, "quarantined_until", e.QuarantinedUntil.UTC().Format(time.RFC3339))
	}
	c.logger.Log(context.Background(), level, "security event", attrs...)
	c.detections.WithLabelValues(string(e.Detection), string(e.Severity), string(e.Action)).Inc()
	if err := c.events.Append(e); err != nil {
		c.logger.Error("security event not written to the event log", "id", e.ID, "error", err.Error())
	}
	if c.webhook != nil {
		c.webhook.enqueue(e)
	}
}

// eventsParams are the query parameters GET /api/v1/events accepts.
var eventsParams = []string{"since", "detection", "limit"}

// parseEventsQuery validates the query of GET /api/v1/events at now; the
// error names the parameter to fix.
func parseEventsQuery(q map[string][]string, now time.Time) (eventlog.Query, error) {
	var out eventlog.Query
	for k, vs := range q {
		if !slices.Contains(eventsParams, k) {
			return out, fmt.Errorf("unknown query parameter %q: want %s", k, strings.Join(eventsParams, ", "))
		}
		if len(vs) > 1 {
			return out, fmt.Errorf("query parameter %q given %d times: give it once", k, len(vs))
		}
	}
	get := func(k string) string {
		if vs := q[k]; len(vs) == 1 {
			return vs[0]
		}
		return ""
	}
	if s := get("since"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > MaxEventsSince {
			return out, fmt.Errorf("query parameter since %q: want a duration from 1s to %v, such as 15m, 1h or 24h", s, MaxEventsSince)
		}
		out.Since = now.Add(-d)
	}
	if s := get("detection"); s != "" {
		if !slices.Contains(insights.Detections, insights.Detection(s)) {
			names := make([]string, len(insights.Detections))
			for i, d := range insights.Detections {
				names[i] = string(d)
			}
			return out, fmt.Errorf("query parameter detection %q: want one of %s", s, strings.Join(names, ", "))
		}
		out.Detection = insights.Detection(s)
	}
	out.Limit = DefaultEventsLimit
	if s := get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxEventsLimit {
			return out, fmt.Errorf("query parameter limit %q: want a number from 1 to %d", s, MaxEventsLimit)
		}
		out.Limit = n
	}
	return out, nil
}

// serveEvents answers GET /api/v1/events: the event log's events, newest
// first.
func (c *Controller) serveEvents(w http.ResponseWriter, r *http.Request) {
	q, err := parseEventsQuery(r.URL.Query(), c.cfg.Now())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, EventsResponse{Events: c.events.List(q)})
}

// insightsCollector exports the engine's Stats at each scrape: the
// baseline's size, and every observation, event or quarantine the engine
// dropped or refused, by reason, so that an engine at its bounds (or one
// a proxy floods) shows on a dashboard rather than only in the log.
type insightsCollector struct{ e *insights.Engine }

var (
	insightsLearningDesc = prometheus.NewDesc("rampart_controller_insights_learning",
		"1 while the baseline is being learnt, 0 once learning has ended.", nil, nil)
	insightsBaselineDesc = prometheus.NewDesc("rampart_controller_insights_baseline_size",
		"Size of the learnt baseline, by what (workloads, callers).", []string{"what"}, nil)
	insightsDroppedDesc = prometheus.NewDesc("rampart_controller_insights_dropped_total",
		"Observations and events the insights engine dropped at a bound, by reason: workloads, callers, routes, tracker, ledger (global bounds); tracker_share, baseline_share, names (a reporter's or identity's share used up); baseline_routes; events_pending, events_rate_limited (a reporter's event bucket empty); events_suppressed (repeats within the window).",
		[]string{"reason"}, nil)
	insightsQuarantinesDesc = prometheus.NewDesc("rampart_controller_insights_quarantines_total",
		"Quarantines asked for by detections, by result: made, failed (the store refused), uncorroborated (the source's own proxy did not report the traffic the event rests on: the event stays an alert).",
		[]string{"result"}, nil)
	insightsStateDesc = prometheus.NewDesc("rampart_controller_insights_state_errors_total",
		"Errors loading (learning then starts afresh) or saving the insights state (insights.json), by operation.",
		[]string{"op"}, nil)
)

func (insightsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{insightsLearningDesc, insightsBaselineDesc, insightsDroppedDesc, insightsQuarantinesDesc, insightsStateDesc} {
		ch <- d
	}
}

func (ic insightsCollector) Collect(ch chan<- prometheus.Metric) {
	s := ic.e.Stats()
	learning := 0.0
	if s.Learning {
		learning = 1
	}
	ch <- prometheus.MustNewConstMetric(insightsLearningDesc, prometheus.GaugeValue, learning)
	ch <- prometheus.MustNewConstMetric(insightsBaselineDesc, prometheus.GaugeValue, float64(s.Workloads), "workloads")
	ch <- prometheus.MustNewConstMetric(insightsBaselineDesc, prometheus.GaugeValue, float64(s.Callers), "callers")
	for reason, n := range map[string]uint64{
		"workloads": s.WorkloadsOverflow, "callers": s.CallersOverflow, "routes": s.RoutesOverflow,
		"tracker": s.TrackerOverflow, "ledger": s.LedgerOverflow,
		"tracker_share": s.TrackerShareOverflow, "baseline_share": s.BaselineShareOverflow, "names": s.NamesOverflow,
		"baseline_routes": s.BaselineRoutesOverflow,
		"events_pending":  s.DroppedEvents, "events_rate_limited": s.RateLimitedEvents, "events_suppressed": s.Suppressed,
	} {
		ch <- prometheus.MustNewConstMetric(insightsDroppedDesc, prometheus.CounterValue, float64(n), reason)
	}
	for result, n := range map[string]uint64{"made": s.Quarantined, "failed": s.QuarantineErrors, "uncorroborated": s.Uncorroborated} {
		ch <- prometheus.MustNewConstMetric(insightsQuarantinesDesc, prometheus.CounterValue, float64(n), result)
	}
	ch <- prometheus.MustNewConstMetric(insightsStateDesc, prometheus.CounterValue, float64(s.LoadErrors), "load")
	ch <- prometheus.MustNewConstMetric(insightsStateDesc, prometheus.CounterValue, float64(s.SaveErrors), "save")
}
