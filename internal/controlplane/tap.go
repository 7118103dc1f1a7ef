package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// Bounds on taps (rampart tap). Each proxy also bounds its own taps: at
// most 4 at once and 100 events per second each.
const (
	// MaxTaps bounds the taps the controller runs at once.
	MaxTaps = 16
	// DefaultTapEvents and MaxTapEvents bound the events of one tap, over
	// every instance of its workload.
	DefaultTapEvents = 100
	MaxTapEvents     = 10_000
	// DefaultTapDuration and MaxTapDuration bound how long a tap lasts.
	DefaultTapDuration = 30 * time.Second
	MaxTapDuration     = 10 * time.Minute
	// tapQueue bounds the events of one tap waiting for its caller; more
	// are dropped and counted.
	tapQueue = 256
	// tapCommands bounds the commands waiting for one proxy's stream.
	tapCommands = 16
	// maxTapField bounds a proxy's method, authority, path and header
	// fields; maxTapHeaders the headers of one side.
	maxTapField   = 256
	maxTapHeaders = 64
)

// tapAllowed are the headers whose values a tap carries; the controller
// strips any other value a proxy sends.
var tapAllowed = map[string]bool{"content-type": true, "user-agent": true, "grpc-status": true}

// Errors of Server.Tap that callers branch on.
var (
	// ErrNoTapTarget: no proxy of the workload has a tap stream open.
	ErrNoTapTarget = errors.New("no proxy of the workload is connected for tapping")
	// ErrTooManyTaps: MaxTaps taps run already.
	ErrTooManyTaps = errors.New("too many taps at once")
)

// TapSpec is what to tap. The zero value of every optional field matches
// any request.
type TapSpec struct {
	// Namespace and Workload name the workload whose proxies are tapped
	// (every instance registered under that name). Required.
	Namespace, Workload string
	// Method: an HTTP method in upper case.
	Method string
	// PathPrefix: a prefix of the path, starting with "/".
	PathPrefix string
	// Source: the SPIFFE ID of the requests' source.
	Source string
	// StatusClass: the hundreds digit of the status, 1 to 5.
	StatusClass int
	// MaxEvents: zero means DefaultTapEvents.
	MaxEvents int
	// Duration: zero means DefaultTapDuration.
	Duration time.Duration
	// OnStart, when set, is called once the tap runs, before any event,
	// with how many proxies run it.
	OnStart func(instances int)
}

// Validate reports the first field at fault, named as the tap API's query
// parameter, and fills in the defaults.
func (s *TapSpec) Validate() error {
	if s.MaxEvents == 0 {
		s.MaxEvents = DefaultTapEvents
	}
	if s.Duration == 0 {
		s.Duration = DefaultTapDuration
	}
	switch {
	case s.Namespace == "" || s.Workload == "":
		return errors.New("namespace and workload are required: name the workload to tap")
	case identity.ValidateName(s.Namespace) != nil:
		return fmt.Errorf("namespace %q: %w", s.Namespace, identity.ValidateName(s.Namespace))
	case identity.ValidateName(s.Workload) != nil:
		return fmt.Errorf("workload %q: %w", s.Workload, identity.ValidateName(s.Workload))
	case s.Method != "" && (len(s.Method) > 16 || strings.IndexFunc(s.Method, func(r rune) bool { return r < 'A' || r > 'Z' }) >= 0):
		return fmt.Errorf("method %q: want an HTTP method in upper case, such as GET", s.Method)
	case s.PathPrefix != "" && (!strings.HasPrefix(s.PathPrefix, "/") || len(s.PathPrefix) > maxTapField ||
		!utf8.ValidString(s.PathPrefix) || strings.ContainsAny(s.PathPrefix, "?#")):
		return fmt.Errorf("path %q: want a path prefix starting with / of at most %d bytes, without ? or #", s.PathPrefix, maxTapField)
	case s.StatusClass < 0 || s.StatusClass > 5:
		return fmt.Errorf("status %d: want a status class from 1 to 5 (2 for 2xx)", s.StatusClass)
	case s.MaxEvents < 1 || s.MaxEvents > MaxTapEvents:
		return fmt.Errorf("max %d: want 1 to %d events", s.MaxEvents, MaxTapEvents)
	case s.Duration < time.Second || s.Duration > MaxTapDuration:
		return fmt.Errorf("duration %v: want 1s to %v", s.Duration, MaxTapDuration)
	}
	if s.Source != "" {
		if _, err := spiffeid.FromString(s.Source); err != nil {
			return fmt.Errorf("source %q: want a SPIFFE ID such as spiffe://rampart.local/ns/shop/sa/web: %w", s.Source, err)
		}
	}
	return nil
}

