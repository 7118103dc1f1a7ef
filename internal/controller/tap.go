package controller

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-mesh/rampart/internal/controlplane"
	"github.com/rampart-mesh/rampart/internal/fsutil"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// TapTokenFile, inside Config.StateDir, holds the bearer token that
// GET /api/v1/tap requires: whoever can read it may tap. It is created
// (0600, 64 hex digits) on first start and kept; delete it and restart
// the controller to replace it.
const TapTokenFile = "tap-token"

// Results of rampart_controller_tap_api_requests_total.
const (
	TapUnauthenticated = "unauthenticated"
	TapForbidden       = "forbidden"
	TapBadQuery        = "invalid"
	TapNoTarget        = "no_target"
	TapTooMany         = "too_many"
	TapServed          = "served"
)

// tapAPI is GET /api/v1/tap: its token and its series.
type tapAPI struct {
	// sum is the SHA-256 of the token, compared in constant time.
	sum      [sha256.Size]byte
	requests *prometheus.CounterVec
}

// initTap reads the tap token from the state directory, creating it on
// first start, and registers the tap API's series.
func (c *Controller) initTap() error {
	tok, err := loadTapToken(filepath.Join(c.cfg.StateDir, TapTokenFile))
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	c.tap.sum = sha256.Sum256(tok)
	c.tap.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_tap_api_requests_total",
		Help: "Requests to GET /api/v1/tap by result: served, unauthenticated (no bearer token), forbidden (a wrong token), invalid (a bad query), no_target, too_many.",
	}, []string{"result"})
	for _, r := range []string{TapUnauthenticated, TapForbidden, TapBadQuery, TapNoTarget, TapTooMany, TapServed} {
		c.tap.requests.WithLabelValues(r)
	}
	return c.reg.Register(c.tap.requests)
}

// loadTapToken returns the token in path, creating it if missing. A token
// file that others may read or write is refused: it is the tap's only
// access control in local mode.
func loadTapToken(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, err
		}
		tok := []byte(hex.EncodeToString(raw[:]))
		if err := fsutil.WriteFileAtomic(path, append(tok, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("tap token: %w", err)
		}
		return tok, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tap token: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("tap token: %w", err)
	}
	if err := fsutil.CheckPrivate(path, fi.Mode()); err != nil {
		return nil, fmt.Errorf("tap token: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("tap token: %w", err)
	}
	tok := []byte(strings.TrimSpace(string(b)))
	if len(tok) < 32 {
		return nil, fmt.Errorf("tap token %s: shorter than 32 characters: delete it and restart to make a new one", path)
	}
	return tok, nil
}

// tapParams are the query parameters GET /api/v1/tap accepts.
var tapParams = []string{"namespace", "workload", "method", "path", "source", "status", "max", "duration"}

