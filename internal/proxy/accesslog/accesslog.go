// Package accesslog writes the proxy's access log: one JSON line (log/slog)
// per HTTP request, on either side, saying who called whom, what, with
// which answer and in how long, with the trace ID that joins it to the
// request's spans.
//
// A line never holds header values or bodies: the path is the only part
// of the request it keeps, without its query and cut at
// tracing.MaxPathBytes. Opaque TCP streams are not logged here.
//
// A nil *Logger logs nothing. It must not depend on Kubernetes packages or
// the controller.
package accesslog

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
)

// FormatJSON is the access log format: one JSON object a line.
const FormatJSON = "json"

// Message is the msg field of every line, which tells access log lines
// from the proxy's other lines in a shared stream.
const Message = "access"

// Authorization decisions, as lines and spans record them.
const (
	DecisionAllow       = "allow"
	DecisionDeny        = "deny"
	DecisionRateLimited = "rate_limited"
	DecisionInvalid     = "invalid"
)

// HeaderDecisionID is the response header by which a proxy marks an
// answer its policy gave (tunnel.HeaderDecisionID).
const HeaderDecisionID = "Rampart-Decision-Id"

// Logger writes access log lines. Its methods are safe for concurrent use.
type Logger struct {
	log *slog.Logger
}

// New returns a Logger that writes JSON lines to w, one Write per line.
func New(w io.Writer) *Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.LevelKey {
				return slog.Attr{} // every line is the same level
			}
			return a
		},
	})
	return &Logger{log: slog.New(h)}
}

// Entry is one request.
type Entry struct {
	Start     time.Time
	Direction string // "inbound" or "outbound"
	Method    string
	Path      string // without the query; cut by Log
	// Status is the status answered; 0 when the answer broke off.
	Status   int
	Duration time.Duration
	// RequestBytes and ResponseBytes are the declared lengths of the
	// bodies (Content-Length); -1 when not declared (streamed).
	RequestBytes, ResponseBytes int64
	// Source and Destination are SPIFFE IDs; "" when unknown (a
	// plaintext client, a request that reached no peer).
	Source, Destination string
	TraceID             string
	// Decision is the authorization decision, "" when none was made;
	// DecisionID the ID of a refusal.
	Decision, DecisionID string
}

// RequestEntry returns the entry of request r answered with headers hdr
// and status code (0 when the answer broke off) after elapsed: the fields
// the exchange itself gives. traceID is the request's span's; "" takes
// the trace ID the caller sent, if any. The caller sets the direction,
// the identities and the decision.
func RequestEntry(r *http.Request, hdr http.Header, code int, start time.Time, elapsed time.Duration, traceID string) *Entry {
	if traceID == "" {
		traceID = tracing.TraceIDOf(r.Header)
	}
	reqBytes := r.ContentLength
	if reqBytes < 0 {
		reqBytes = -1
	}
	return &Entry{
		Start:         start,
		Method:        r.Method,
		Path:          r.URL.Path,
		Status:        code,
		Duration:      elapsed,
		RequestBytes:  reqBytes,
		ResponseBytes: ResponseBytes(hdr),
		TraceID:       traceID,
	}
}

// Log writes e as one line.
func (l *Logger) Log(e *Entry) {
	if l == nil {
		return
	}
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("direction", e.Direction),
		slog.String("method", e.Method),
		slog.String("path", tracing.CutPath(e.Path)),
		slog.Int("status", e.Status),
		slog.Float64("duration_seconds", e.Duration.Seconds()),
	)
	if e.RequestBytes >= 0 {
		attrs = append(attrs, slog.Int64("request_bytes", e.RequestBytes))
	}
	if e.ResponseBytes >= 0 {
		attrs = append(attrs, slog.Int64("response_bytes", e.ResponseBytes))
	}
	attrs = append(attrs,
		slog.String("source", e.Source),
		slog.String("destination", e.Destination),
	)
	if e.TraceID != "" {
		attrs = append(attrs, slog.String("trace_id", e.TraceID))
	}
	if e.Decision != "" {
		attrs = append(attrs, slog.String("decision", e.Decision))
	}
	if e.DecisionID != "" {
		attrs = append(attrs, slog.String("decision_id", e.DecisionID))
	}
	if e.Status == 0 {
		attrs = append(attrs, slog.String("error", "the response broke off"))
	}
	r := slog.NewRecord(e.Start, slog.LevelInfo, Message, 0)
	r.AddAttrs(attrs...)
	l.log.Handler().Handle(context.Background(), r)
}

// Decision tells, from the status answered and the response's headers,
// whether the answer is a refusal by a proxy's authorization policy or
// rate limit, and returns the decision and its ID; "" for both when it
// is not.
//
// Only a header that reads exactly as a proxy writes it counts: one value
// of DecisionIDLen lower-case hex digits.
func Decision(status int, h http.Header) (decision, id string) {
	v := h[HeaderDecisionID]
	if len(v) != 1 || !validDecisionID(v[0]) {
		return "", ""
	}
	grpc := ""
	if g := h["Grpc-Status"]; len(g) > 0 {
		grpc = g[0]
	}
	switch {
	case status == http.StatusForbidden || grpc == "7":
		return DecisionDeny, v[0]
	case status == http.StatusTooManyRequests || grpc == "8":
		return DecisionRateLimited, v[0]
	}
	return DecisionInvalid, v[0]
}

// DecisionIDLen is the length of a decision ID: 12 hex digits, 6 random
// bytes.
const DecisionIDLen = 12

// validDecisionID reports whether id is DecisionIDLen lower-case hex
// digits.
func validDecisionID(id string) bool {
	if len(id) != DecisionIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ResponseBytes is the declared length of a response body with headers
// h, or -1.
func ResponseBytes(h http.Header) int64 {
	v := h["Content-Length"]
	if len(v) != 1 {
		return -1
	}
	var n int64
	for i := 0; i < len(v[0]); i++ {
		c := v[0][i]
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	if len(v[0]) == 0 {
		return -1
	}
	return n
}