// TapSummary says how a tap ended.
type TapSummary struct {
	// Instances is how many proxies ran the tap.
	Instances int
	// Events were delivered; Dropped were not (the caller, the
	// controller's queue or a proxy's bounds were too slow).
	Events  int
	Dropped uint64
	// Reason the tap ended: "max events", "duration", "ended on every
	// instance", "caller left", "controller shutting down".
	Reason string
}

// tapKey is a workload as the tap API names it.
type tapKey struct{ namespace, workload string }

// tapStream is one proxy's open Tap stream.
type tapStream struct {
	key      tapKey
	instance string // the workload and the peer address, for events
	cmds     chan *meshv1.TapCommand
}

// tapDelivery is an event from one proxy for one session.
type tapDelivery struct {
	from *tapStream
	req  *meshv1.TapRequest
}

// tapSession is one running tap.
type tapSession struct {
	id     string
	events chan tapDelivery
	// done receives each stream that ended the tap or went away, once
	// per stream; sized so that it never fills.
	done chan *tapStream
	mu   sync.Mutex
	// pending holds the instances of the tap not yet counted out: true
	// while tapping, false once ended with their notice in done.
	pending map[*tapStream]bool // guarded by mu
	dropped uint64              // guarded by mu
}

// tapHub routes commands to proxies and events to sessions.
type tapHub struct {
	mu       sync.Mutex
	streams  map[tapKey]map[*tapStream]bool // guarded by mu
	sessions map[string]*tapSession         // guarded by mu
}

// tapMetrics are the tap's series.
type tapMetrics struct {
	streams  prometheus.Gauge
	active   prometheus.Gauge
	refused  *prometheus.CounterVec
	events   *prometheus.CounterVec
	sessions *prometheus.CounterVec
}

// Labels of the tap's series.
const (
	TapDelivered = "delivered"
	TapDropped   = "dropped"
	TapInvalid   = "invalid"
	TapStripped  = "stripped" // a header value outside the allow-list, removed

	TapStarted  = "started"
	TapNoTarget = "no_target"
	TapTooMany  = "too_many"
)

func newTapMetrics(reg prometheus.Registerer) (*tapMetrics, error) {
	m := &tapMetrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_controller_tap_streams",
			Help: "Proxies' Tap streams open now.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_controller_taps",
			Help: "Taps (rampart tap) running now.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_tap_streams_refused_total",
			Help: "Proxies' Tap streams refused, by reason (certificate reasons, not_workload, not_registered, bad_hello).",
		}, []string{"reason"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_tap_events_total",
			Help: "Request heads from proxies' taps by result: delivered, dropped (a queue was full or the tap had ended), invalid (refused: not about the sending proxy, or out of bounds), stripped (delivered with a header value outside the allow-list removed).",
		}, []string{"result"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_tap_sessions_total",
			Help: "Taps asked for, by result: started, no_target (no proxy of the workload connected), too_many (over the controller's bound of taps at once).",
		}, []string{"result"}),
	}
	for _, r := range []string{TapDelivered, TapDropped, TapInvalid, TapStripped} {
		m.events.WithLabelValues(r)
	}
	for _, r := range []string{TapStarted, TapNoTarget, TapTooMany} {
		m.sessions.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.streams, m.active, m.refused, m.events, m.sessions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("controlplane: register tap metrics: %w", err)
		}
	}
	return m, nil
}

