package controller

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/insights/eventlog"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

func testEvent(i int, d insights.Detection, at time.Time) insights.Event {
	return insights.Event{
		ID: fmt.Sprintf("%016x", i), Time: at, Detection: d, Severity: insights.SeverityHigh,
		Source:  insights.Party{SPIFFEID: "spiffe://rampart.local/ns/shop/sa/web", Namespace: "shop", Workload: "web"},
		Summary: "test", Action: insights.ActionAlert,
	}
}

// TestEventsAPI: onEvent feeds the event log, the metric and the API,
// which validates its query and counts refusals.
func TestEventsAPI(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	c, err := New(Config{StateDir: t.TempDir(), AdminListen: "off", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.events.Close() })
	c.onEvent(testEvent(1, insights.RouteScan, now.Add(-2*time.Hour)))
	c.onEvent(testEvent(2, insights.NewEdge, now.Add(-30*time.Minute)))
	c.onEvent(testEvent(3, insights.RouteScan, now.Add(-time.Minute)))
	if got := testutil.ToFloat64(c.detections.WithLabelValues("route_scan", "high", "Alert")); got != 2 {
		t.Errorf("rampart_controller_detections_total{route_scan,high,Alert} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.detections.WithLabelValues("code_changed", "critical", "Quarantine")); got != 0 {
		t.Errorf("pre-created series = %v, want 0", got)
	}
	fi, err := os.Stat(filepath.Join(c.cfg.StateDir, EventsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("event log: %v, %v; want mode 0600", fi, err)
	}

	srv := httptest.NewServer(c.adminHandler())
	t.Cleanup(srv.Close)
	tests := []struct {
		query   string
		code    int
		wantIDs []string
		wantErr string
	}{
		{"", 200, []string{"0000000000000003", "0000000000000002", "0000000000000001"}, ""},
		{"?since=1h", 200, []string{"0000000000000003", "0000000000000002"}, ""},
		{"?detection=route_scan", 200, []string{"0000000000000003", "0000000000000001"}, ""},
		{"?limit=1", 200, []string{"0000000000000003"}, ""},
		{"?since=1h&detection=tls_unknown_ca", 200, []string{}, ""},
		{"?since=200h", 400, nil, "query parameter since"},
		{"?since=-1h", 400, nil, "query parameter since"},
		{"?since=soon", 400, nil, "query parameter since"},
		{"?detection=port_scan", 400, nil, "want one of new_edge, rate_spike"},
		{"?limit=0", 400, nil, "want a number from 1 to 1000"},
		{"?limit=1001", 400, nil, "want a number from 1 to 1000"},
		{"?limit=1&limit=2", 400, nil, "given 2 times"},
		{"?severity=high", 400, nil, `unknown query parameter \"severity\"`},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, err := http.Get(srv.URL + "/api/v1/events" + tt.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.code, body)
			}
			if tt.code != 200 {
				if !strings.Contains(string(body), tt.wantErr) {
					t.Errorf("body %s, want %q", body, tt.wantErr)
				}
				return
			}
			var got EventsResponse
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			ids := []string{}
			for _, e := range got.Events {
				ids = append(ids, e.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.wantIDs, ",") {
				t.Errorf("events %v, want %v", ids, tt.wantIDs)
			}
		})
	}
	refused := 0.0
	for _, code := range []string{"400"} {
		refused += testutil.ToFloat64(c.trafficAPIRefused().WithLabelValues("events", code))
	}
	if refused != 8 {
		t.Errorf("refusals counted %v, want 8", refused)
	}
}

// TestDetectionPolicyFromConfigDir: a controller starts with the
// DetectionPolicy of its config directory and refuses a bad one.
func TestDetectionPolicyFromConfigDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "detection.yaml"), `apiVersion: rampart.dev/v1alpha1
kind: DetectionPolicy
metadata:
  name: mesh
  namespace: rampart-system
spec:
  quarantineDuration: 1s
`)
	_, err := New(Config{StateDir: t.TempDir(), ConfigDir: dir, AdminListen: "off"})
	if err == nil || !strings.Contains(err.Error(), "spec.quarantineDuration") {
		t.Fatalf("New = %v, want the bad quarantineDuration reported", err)
	}
	writeFile(t, filepath.Join(dir, "detection.yaml"), `apiVersion: rampart.dev/v1alpha1
kind: DetectionPolicy
metadata:
  name: mesh
  namespace: rampart-system
spec:
  quarantineDuration: 5m
  detections:
    newEdge:
      disabled: true
`)
	c, err := New(Config{StateDir: t.TempDir(), ConfigDir: dir, AdminListen: "off"})
	if err != nil {
		t.Fatal(err)
	}
	c.events.Close()
	if c.Insights() == nil {
		t.Fatal("no engine")
	}
}

// webhookEnv is a webhook sink delivering to an httptest server whose
// answers the test sets.
type webhookEnv struct {
	w    *webhook
	reg  *prometheus.Registry
	mu   sync.Mutex
	got  []insights.Event
	fail int // answer 503 to this many requests first
	hold chan struct{}
}

