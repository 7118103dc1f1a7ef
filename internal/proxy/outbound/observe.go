package outbound

import (
	"net/http"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/accesslog"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
)

// observed ends the span of a request the app sent and writes its access
// log line, once the answer (with headers hdr and status code; 0 when it
// broke off) is written; ep is the endpoint that answered or failed last,
// nil for none. The peer's policy decided about a request that reached
// it: an answer without a decision ID was allowed.
func (o *Outbound) observed(r *http.Request, hdr http.Header, start time.Time, span tracing.Span, code int, ep *endpoint) {
	elapsed := time.Since(start)
	decision, id := accesslog.Decision(code, hdr)
	if decision == "" && ep != nil && code != 0 && code < 500 {
		decision = accesslog.DecisionAllow
	}
	dst := ep.peerID()
	span.End(tracing.Outcome{Status: code, Peer: dst, Decision: decision})
	if o.cfg.AccessLog == nil {
		return
	}
	e := accesslog.RequestEntry(r, hdr, code, start, elapsed, span.TraceID())
	e.Direction, e.Source, e.Destination = metrics.Outbound, o.cfg.Identity, dst
	e.Decision, e.DecisionID = decision, id
	o.cfg.AccessLog.Log(e)
}