// Tap implements meshv1.TelemetryServer: it admits a caller with a valid
// workload SVID whose first message names a workload it registered, then
// carries commands to the proxy and its events to the taps, until the
// stream ends, the certificate expires or the server drains.
func (ts telemetryService) Tap(stream grpc.BidiStreamingServer[meshv1.TapEvent, meshv1.TapCommand]) error {
	s := ts.s
	ctx := stream.Context()
	c := callerOf(ctx)
	refuse := func(code codes.Code, reason string, err error, msg string) error {
		s.tapm.refused.WithLabelValues(reason).Inc()
		s.logger.Warn("tap stream refused", "peer", c.addr, "reason", reason, "error", err)
		return status.Error(code, msg)
	}
	id, err := meshtls.VerifyPeer(c.certs, s.bundle, s.now())
	if err != nil {
		reason := watchReason(meshtls.Reason(err))
		return refuse(codes.Unauthenticated, reason, err, "client certificate refused ("+reason+"): "+err.Error())
	}
	ns, _, err := identity.ParseWorkloadID(id)
	if err != nil || id.TrustDomain() != s.ca.TrustDomain() {
		return refuse(codes.PermissionDenied, WatchNotWorkload, err, "identity "+id.String()+" is not a workload identity of trust domain "+s.ca.TrustDomain().String())
	}
	if err := s.peerRevoked(c.certs[0]); err != nil {
		return refuse(codes.PermissionDenied, meshtls.ReasonRevoked, err, "client certificate revoked: "+err.Error())
	}
	// The first message names the workload; a stop must not wait on a
	// caller that never sends it.
	type recvd struct {
		ev  *meshv1.TapEvent
		err error
	}
	first := make(chan recvd, 1)
	go func() {
		ev, err := stream.Recv()
		first <- recvd{ev, err}
	}()
	var hello *meshv1.TapEvent
	select {
	case m := <-first:
		if m.err != nil {
			return m.err
		}
		hello = m.ev
	case <-ctx.Done():
		return nil
	case <-s.draining:
		return status.Error(codes.Unavailable, "controller shutting down; reconnect")
	}
	w := hello.GetWorkload()
	if err := identity.ValidateName(w); err != nil || hello.GetTapId() != "" || hello.GetRequest() != nil || hello.GetEnded() {
		return refuse(codes.InvalidArgument, "bad_hello", err, "the first message of a Tap stream names the workload instance and nothing else")
	}
	if !s.model.Registered(id, w) {
		return refuse(codes.PermissionDenied, TelemetryNotRegistered, nil,
			fmt.Sprintf("workload %q is not registered by %s: open the Discovery Watch stream for it first", w, id))
	}
	st := &tapStream{key: tapKey{ns, w}, instance: w + "@" + c.addr, cmds: make(chan *meshv1.TapCommand, tapCommands)}
	s.taps.add(st)
	s.tapm.streams.Inc()
	defer func() {
		s.tapm.streams.Dec()
		s.taps.remove(st)
	}()

	self := id.String()
	recvErr := make(chan error, 1)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			// A revocation after the stream opened ends it at the next
			// event, which is not delivered.
			if err := s.peerRevoked(c.certs[0]); err != nil {
				recvErr <- err
				return
			}
			s.taps.deliver(s.tapm, st, self, ev)
		}
	}()
	revoked := func(err error) error {
		return refuse(codes.PermissionDenied, meshtls.ReasonRevoked, err, "client certificate revoked: "+err.Error())
	}
	expiry := time.NewTimer(c.certs[0].NotAfter.Sub(s.now()))
	defer expiry.Stop()
	for {
		select {
		case cmd := <-st.cmds:
			// Nor does a revoked proxy receive another command.
			if err := s.peerRevoked(c.certs[0]); err != nil {
				return revoked(err)
			}
			if err := stream.Send(cmd); err != nil {
				return err
			}
		case err := <-recvErr:
			var rev *meshtls.RevokedError
			if errors.As(err, &rev) {
				return revoked(err)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			return nil
		case <-expiry.C:
			return status.Error(codes.Unavailable, "client certificate expired; reconnect with the renewed certificate")
		case <-s.draining:
			return status.Error(codes.Unavailable, "controller shutting down; reconnect")
		}
	}
}

func (h *tapHub) add(st *tapStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams == nil {
		h.streams = map[tapKey]map[*tapStream]bool{}
	}
	if h.streams[st.key] == nil {
		h.streams[st.key] = map[*tapStream]bool{}
	}
	h.streams[st.key][st] = true
}

// remove forgets st and tells every session it served that it is gone.
func (h *tapHub) remove(st *tapStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.streams[st.key], st)
	if len(h.streams[st.key]) == 0 {
		delete(h.streams, st.key)
	}
	for _, sess := range h.sessions {
		sess.mu.Lock()
		if sess.pending[st] {
			sess.pending[st] = false
			select {
			case sess.done <- st:
			default:
			}
		}
		sess.mu.Unlock()
	}
}

