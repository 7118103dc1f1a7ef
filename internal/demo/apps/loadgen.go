package apps

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Loadgen defaults.
const (
	// DefaultMaxInFlight bounds concurrent requests; a tick that finds
	// that many requests outstanding is skipped.
	DefaultMaxInFlight = 16
	// DefaultReportEvery is how often loadgen logs its counts.
	DefaultReportEvery = 30 * time.Second
)

// LoadgenConfig configures a Loadgen.
type LoadgenConfig struct {
	// Target is the URL to GET. Required.
	Target string
	// Rate is requests per second; zero means DefaultRate.
	Rate float64
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
	// MaxInFlight bounds concurrent requests; zero means
	// DefaultMaxInFlight.
	MaxInFlight int
	// ReportEvery is how often counts are logged; zero means
	// DefaultReportEvery.
	ReportEvery time.Duration
	// Client sends the requests; nil means a client of its own.
	Client *http.Client
	// Logger receives failures and reports; nil discards them.
	Logger *slog.Logger
}

// LoadgenStats counts what a Loadgen did.
type LoadgenStats struct {
	// Sent is requests started; OK answered 200; Failed failed or answered
	// anything else; Skipped ticks found MaxInFlight requests outstanding.
	Sent, OK, Failed, Skipped uint64
}

// Loadgen GETs a URL at a steady rate.
type Loadgen struct {
	cfg                       LoadgenConfig
	own                       *http.Transport // closed by Run when the client is ours
	sent, ok, failed, skipped atomic.Uint64
}

// NewLoadgen returns a Loadgen; Run starts it.
func NewLoadgen(cfg LoadgenConfig) *Loadgen {
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.ReportEvery <= 0 {
		cfg.ReportEvery = DefaultReportEvery
	}
	var own *http.Transport
	if cfg.Client == nil {
		own = newTransport()
		cfg.Client = &http.Client{Transport: own}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Loadgen{cfg: cfg, own: own}
}

// Stats returns the counts so far.
func (g *Loadgen) Stats() LoadgenStats {
	return LoadgenStats{Sent: g.sent.Load(), OK: g.ok.Load(), Failed: g.failed.Load(), Skipped: g.skipped.Load()}
}

// Run sends requests until ctx ends, waits for those in flight, and
// returns nil.
func (g *Loadgen) Run(ctx context.Context) error {
	interval := time.Duration(float64(time.Second) / g.cfg.Rate)
	if interval <= 0 {
		interval = time.Nanosecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	report := time.NewTicker(g.cfg.ReportEvery)
	defer report.Stop()

	if g.own != nil {
		defer g.own.CloseIdleConnections()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, g.cfg.MaxInFlight)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-report.C:
			s := g.Stats()
			g.cfg.Logger.Info("loadgen report", "target", g.cfg.Target, "sent", s.Sent, "ok", s.OK, "failed", s.Failed, "skipped", s.Skipped)
		case <-tick.C:
			select {
			case sem <- struct{}{}:
			default:
				g.skipped.Add(1)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				g.once(ctx)
			}()
		}
	}
}

// once sends one request.
func (g *Loadgen) once(parent context.Context) {
	g.sent.Add(1)
	ctx, cancel := context.WithTimeout(parent, g.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.cfg.Target, nil)
	if err != nil {
		g.failed.Add(1)
		g.cfg.Logger.Error("bad target", "target", g.cfg.Target, "err", err)
		return
	}
	resp, err := g.cfg.Client.Do(req)
	if err != nil {
		if parent.Err() != nil {
			return // shutting down: not a failure
		}
		g.failed.Add(1)
		g.cfg.Logger.Warn("request failed", "target", g.cfg.Target, "err", err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	switch {
	case err != nil:
		g.failed.Add(1)
		g.cfg.Logger.Warn("reading the answer failed", "target", g.cfg.Target, "err", err)
	case resp.StatusCode != http.StatusOK:
		g.failed.Add(1)
		g.cfg.Logger.Warn("request failed", "target", g.cfg.Target, "status", resp.StatusCode, "body", truncate(string(body), 300))
	default:
		g.ok.Add(1)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
