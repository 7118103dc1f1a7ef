package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// Defaults of ReporterConfig.
const (
	DefaultInterval  = 5 * time.Second
	DefaultQueueSize = 12 // a minute of reports at the default interval
	// MinInterval is the shortest interval a Reporter takes.
	MinInterval = 10 * time.Millisecond
	// MinSentInterval and MaxSentInterval bound the interval a proxy is
	// configured with (--telemetry-interval): the controller accepts
	// reports of 1 s (less a ticker's jitter) to a minute, and its
	// windows assume reports at least every few seconds.
	MinSentInterval = time.Second
	MaxSentInterval = time.Minute
)

// ReporterConfig configures a Reporter.
type ReporterConfig struct {
	// Aggregator holds the edges to report. Required.
	Aggregator *Aggregator
	// Conn returns the proxy's current connection to the controller, or
	// nil while it has none. Required.
	Conn func() grpc.ClientConnInterface
	// Workload names the reporting workload instance.
	Workload string
	// Interval between reports; default DefaultInterval.
	Interval time.Duration
	// MaxEdges bounds the edges of a report; default DefaultMaxEdges.
	MaxEdges int
	// QueueSize bounds the reports waiting to be sent; when full the
	// oldest is dropped. Default DefaultQueueSize.
	QueueSize int
	// Sent, Dropped and OverflowEdges count reports sent, reports dropped
	// from a full queue, and edges folded into a report's overflow edge.
	// Nil counts nothing.
	Sent, Dropped, OverflowEdges prometheus.Counter
	// MinBackoff and MaxBackoff bound the wait before opening the stream
	// again after a failure; defaults 200ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger // nil discards
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Validate reports a setting out of range.
func (c *ReporterConfig) Validate() error {
	switch {
	case c.Aggregator == nil || c.Conn == nil:
		return errors.New("telemetry: aggregator and connection required")
	case c.Interval < 0 || (c.Interval > 0 && c.Interval < MinInterval):
		return fmt.Errorf("telemetry: interval %v out of range: want at least %v", c.Interval, MinInterval)
	case c.MaxEdges < 0 || c.QueueSize < 0:
		return errors.New("telemetry: edge and queue bounds must not be negative")
	case c.MinBackoff < 0 || c.MaxBackoff < 0 || (c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff):
		return fmt.Errorf("telemetry: backoff bounds %v to %v out of order", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// Reporter sends the aggregator's report of every interval over the
// Telemetry.Report client stream, opening it again with backoff when it
// fails.
type Reporter struct {
	cfg ReporterConfig
	log *slog.Logger

	mu      sync.Mutex
	queue   []*meshv1.TelemetryReport // guarded by mu; oldest first
	dropped uint64                    // guarded by mu; since start
	ready   chan struct{}             // signalled when a report is queued
}

// NewReporter returns a Reporter; Run starts it.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxEdges == 0 {
		cfg.MaxEdges = DefaultMaxEdges
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Reporter{cfg: cfg, log: cfg.Logger, ready: make(chan struct{}, 1)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// Run collects a report every interval and sends the queue until ctx ends.
func (r *Reporter) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.send(ctx)
	}()
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
			r.Tick()
		}
	}
}

// Tick collects the report of the interval that ends now and queues it.
// Run calls it every interval.
func (r *Reporter) Tick() {
	rep := r.cfg.Aggregator.Collect(r.cfg.Workload, r.cfg.Now(), r.cfg.MaxEdges)
	if rep.OverflowEdges > 0 && r.cfg.OverflowEdges != nil {
		r.cfg.OverflowEdges.Add(float64(rep.OverflowEdges))
	}
	if len(rep.GetEdges()) == 0 && len(rep.GetSecurity()) == 0 && rep.GetSecurityOverflow() == 0 {
		return // nothing happened: nothing to say
	}
	r.mu.Lock()
	if len(r.queue) >= r.cfg.QueueSize {
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.dropped++
		if r.cfg.Dropped != nil {
			r.cfg.Dropped.Inc()
		}
	}
	r.queue = append(r.queue, rep)
	r.mu.Unlock()
	select {
	case r.ready <- struct{}{}:
	default:
	}
}

// Queued returns how many reports wait to be sent.
func (r *Reporter) Queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// peek returns the oldest queued report, stamped with the drops so far.
func (r *Reporter) peek() *meshv1.TelemetryReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return nil
	}
	rep := r.queue[0]
	rep.DroppedReports = r.dropped
	return rep
}

// pop removes rep if it is still the oldest (a full queue may have
// dropped it meanwhile).
func (r *Reporter) pop(rep *meshv1.TelemetryReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) > 0 && r.queue[0] == rep {
		r.queue[0] = nil
		r.queue = r.queue[1:]
	}
}

// send keeps a stream open and sends the queue over it.
func (r *Reporter) send(ctx context.Context) {
	cur := time.Duration(0)
	for {
		err := r.stream(ctx, func() { cur = 0 })
		if ctx.Err() != nil {
			return
		}
		if cur == 0 {
			cur = r.cfg.MinBackoff
		} else {
			cur = min(2*cur, r.cfg.MaxBackoff)
		}
		wait := cur/2 + mrand.N(cur/2+1)
		if err != nil {
			r.log.Debug("telemetry stream ended; reports stay queued", "retry_in", wait.Round(time.Millisecond).String(), "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

var errNoConn = errors.New("telemetry: no connection to the controller")

// stream opens one Report stream once there is something to send, and
// sends over it until it fails or ctx ends; sent is called after each
// report that went out.
func (r *Reporter) stream(ctx context.Context, sent func()) error {
	// Open the stream only with a report in hand: an idle proxy keeps no
	// stream.
	if err := r.waitReport(ctx); err != nil {
		return nil
	}
	conn := r.cfg.Conn()
	if conn == nil {
		return errNoConn
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := meshv1.NewTelemetryClient(conn).Report(ctx)
	if err != nil {
		return err
	}
	for {
		if err := r.waitReport(ctx); err != nil {
			st.CloseSend()
			return nil
		}
		rep := r.peek()
		if err := st.Send(rep); err != nil {
			// The report stays queued for the next stream. A stream that
			// ended with the server's status says why.
			if _, rerr := st.CloseAndRecv(); rerr != nil {
				err = rerr
			}
			return err
		}
		r.pop(rep)
		if r.cfg.Sent != nil {
			r.cfg.Sent.Inc()
		}
		sent()
	}
}

// waitReport waits until a report is queued or ctx ends.
func (r *Reporter) waitReport(ctx context.Context) error {
	for {
		if r.Queued() > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.ready:
		}
	}
}