// deliver routes an event from st to its session; self is the sending
// proxy's SPIFFE ID, which must be a side of every request it reports.
func (h *tapHub) deliver(m *tapMetrics, st *tapStream, self string, ev *meshv1.TapEvent) {
	h.mu.Lock()
	sess := h.sessions[ev.GetTapId()]
	h.mu.Unlock()
	if sess == nil {
		m.events.WithLabelValues(TapDropped).Inc()
		return
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.pending == nil {
		m.events.WithLabelValues(TapDropped).Inc() // the tap has ended
		return
	}
	if !sess.pending[st] {
		m.events.WithLabelValues(TapInvalid).Inc() // not a proxy of the tap
		return
	}
	if ev.GetEnded() {
		// Only the first: a stream ends a tap once (and later events
		// from it are refused above).
		sess.pending[st] = false
		sess.dropped += ev.GetDropped()
		select {
		case sess.done <- st:
		default:
		}
		return
	}
	req := ev.GetRequest()
	stripped, err := checkTapRequest(req, self)
	if err != nil {
		m.events.WithLabelValues(TapInvalid).Inc()
		return
	}
	if stripped {
		m.events.WithLabelValues(TapStripped).Inc()
	}
	select {
	case sess.events <- tapDelivery{from: st, req: req}:
	default:
		sess.dropped++
		m.events.WithLabelValues(TapDropped).Inc()
	}
}

// checkTapRequest refuses an event that is not about the sending proxy
// (self must be its source outbound, its destination inbound) or is out
// of bounds, and removes any header value outside the allow-list; it
// reports whether it removed one.
func checkTapRequest(r *meshv1.TapRequest, self string) (stripped bool, err error) {
	switch {
	case r == nil:
		return false, errors.New("no request")
	case r.GetDirection() == meshv1.Direction_DIRECTION_INBOUND && r.GetDestination() != self,
		r.GetDirection() == meshv1.Direction_DIRECTION_OUTBOUND && r.GetSource() != self:
		return false, errors.New("the request is not the sending proxy's")
	case r.GetDirection() != meshv1.Direction_DIRECTION_INBOUND && r.GetDirection() != meshv1.Direction_DIRECTION_OUTBOUND:
		return false, errors.New("no direction")
	case len(r.GetMethod()) > maxTapField || len(r.GetAuthority()) > maxTapField || len(r.GetPath()) > maxTapField,
		len(r.GetSource()) > 2048 || len(r.GetDestination()) > 2048,
		len(r.GetRequestHeaders()) > maxTapHeaders || len(r.GetResponseHeaders()) > maxTapHeaders,
		r.GetStatus() > 999:
		return false, errors.New("out of bounds")
	}
	for _, hs := range [][]*meshv1.TapHeader{r.GetRequestHeaders(), r.GetResponseHeaders()} {
		for _, h := range hs {
			if len(h.GetName()) > maxTapField || len(h.GetValue()) > maxTapField {
				return false, errors.New("header out of bounds")
			}
			if h.GetValue() != "" && !tapAllowed[strings.ToLower(h.GetName())] {
				h.Value = ""
				stripped = true
			}
		}
	}
	return stripped, nil
}

// Tap runs one tap: it starts it on every proxy of the workload that has
// a Tap stream open, calls emit with each request head that comes back
// (from one goroutine, in order per proxy) until the tap ends, then stops
// it on the proxies. An error from emit ends the tap as "caller left".
// It returns ErrNoTapTarget or ErrTooManyTaps, or an error from
// spec.Validate, before anything is tapped.
func (s *Server) Tap(ctx context.Context, spec TapSpec, emit func(instance string, r *meshv1.TapRequest) error) (sum TapSummary, err error) {
	// sum is named: the deferred summary below completes it.
	if err := spec.Validate(); err != nil {
		return sum, err
	}
	sess, n, err := s.taps.start(spec)
	if err != nil {
		switch {
		case errors.Is(err, ErrNoTapTarget):
			s.tapm.sessions.WithLabelValues(TapNoTarget).Inc()
		case errors.Is(err, ErrTooManyTaps):
			s.tapm.sessions.WithLabelValues(TapTooMany).Inc()
		}
		return sum, err
	}
	s.tapm.sessions.WithLabelValues(TapStarted).Inc()
	s.tapm.active.Inc()
	defer s.tapm.active.Dec()
	defer s.taps.finish(sess)
	sum.Instances = n
	if spec.OnStart != nil {
		spec.OnStart(n)
	}
	s.logger.Info("tap started", "tap", sess.id, "namespace", spec.Namespace, "workload", spec.Workload,
		"instances", n, "max_events", spec.MaxEvents, "duration", spec.Duration.String())

	deliver := func(d tapDelivery) bool {
		if err := emit(d.from.instance, d.req); err != nil {
			sum.Reason = "caller left"
			return false
		}
		s.tapm.events.WithLabelValues(TapDelivered).Inc()
		sum.Events++
		if sum.Events >= spec.MaxEvents {
			sum.Reason = "max events"
			return false
		}
		return true
	}
	// The proxies end the tap at its duration; this is the backstop.
	timer := time.NewTimer(spec.Duration + time.Second)
	defer timer.Stop()
	defer func() {
		sess.mu.Lock()
		sum.Dropped = sess.dropped
		sess.mu.Unlock()
		s.logger.Info("tap ended", "tap", sess.id, "events", sum.Events, "dropped", sum.Dropped, "reason", sum.Reason)
	}()
	for {
		select {
		case d := <-sess.events:
			if !deliver(d) {
				return sum, nil
			}
		case st := <-sess.done:
			sess.mu.Lock()
			delete(sess.pending, st)
			left := len(sess.pending)
			sess.mu.Unlock()
			if left > 0 {
				continue
			}
			// Every proxy ended: what they sent before is queued.
			for len(sess.events) > 0 {
				if !deliver(<-sess.events) {
					return sum, nil
				}
			}
			sum.Reason = "ended on every instance"
			return sum, nil
		case <-timer.C:
			sum.Reason = "duration"
			return sum, nil
		case <-ctx.Done():
			sum.Reason = "caller left"
			return sum, nil
		case <-s.draining:
			sum.Reason = "controller shutting down"
			return sum, nil
		}
	}
}

// start registers a session for spec and sends its start command to every
// stream of the workload; it returns how many took it.
func (h *tapHub) start(spec TapSpec) (*tapSession, int, error) {
	var b [16]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	cmd := &meshv1.TapCommand{
		Id: id,
		Filter: &meshv1.TapFilter{
			Method: spec.Method, PathPrefix: spec.PathPrefix, Source: spec.Source, StatusClass: uint32(spec.StatusClass),
		},
		MaxEvents: uint32(spec.MaxEvents),
		Duration:  durationpb.New(spec.Duration),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.sessions) >= MaxTaps {
		return nil, 0, fmt.Errorf("%w (at most %d): wait for one to end", ErrTooManyTaps, MaxTaps)
	}
	streams := h.streams[tapKey{spec.Namespace, spec.Workload}]
	sess := &tapSession{
		id:      id,
		events:  make(chan tapDelivery, tapQueue),
		done:    make(chan *tapStream, 2*len(streams)),
		pending: map[*tapStream]bool{},
	}
	for st := range streams {
		select {
		case st.cmds <- cmd:
			sess.pending[st] = true
		default: // that proxy's stream is stuck: leave it out
		}
	}
	if len(sess.pending) == 0 {
		return nil, 0, fmt.Errorf("%w: %s/%s: check the name (rampart stat lists workloads) and that its proxy runs and reaches the controller",
			ErrNoTapTarget, spec.Namespace, spec.Workload)
	}
	if h.sessions == nil {
		h.sessions = map[string]*tapSession{}
	}
	h.sessions[id] = sess
	return sess, len(sess.pending), nil
}

// finish forgets sess and stops it on the proxies still running it.
func (h *tapHub) finish(sess *tapSession) {
	h.mu.Lock()
	delete(h.sessions, sess.id)
	h.mu.Unlock()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	for st := range sess.pending {
		select {
		case st.cmds <- &meshv1.TapCommand{Id: sess.id, Stop: true}:
		default: // the tap ends at its duration on that proxy
		}
	}
	sess.pending = nil
}