// ParseTapQuery turns the tap API's query into a validated spec; the error
// names the parameter to fix.
func ParseTapQuery(q url.Values) (controlplane.TapSpec, error) {
	var s controlplane.TapSpec
	for k, vs := range q {
		if !slices.Contains(tapParams, k) {
			return s, fmt.Errorf("unknown query parameter %q: want %s", k, strings.Join(tapParams, ", "))
		}
		if len(vs) > 1 {
			return s, fmt.Errorf("query parameter %q given %d times: give it once", k, len(vs))
		}
	}
	s.Namespace, s.Workload = q.Get("namespace"), q.Get("workload")
	s.Method, s.PathPrefix, s.Source = q.Get("method"), q.Get("path"), q.Get("source")
	if v := q.Get("status"); v != "" {
		v = strings.TrimSuffix(strings.ToLower(v), "xx")
		n, err := strconv.Atoi(v)
		if err != nil {
			return s, fmt.Errorf("status %q: want a status class: 1 to 5, or 2xx", q.Get("status"))
		}
		s.StatusClass = n
		if n == 0 {
			return s, fmt.Errorf("status %q: want a status class: 1 to 5, or 2xx", q.Get("status"))
		}
	}
	if v := q.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return s, fmt.Errorf("max %q: want a number of events from 1 to %d", v, controlplane.MaxTapEvents)
		}
		s.MaxEvents = n
	}
	if v := q.Get("duration"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return s, fmt.Errorf("duration %q: want a duration such as 30s, up to %v", v, controlplane.MaxTapDuration)
		}
		s.Duration = d
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// TapLine is one line of the tap API's newline-delimited JSON: a "start",
// then one "request" per request head, then an "end".
type TapLine struct {
	Type string `json:"type"`
	// start: how many proxies run the tap.
	Instances int `json:"instances,omitempty"`
	// request: the proxy instance ("workload@address") that saw it.
	Instance        string      `json:"instance,omitempty"`
	Time            *time.Time  `json:"time,omitempty"`
	Direction       string      `json:"direction,omitempty"`
	Method          string      `json:"method,omitempty"`
	Authority       string      `json:"authority,omitempty"`
	Path            string      `json:"path,omitempty"`
	Source          string      `json:"source,omitempty"`
	Destination     string      `json:"destination,omitempty"`
	Status          int         `json:"status,omitempty"`
	DurationSeconds float64     `json:"duration_seconds,omitempty"`
	RequestHeaders  []TapHeader `json:"request_headers,omitempty"`
	ResponseHeaders []TapHeader `json:"response_headers,omitempty"`
	// end: how many were delivered and dropped, and why the tap ended.
	Events  int    `json:"events,omitempty"`
	Dropped uint64 `json:"dropped,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// TapHeader is a header name, with its value only for content-type,
// user-agent and grpc-status.
type TapHeader struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// tapLine converts a request head from a proxy.
func tapLine(instance string, r *meshv1.TapRequest) TapLine {
	l := TapLine{
		Type: "request", Instance: instance, Method: r.GetMethod(), Authority: r.GetAuthority(), Path: r.GetPath(),
		Source: r.GetSource(), Destination: r.GetDestination(), Status: int(r.GetStatus()),
		DurationSeconds: r.GetDuration().AsDuration().Seconds(),
		RequestHeaders:  tapHeaders(r.GetRequestHeaders()), ResponseHeaders: tapHeaders(r.GetResponseHeaders()),
	}
	if r.GetTime() != nil {
		t := r.GetTime().AsTime()
		l.Time = &t
	}
	switch r.GetDirection() {
	case meshv1.Direction_DIRECTION_INBOUND:
		l.Direction = "inbound"
	case meshv1.Direction_DIRECTION_OUTBOUND:
		l.Direction = "outbound"
	}
	return l
}

func tapHeaders(hs []*meshv1.TapHeader) []TapHeader {
	if len(hs) == 0 {
		return nil
	}
	out := make([]TapHeader, len(hs))
	for i, h := range hs {
		out[i] = TapHeader{Name: h.GetName(), Value: h.GetValue()}
	}
	return out
}

// authorizeTap checks the bearer token of r; on refusal it answers and
// returns false.
func (c *Controller) authorizeTap(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if auth == "" || !ok || !strings.EqualFold(scheme, "Bearer") {
		c.tap.requests.WithLabelValues(TapUnauthenticated).Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="rampart tap"`)
		writeJSON(w, http.StatusUnauthorized, errorBody{Error: "a bearer token is required: send the controller's " + TapTokenFile +
			" (in its state directory) as Authorization: Bearer <token>, as rampart tap --state-dir does"})
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(sum[:], c.tap.sum[:]) != 1 {
		c.tap.requests.WithLabelValues(TapForbidden).Inc()
		c.logger.Warn("tap refused: wrong token", "remote", r.RemoteAddr)
		writeJSON(w, http.StatusForbidden, errorBody{Error: "the bearer token is not the controller's " + TapTokenFile})
		return false
	}
	return true
}

type errorBody struct {
	Error string `json:"error"`
}

// TapWriteTimeout bounds each write of a tap's lines to its caller: a
// caller that reads none for this long is gone.
const TapWriteTimeout = 5 * time.Second

// tapWriter returns a func that writes one line of a tap to w and flushes
// it, within timeout; the first failure calls failed, and every write
// after it fails at once.
func tapWriter(w http.ResponseWriter, timeout time.Duration, failed func()) func(TapLine) error {
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	var broken error
	return func(l TapLine) error {
		if broken != nil {
			return broken
		}
		err := rc.SetWriteDeadline(time.Now().Add(timeout))
		if errors.Is(err, http.ErrNotSupported) {
			err = nil // a writer without deadlines (a test's recorder)
		}
		if err == nil {
			err = enc.Encode(l)
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			broken = err
			failed()
		}
		return err
	}
}

// serveTap is GET /api/v1/tap: it streams the request heads of a workload
// as newline-delimited JSON, for callers holding the tap token.
func (c *Controller) serveTap(w http.ResponseWriter, r *http.Request) {
	if !c.authorizeTap(w, r) {
		return
	}
	spec, err := ParseTapQuery(r.URL.Query())
	if err != nil {
		c.tap.requests.WithLabelValues(TapBadQuery).Inc()
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "query parameter " + err.Error()})
		return
	}
	// A caller that stops reading ends its tap, rather than hold one of
	// the few tap slots.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	write := tapWriter(w, TapWriteTimeout, cancel)
	spec.OnStart = func(instances int) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_ = write(TapLine{Type: "start", Instances: instances})
	}
	sum, err := c.cp.Tap(ctx, spec, func(instance string, req *meshv1.TapRequest) error {
		return write(tapLine(instance, req))
	})
	if err != nil {
		code := http.StatusBadRequest
		result := TapBadQuery
		switch {
		case errors.Is(err, controlplane.ErrNoTapTarget):
			code, result = http.StatusNotFound, TapNoTarget
		case errors.Is(err, controlplane.ErrTooManyTaps):
			code, result = http.StatusTooManyRequests, TapTooMany
		}
		c.tap.requests.WithLabelValues(result).Inc()
		writeJSON(w, code, errorBody{Error: err.Error()})
		return
	}
	c.tap.requests.WithLabelValues(TapServed).Inc()
	_ = write(TapLine{Type: "end", Events: sum.Events, Dropped: sum.Dropped, Reason: sum.Reason})
}
