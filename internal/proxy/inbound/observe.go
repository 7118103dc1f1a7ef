package inbound

import (
	"net/http"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/accesslog"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
)

// observed ends the span of a request from src and writes its access log
// line, once the answer (with headers hdr and status code; 0 when it broke
// off) is written. Every request that reached authorization was decided:
// an answer without a decision ID was allowed.
func (h *Handler) observed(r *http.Request, hdr http.Header, src *peer, start time.Time, span tracing.Span, code int) {
	elapsed := time.Since(start)
	decision, id := accesslog.Decision(code, hdr)
	if decision == "" {
		decision = accesslog.DecisionAllow
	}
	span.End(tracing.Outcome{Status: code, Peer: src.name(), Decision: decision})
	if h.cfg.AccessLog == nil {
		return
	}
	e := accesslog.RequestEntry(r, hdr, code, start, elapsed, span.TraceID())
	e.Direction, e.Source, e.Destination = metrics.Inbound, src.name(), h.cfg.Identity
	e.Decision, e.DecisionID = decision, id
	h.cfg.AccessLog.Log(e)
}