func newWebhookEnv(t *testing.T, tlsServer bool) (*webhookEnv, *httptest.Server) {
	t.Helper()
	e := &webhookEnv{reg: prometheus.NewRegistry()}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.hold != nil {
			<-e.hold
		}
		var ev insights.Event
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&ev) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.fail > 0 {
			e.fail--
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		e.got = append(e.got, ev)
	})
	srv := httptest.NewUnstartedServer(h)
	// The handshakes a test makes fail on purpose are not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsServer {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return e, srv
}

func (e *webhookEnv) start(t *testing.T, cfg webhookConfig) {
	t.Helper()
	cfg.Registerer, cfg.Backoff = e.reg, time.Millisecond
	w, err := newWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.w = w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (e *webhookEnv) result(r string) float64 {
	return testutil.ToFloat64(e.w.results.WithLabelValues(r))
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebhookDelivers(t *testing.T) {
	e, srv := newWebhookEnv(t, false)
	e.fail = 2 // the third attempt succeeds
	e.start(t, webhookConfig{URL: srv.URL + "/hook"})
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	e.w.enqueue(testEvent(1, insights.RouteScan, at))
	e.w.enqueue(testEvent(2, insights.NewEdge, at))
	waitUntil(t, "two deliveries", func() bool { return e.result(WebhookDelivered) == 2 })
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.got) != 2 || e.got[0].ID != "0000000000000001" || e.got[1].Detection != insights.NewEdge {
		t.Errorf("received %+v, want both events in order", e.got)
	}
	if f := e.result(WebhookFailed); f != 0 {
		t.Errorf("failed = %v, want 0", f)
	}
}

func TestWebhookFailsAfterAttempts(t *testing.T) {
	e, srv := newWebhookEnv(t, false)
	e.fail = WebhookAttempts + 1 // the first event fails, the second is delivered
	e.start(t, webhookConfig{URL: srv.URL})
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	e.w.enqueue(testEvent(1, insights.RouteScan, at))
	e.w.enqueue(testEvent(2, insights.RouteScan, at))
	waitUntil(t, "one failure and one delivery", func() bool {
		return e.result(WebhookFailed) == 1 && e.result(WebhookDelivered) == 1
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.got) != 1 || e.got[0].ID != "0000000000000002" {
		t.Errorf("received %+v, want only the second event", e.got)
	}
}

// TestWebhookQueueDropsOldest: while the receiver hangs, enqueue never
// blocks, and past the queue's bound the oldest events are dropped.
func TestWebhookQueueDropsOldest(t *testing.T) {
	e, srv := newWebhookEnv(t, false)
	e.hold = make(chan struct{})
	e.start(t, webhookConfig{URL: srv.URL})
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	e.w.enqueue(testEvent(1, insights.DenialBurst, at))
	// The first event is in flight, held by the server; the queue fills.
	waitUntil(t, "the first event in flight", func() bool {
		e.w.mu.Lock()
		defer e.w.mu.Unlock()
		return len(e.w.queue) == 0
	})
	const extra = 5
	for i := range WebhookQueue + extra {
		e.w.enqueue(testEvent(i+2, insights.DenialBurst, at))
	}
	if d := e.result(WebhookDropped); d != extra {
		t.Errorf("dropped = %v, want %d", d, extra)
	}
	close(e.hold)
	waitUntil(t, "the queue delivered", func() bool { return e.result(WebhookDelivered) == WebhookQueue+1 })
	e.mu.Lock()
	defer e.mu.Unlock()
	if first := e.got[1].ID; first != fmt.Sprintf("%016x", extra+2) {
		t.Errorf("first queued event delivered is %s, want %016x (the oldest ones dropped)", first, extra+2)
	}
}

// TestWebhookTLS: an https webhook is verified against --events-webhook-ca
// (or the system's roots, which do not know the test server).
func TestWebhookTLS(t *testing.T) {
	e, srv := newWebhookEnv(t, true)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	var pemData strings.Builder
	for _, c := range srv.TLS.Certificates[0].Certificate {
		pemData.WriteString("-----BEGIN CERTIFICATE-----\n")
		pemData.WriteString(wrap64(c))
		pemData.WriteString("-----END CERTIFICATE-----\n")
	}
	writeFile(t, caFile, pemData.String())
	e.start(t, webhookConfig{URL: srv.URL, CAFile: caFile})
	e.w.enqueue(testEvent(1, insights.UnknownCA, time.Now()))
	waitUntil(t, "a delivery over TLS", func() bool { return e.result(WebhookDelivered) == 1 })

	untrusted, srv2 := newWebhookEnv(t, true)
	untrusted.start(t, webhookConfig{URL: srv2.URL})
	untrusted.w.enqueue(testEvent(1, insights.UnknownCA, time.Now()))
	waitUntil(t, "a failure against the system roots", func() bool { return untrusted.result(WebhookFailed) == 1 })
}

func wrap64(der []byte) string {
	var b strings.Builder
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 64 {
		b.WriteString(enc[:64] + "\n")
		enc = enc[64:]
	}
	b.WriteString(enc + "\n")
	return b.String()
}

func TestWebhookConfigRefusals(t *testing.T) {
	for _, tt := range []struct{ url, ca, want string }{
		{"ftp://x.example/hook", "", "want an http:// or https:// URL"},
		{"http:///hook", "", "names no host"},
		{"http://x.example/hook", "ca.pem", "not https"},
		{"://", "", "events webhook"},
	} {
		err := Config{StateDir: "s", EventsWebhook: tt.url, EventsWebhookCA: tt.ca}.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q, %q: Validate = %v, want %q", tt.url, tt.ca, err, tt.want)
		}
	}
	if err := (Config{StateDir: "s", EventsWebhookCA: "ca.pem"}).Validate(); err == nil {
		t.Error("a webhook CA without a webhook was accepted")
	}
	if _, err := newWebhook(webhookConfig{URL: "https://x.example", CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

// TestEngineEventsReachSinks: an event the engine raises from what the
// control plane observes reaches the event log, the metric and the
// webhook, and survives a restart of the controller.
func TestEngineEventsReachSinks(t *testing.T) {
	hook, srv := newWebhookEnv(t, false)
	state := t.TempDir()
	c, err := New(Config{StateDir: state, AdminListen: "off", EventsWebhook: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.runInsights(ctx) }()

	reporter := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/api")
	claimed := spiffeid.RequireFromString("spiffe://evil.example/ns/shop/sa/web")
	c.Insights().ObserveSecurity([]insights.SecurityObservation{{
		Reporter: reporter, Namespace: "shop", Workload: "api", Kind: insights.TLSUnknownCA,
		PeerIP: "10.0.0.9", PresentedID: claimed, Serial: "0a1b", Issuer: "CN=Evil CA", Port: 15008, Count: 3,
	}})
	waitUntil(t, "the event in the log", func() bool { return c.Events().Len() == 1 })
	ev := c.Events().List(eventlog.Query{})[0]
	if ev.Detection != insights.UnknownCA || ev.Source.SPIFFEID != claimed.String() || !ev.Source.Claimed {
		t.Errorf("event %+v, want tls_unknown_ca from the claimed identity", ev)
	}
	if got := testutil.ToFloat64(c.detections.WithLabelValues(string(ev.Detection), string(ev.Severity), string(ev.Action))); got != 1 {
		t.Errorf("detections_total = %v, want 1", got)
	}
	waitUntil(t, "the webhook delivery", func() bool {
		hook.mu.Lock()
		defer hook.mu.Unlock()
		return len(hook.got) == 1
	})
	hook.mu.Lock()
	if hook.got[0].ID != ev.ID {
		t.Errorf("webhook received %s, want %s", hook.got[0].ID, ev.ID)
	}
	hook.mu.Unlock()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("runInsights: %v", err)
	}

	c2, err := New(Config{StateDir: state, AdminListen: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Events().Close()
	if got := c2.Events().List(eventlog.Query{}); len(got) != 1 || got[0].ID != ev.ID {
		t.Errorf("after a restart the event log holds %+v, want event %s", got, ev.ID)
	}
}

// TestInsightsMetrics checks that the engine's own figures reach
// /metrics: learning, and a quarantine a detection asked for but the
// source's own proxy did not corroborate (an inbound report alone names
// web as the source of a denial burst).
func TestInsightsMetrics(t *testing.T) {
	c, err := New(Config{StateDir: t.TempDir(), AdminListen: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Events().Close()
	pol := insights.DefaultPolicy()
	r := pol.Rules[insights.DenialBurst]
	r.Action = insights.ActionQuarantine
	pol.Rules[insights.DenialBurst] = r
	if err := c.Insights().SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	api := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/api")
	web := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/web")
	c.Insights().ObserveReport(graph.Report{
		Instance: "api-0", ID: api, Namespace: "shop", Workload: "api", Interval: 5 * time.Second,
		Edges: []graph.EdgeReport{{
			Direction: graph.Inbound, PeerID: web, PeerWorkload: "web", MTLS: true,
			Counts: graph.Counts{Requests: 25, Denied: 25},
		}},
	})
	want := `
# HELP rampart_controller_insights_learning 1 while the baseline is being learnt, 0 once learning has ended.
# TYPE rampart_controller_insights_learning gauge
rampart_controller_insights_learning 1
`
	if err := testutil.GatherAndCompare(c.Registry(), strings.NewReader(want), "rampart_controller_insights_learning"); err != nil {
		t.Error(err)
	}
	waitUntil(t, "the uncorroborated quarantine counted", func() bool {
		mfs, err := c.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "rampart_controller_insights_quarantines_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetValue() == "uncorroborated" && m.GetCounter().GetValue() == 1 {
						return true
					}
				}
			}
		}
		return false
	})
	if _, err := os.Stat(c.QuarantinePath()); err == nil {
		t.Error("an uncorroborated detection wrote the quarantine list")
	}
}
