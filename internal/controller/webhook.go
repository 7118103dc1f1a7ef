package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-mesh/rampart/internal/insights"
)

// Bounds of the events webhook.
const (
	// WebhookQueue bounds the events waiting to be sent; when it is full,
	// the oldest is dropped (and counted) for the new one.
	WebhookQueue = 1000
	// WebhookTimeout bounds one attempt to deliver an event.
	WebhookTimeout = 5 * time.Second
	// WebhookAttempts bounds the attempts per event; they are
	// WebhookBackoff apart, then twice that.
	WebhookAttempts = 3
	WebhookBackoff  = 500 * time.Millisecond
)

// Results of rampart_controller_events_webhook_total.
const (
	WebhookDelivered = "delivered"
	WebhookFailed    = "failed"
	WebhookDropped   = "dropped"
)

// webhookConfig configures a webhook sink.
type webhookConfig struct {
	// URL receives a POST of each event's JSON; http or https.
	URL string
	// CAFile, when set, is a PEM bundle that verifies an https URL's
	// server instead of the system's roots.
	CAFile string
	// Backoff between attempts; zero means WebhookBackoff.
	Backoff    time.Duration
	Timeout    time.Duration // zero means WebhookTimeout
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// validateWebhookURL says what is wrong with a webhook URL.
func validateWebhookURL(raw, caFile string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("controller: events webhook %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("controller: events webhook %q: want an http:// or https:// URL", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("controller: events webhook %q: the URL names no host", raw)
	}
	if caFile != "" && u.Scheme != "https" {
		return fmt.Errorf("controller: events webhook CA %s is given for %q, which is not https: use an https URL or leave the CA out", caFile, raw)
	}
	return nil
}

// webhook posts events to a URL from a bounded queue, never blocking the
// caller of enqueue.
type webhook struct {
	url     string
	client  *http.Client
	backoff time.Duration
	logger  *slog.Logger
	results *prometheus.CounterVec

	mu    sync.Mutex
	queue []insights.Event // guarded by mu; oldest first
	wake  chan struct{}    // signalled by enqueue
}

// newWebhookResults makes the webhook's metric with its labels.
func newWebhookResults() *prometheus.CounterVec {
	cv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_events_webhook_total",
		Help: "Security events sent to --events-webhook, by result: delivered, failed (every attempt failed) or dropped (the queue of 1,000 was full; the oldest event is dropped).",
	}, []string{"result"})
	for _, r := range []string{WebhookDelivered, WebhookFailed, WebhookDropped} {
		cv.WithLabelValues(r)
	}
	return cv
}

// registerWebhookMetrics exports the webhook's metric at zero when there
// is no webhook, so that dashboards find it.
func registerWebhookMetrics(reg prometheus.Registerer) error {
	if err := reg.Register(newWebhookResults()); err != nil {
		return fmt.Errorf("controller: register webhook metrics: %w", err)
	}
	return nil
}

func newWebhook(cfg webhookConfig) (*webhook, error) {
	if err := validateWebhookURL(cfg.URL, cfg.CAFile); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("controller: events webhook CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("controller: events webhook CA %s holds no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	w := &webhook{
		url: cfg.URL,
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout,
			// A redirect could send events elsewhere: refused.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		backoff: cfg.Backoff,
		logger:  cfg.Logger,
		results: newWebhookResults(),
		wake:    make(chan struct{}, 1),
	}
	if w.client.Timeout == 0 {
		w.client.Timeout = WebhookTimeout
	}
	if w.backoff == 0 {
		w.backoff = WebhookBackoff
	}
	if w.logger == nil {
		w.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(w.results); err != nil {
			return nil, fmt.Errorf("controller: register webhook metrics: %w", err)
		}
	}
	return w, nil
}

// enqueue queues e for delivery, dropping the oldest queued event when
// the queue is full.
func (w *webhook) enqueue(e insights.Event) {
	w.mu.Lock()
	if len(w.queue) >= WebhookQueue {
		w.queue = w.queue[1:]
		w.results.WithLabelValues(WebhookDropped).Inc()
	}
	w.queue = append(w.queue, e)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest queued event.
func (w *webhook) next() (insights.Event, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return insights.Event{}, false
	}
	e := w.queue[0]
	w.queue[0] = insights.Event{}
	w.queue = w.queue[1:]
	return e, true
}

// Run delivers queued events, one at a time in order, until ctx ends;
// the events still queued then are not sent.
func (w *webhook) Run(ctx context.Context) error {
	for {
		e, ok := w.next()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-w.wake:
				continue
			}
		}
		w.deliver(ctx, e)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// deliver posts e, with up to WebhookAttempts attempts, and counts the
// result.
func (w *webhook) deliver(ctx context.Context, e insights.Event) {
	body, err := json.Marshal(e)
	if err != nil {
		w.results.WithLabelValues(WebhookFailed).Inc()
		w.logger.Error("security event not sent to the webhook", "id", e.ID, "error", err.Error())
		return
	}
	var last error
	wait := w.backoff
	for attempt := 1; attempt <= WebhookAttempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait *= 2
		}
		if last = w.post(ctx, body, e.ID); last == nil {
			w.results.WithLabelValues(WebhookDelivered).Inc()
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
	w.results.WithLabelValues(WebhookFailed).Inc()
	w.logger.Warn("security event not delivered to the webhook", "id", e.ID, "attempts", WebhookAttempts, "error", last.Error())
}

func (w *webhook) post(ctx context.Context, body []byte, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "rampart-controller")
	req.Header.Set("Rampart-Event-Id", id)
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errors.New("answered " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode))
	}
	return nil
}
