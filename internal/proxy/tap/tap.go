// Package tap is the proxy's side of `rampart tap`: it keeps the
// Telemetry.Tap stream to the controller open, takes the taps the
// controller starts and stops on it, and sends the heads of the requests
// that match a tap's filter (direction, method, authority, path without
// the query, identities, status, duration, header names with the values of
// a short allow-list), never a body.
//
// It costs one atomic load per request while no tap is active. Every tap is
// bounded: by its event count and duration, by a rate of events per second,
// and by a bounded queue towards the controller; what does not fit is
// dropped and counted, never waited for. It depends on internal/meshapi
// only, like the rest of the proxy.
package tap

import (
	"context"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// Defaults of Config.
const (
	// DefaultMaxTaps bounds the taps active at once on one proxy.
	DefaultMaxTaps = 4
	// DefaultRate bounds the events per second of one tap.
	DefaultRate = 100
	// DefaultQueueSize bounds the events waiting to be sent.
	DefaultQueueSize = 256
)

// Bounds on what an event carries.
const (
	maxHeaders  = 64
	maxValueLen = 256
	maxFieldLen = 256
)

// allowed are the headers whose values a tap carries; of any other header
// it carries the name only.
var allowed = map[string]bool{"Content-Type": true, "User-Agent": true, "Grpc-Status": true}

// Labels of rampart_proxy_tap_commands_total and rampart_proxy_tap_dropped_total.
const (
	CommandStarted = "started"
	CommandStopped = "stopped"
	CommandInvalid = "invalid"
	CommandTooMany = "too_many"

	DropRate  = "rate_limited"
	DropQueue = "queue_full"
)

// Config configures a Tapper.
type Config struct {
	// Conn returns the proxy's current connection to the controller, or
	// nil while it has none. Required.
	Conn func() grpc.ClientConnInterface
	// Workload names this instance, as registered with Watch. Required.
	Workload string
	// Self is this proxy's SPIFFE ID: the destination of inbound
	// requests, the source of outbound ones.
	Self string
	// MaxTaps, Rate and QueueSize: defaults DefaultMaxTaps, DefaultRate
	// and DefaultQueueSize.
	MaxTaps, Rate, QueueSize int
	// Registerer receives the tap's series; nil registers them nowhere.
	Registerer prometheus.Registerer
	// MinBackoff and MaxBackoff bound the wait before opening the stream
	// again; defaults 200ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger // nil discards
	Now                    func() time.Time
}

// Validate reports a missing or out-of-range setting.
func (c *Config) Validate() error {
	switch {
	case c.Conn == nil || c.Workload == "":
		return errors.New("tap: connection and workload required")
	case c.MaxTaps < 0 || c.Rate < 0 || c.QueueSize < 0:
		return errors.New("tap: bounds must not be negative")
	case c.MinBackoff < 0 || c.MaxBackoff < 0:
		return errors.New("tap: backoff must not be negative")
	}
	return nil
}

// Tapper holds the taps in force on one proxy. Its methods are safe for
// concurrent use; a nil *Tapper taps nothing.
type Tapper struct {
	cfg Config
	log *slog.Logger

	// active is true while any tap is; the request path reads nothing
	// else when it is false.
	active atomic.Bool
	// taps is the list Observe reads, replaced on every change.
	taps atomic.Pointer[[]*tap]

	mu       sync.Mutex
	byID     map[string]*tap    // guarded by mu
	finished []*meshv1.TapEvent // guarded by mu: ended events to send

	out  chan *meshv1.TapEvent
	wake chan struct{}

	activeGauge prometheus.Gauge
	commands    *prometheus.CounterVec
	sent        prometheus.Counter
	dropped     *prometheus.CounterVec
}

// tap is one active tap.
type tap struct {
	spec  Spec
	timer *time.Timer

	mu      sync.Mutex
	queued  int       // guarded by mu
	dropped uint64    // guarded by mu
	tokens  float64   // guarded by mu
	last    time.Time // guarded by mu
	ended   bool      // guarded by mu
}

// New returns a Tapper; Run keeps its stream open.
func New(cfg Config) (*Tapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxTaps == 0 {
		cfg.MaxTaps = DefaultMaxTaps
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Tapper{
		cfg:  cfg,
		log:  cfg.Logger,
		byID: map[string]*tap{},
		out:  make(chan *meshv1.TapEvent, cfg.QueueSize),
		wake: make(chan struct{}, 1),
		activeGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_proxy_tap_active",
			Help: "Taps (rampart tap) active on this proxy.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tap_commands_total",
			Help: "Tap commands from the controller by result: started, stopped, invalid (refused, with the field at fault), too_many (over the proxy's bound of taps at once).",
		}, []string{"result"}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_proxy_tap_events_total",
			Help: "Request heads sent to the controller for taps.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tap_dropped_total",
			Help: "Request heads that matched a tap and were not sent, by reason: rate_limited (over the tap's events per second), queue_full (the stream to the controller was slow).",
		}, []string{"reason"}),
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range []string{CommandStarted, CommandStopped, CommandInvalid, CommandTooMany} {
		t.commands.WithLabelValues(r)
	}
	t.dropped.WithLabelValues(DropRate)
	t.dropped.WithLabelValues(DropQueue)
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{t.activeGauge, t.commands, t.sent, t.dropped} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// Active reports whether any tap is active: the request path's check
// before it calls Observe.
func (t *Tapper) Active() bool { return t != nil && t.active.Load() }

// Observe offers one request to the active taps: r as received, its
// response's header h, the status counted, and its duration. peer is the
// other side's SPIFFE ID ("" for none); inbound says this proxy received
// the request. It never blocks.
func (t *Tapper) Observe(inbound bool, peer string, r *http.Request, h http.Header, status int, d time.Duration) {
	if !t.Active() {
		return
	}
	taps := t.taps.Load()
	if taps == nil {
		return
	}
	src, dst := t.cfg.Self, peer
	if inbound {
		src, dst = peer, t.cfg.Self
	}
	path := ""
	if r.URL != nil {
		path = r.URL.Path
	}
	now := t.cfg.Now()
	var req *meshv1.TapRequest
	for _, tp := range *taps {
		if !tp.spec.Filter.Match(r.Method, path, src, status) {
			continue
		}
		ok, last := tp.admit(now, t.cfg.Rate)
		if !ok {
			t.dropped.WithLabelValues(DropRate).Inc()
			continue
		}
		if req == nil {
			req = head(inbound, r, path, src, dst, h, status, d, now)
		}
		select {
		case t.out <- &meshv1.TapEvent{TapId: tp.spec.ID, Request: req}:
		default:
			tp.unqueue()
			t.dropped.WithLabelValues(DropQueue).Inc()
		}
		if last {
			t.end(tp.spec.ID, "")
		}
	}
}

// admit reports whether one more event of tp may go at now, within its
// rate and count, and whether it is the last.
func (tp *tap) admit(now time.Time, rate int) (ok, last bool) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.ended || tp.queued >= tp.spec.MaxEvents {
		return false, false
	}
	if d := now.Sub(tp.last); d > 0 {
		tp.tokens = min(float64(rate), tp.tokens+d.Seconds()*float64(rate))
		tp.last = now
	}
	if tp.tokens < 1 {
		tp.dropped++
		return false, false
	}
	tp.tokens--
	tp.queued++
	return true, tp.queued >= tp.spec.MaxEvents
}

// unqueue takes back an event admit let through that did not fit the queue.
func (tp *tap) unqueue() {
	tp.mu.Lock()
	tp.queued--
	tp.dropped++
	tp.mu.Unlock()
}

// head builds the event of one request.
func head(inbound bool, r *http.Request, path, src, dst string, h http.Header, status int, d time.Duration, now time.Time) *meshv1.TapRequest {
	dir := meshv1.Direction_DIRECTION_OUTBOUND
	if inbound {
		dir = meshv1.Direction_DIRECTION_INBOUND
	}
	return &meshv1.TapRequest{
		Direction:       dir,
		Time:            timestamppb.New(now),
		Method:          clip(r.Method, maxFieldLen),
		Authority:       clip(r.Host, maxFieldLen),
		Path:            clip(path, maxFieldLen),
		Source:          src,
		Destination:     dst,
		Status:          uint32(max(status, 0)),
		Duration:        durationpb.New(d),
		RequestHeaders:  Headers(r.Header),
		ResponseHeaders: Headers(h),
	}
}

// Headers returns the names of h, sorted, with the values of the
// allow-listed ones only (their first value): never an Authorization or
// Cookie value, nor any other.
func Headers(h http.Header) []*meshv1.TapHeader {
	if len(h) == 0 {
		return nil
	}
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, http.CanonicalHeaderKey(k))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) > maxHeaders {
		names = names[:maxHeaders]
	}
	out := make([]*meshv1.TapHeader, 0, len(names))
	for _, n := range names {
		th := &meshv1.TapHeader{Name: clip(n, maxFieldLen)}
		if allowed[n] {
			if v := h.Values(n); len(v) > 0 {
				th.Value = clip(v[0], maxValueLen)
			}
		}
		out = append(out, th)
	}
	return out
}

// clip cuts s to at most n bytes of valid UTF-8, with its control
// characters (C0, DEL, C1) replaced by U+FFFD: what it returns is shown
// on terminals and pages, where they could act.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, isControl) {
		s = strings.Map(func(r rune) rune { // invalid bytes become U+FFFD too
			if isControl(r) {
				return utf8.RuneError
			}
			return r
		}, s)
		for len(s) > n {
			_, size := utf8.DecodeLastRuneInString(s)
			s = s[:len(s)-size]
		}
	}
	return s
}

// isControl reports whether r is a C0 or C1 control character or DEL.
func isControl(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }

// command applies one command from the controller.
func (t *Tapper) command(c *meshv1.TapCommand) {
	if c.GetStop() {
		if validID(c.GetId()) == nil && t.end(c.GetId(), "") {
			t.commands.WithLabelValues(CommandStopped).Inc()
		}
		return
	}
	spec, err := FromProto(c)
	if err != nil {
		t.commands.WithLabelValues(CommandInvalid).Inc()
		t.log.Warn("tap refused", "tap", c.GetId(), "err", err)
		if validID(c.GetId()) == nil {
			t.queueEnded(&meshv1.TapEvent{TapId: c.GetId(), Ended: true, Error: err.Error()})
		}
		return
	}
	t.mu.Lock()
	if _, dup := t.byID[spec.ID]; dup || len(t.byID) >= t.cfg.MaxTaps {
		t.mu.Unlock()
		t.commands.WithLabelValues(CommandTooMany).Inc()
		msg := "tap " + spec.ID + " is already active"
		if !dup {
			msg = "too many taps on this proxy at once: wait for one to end"
		}
		t.queueEnded(&meshv1.TapEvent{TapId: spec.ID, Ended: true, Error: msg})
		return
	}
	tp := &tap{spec: spec, tokens: float64(t.cfg.Rate), last: t.cfg.Now()}
	tp.timer = time.AfterFunc(spec.Duration, func() { t.end(spec.ID, "") })
	t.byID[spec.ID] = tp
	t.publishLocked()
	t.mu.Unlock()
	t.commands.WithLabelValues(CommandStarted).Inc()
	t.log.Info("tap started", "tap", spec.ID, "max_events", spec.MaxEvents, "duration", spec.Duration.String())
}

// end ends the tap id, queueing its ended event with msg; it reports
// whether the tap was active.
func (t *Tapper) end(id, msg string) bool {
	t.mu.Lock()
	tp := t.byID[id]
	if tp == nil {
		t.mu.Unlock()
		return false
	}
	delete(t.byID, id)
	t.publishLocked()
	t.mu.Unlock()
	tp.timer.Stop()
	tp.mu.Lock()
	tp.ended = true
	dropped := tp.dropped
	tp.mu.Unlock()
	t.queueEnded(&meshv1.TapEvent{TapId: id, Ended: true, Dropped: dropped, Error: msg})
	return true
}

// publishLocked publishes the taps in force to the request path.
func (t *Tapper) publishLocked() {
	list := make([]*tap, 0, len(t.byID))
	for _, tp := range t.byID {
		list = append(list, tp)
	}
	t.taps.Store(&list)
	t.active.Store(len(list) > 0)
	t.activeGauge.Set(float64(len(list)))
}

// queueEnded queues an ended event for the stream, which sends it after
// the events queued before it.
func (t *Tapper) queueEnded(ev *meshv1.TapEvent) {
	t.mu.Lock()
	if len(t.finished) < 4*t.cfg.MaxTaps {
		t.finished = append(t.finished, ev)
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// stopAll ends every tap without telling anyone: the stream they came on
// is gone, and the controller ended them with it.
func (t *Tapper) stopAll() {
	t.mu.Lock()
	for id, tp := range t.byID {
		tp.timer.Stop()
		delete(t.byID, id)
	}
	t.finished = nil
	t.publishLocked()
	t.mu.Unlock()
	for {
		select {
		case <-t.out:
		default:
			return
		}
	}
}

// ActiveTaps returns how many taps are active.
func (t *Tapper) ActiveTaps() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// Run keeps the Tap stream open until ctx ends, opening it again with
// backoff when it fails. The taps of a stream end with it.
func (t *Tapper) Run(ctx context.Context) error {
	cur := time.Duration(0)
	var connected atomic.Bool
	for {
		connected.Store(false)
		err := t.stream(ctx, &connected)
		t.stopAll()
		if ctx.Err() != nil {
			return nil
		}
		if connected.Load() {
			cur = 0
		}
		if cur == 0 {
			cur = t.cfg.MinBackoff
		} else {
			cur = min(2*cur, t.cfg.MaxBackoff)
		}
		wait := cur/2 + mrand.N(cur/2+1)
		t.log.Debug("tap stream ended", "retry_in", wait.Round(time.Millisecond).String(), "err", err)
		tm := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			tm.Stop()
			return nil
		case <-tm.C:
		}
	}
}

var errNoConn = errors.New("tap: no connection to the controller")

// stream runs one Tap stream; connected is set once the controller has
// accepted it (its first command). It returns once its receive goroutine
// has, so that no command applies after the stream's taps are stopped.
func (t *Tapper) stream(ctx context.Context, connected *atomic.Bool) error {
	conn := t.cfg.Conn()
	if conn == nil {
		return errNoConn
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := meshv1.NewTelemetryClient(conn).Tap(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&meshv1.TapEvent{Workload: t.cfg.Workload}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			c, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			connected.Store(true)
			t.command(c)
		}
	}()
	defer func() {
		cancel() // ends Recv
		<-recvDone
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			return err
		case ev := <-t.out:
			if err := st.Send(ev); err != nil {
				return err
			}
			t.sent.Inc()
		case <-t.wake:
			// Events queued before the tap ended go first.
			for n := len(t.out); n > 0; n-- {
				if err := st.Send(<-t.out); err != nil {
					return err
				}
				t.sent.Inc()
			}
			t.mu.Lock()
			ended := t.finished
			t.finished = nil
			t.mu.Unlock()
			for _, ev := range ended {
				if err := st.Send(ev); err != nil {
					return err
				}
			}
		}
	}
}
