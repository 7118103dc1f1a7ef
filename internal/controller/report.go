package controller

import (
	"net/http"
	"time"

	"github.com/rampart-mesh/rampart/internal/insights/eventlog"
	"github.com/rampart-mesh/rampart/internal/report"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// Report assembles the compliance report of the period that ends now.
func (c *Controller) Report(period time.Duration) (*report.Report, error) {
	now := c.cfg.Now()
	since := now.Add(-period)
	in := report.Inputs{
		Now:         now,
		Period:      period,
		TrustDomain: c.td.Name(),
		Workloads:   c.model.Coverage(),
	}
	if c.insights != nil {
		in.Totals = c.insights.Totals(since)
	}
	if c.events != nil {
		in.Events = c.events.List(eventlog.Query{Since: since})
	}

	st := c.IdentityStatus() // what GET /identity answers
	in.Identity = report.Identity{
		Issuer:       report.Cert{Serial: st.Issuer.Serial, Subject: st.Issuer.Subject, NotAfter: st.Issuer.NotAfter},
		Certificates: st.Workloads,
		Warnings:     st.Warnings,
	}
	for _, a := range st.TrustAnchors {
		in.Identity.TrustAnchors = append(in.Identity.TrustAnchors, report.Cert{Serial: a.Serial, Subject: a.Subject, Role: a.Role, NotAfter: a.NotAfter})
	}

	in.RevokedIdentities, in.RevokedSerials = map[string]string{}, map[string]bool{}
	c.revoked.mu.Lock()
	active, set := c.revoked.active, c.revoked.set
	c.revoked.mu.Unlock()
	if active != nil {
		for _, id := range active.Identities {
			if !id.Released() {
				in.RevokedIdentities[id.SPIFFEID] = id.Reason
			}
		}
		for _, cert := range active.Certificates {
			in.RevokedSerials[cert.Serial] = true
		}
	}
	for _, l := range st.Workloads {
		if set != nil && c.leaves.descendsFromRevoked(l.Serial, set) {
			in.RevokedSerials[l.Serial] = true
		}
	}

	q := &c.quarantined
	q.mu.Lock()
	loaded := q.loaded
	q.mu.Unlock()
	in.Quarantined = []report.Quarantined{}
	if loaded != nil {
		for _, e := range loaded.Active(now).Identities {
			in.Quarantined = append(in.Quarantined, report.Quarantined{SPIFFEID: e.SPIFFEID, Until: e.Until, Reason: e.Reason, Since: e.Since, By: e.By})
		}
	}
	return report.Assemble(in)
}

// serveReport is GET /api/v1/report?since=24h: the compliance report of the
// period (1h to 7d, in whole hours or days) as JSON.
func (c *Controller) serveReport(w http.ResponseWriter, r *http.Request) {
	qs := r.URL.Query()
	for k := range qs {
		if k != "since" {
			writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: "report: unknown query parameter " + k + "; the only one is since (1h to 7d, such as 24h or 7d)"})
			return
		}
	}
	if len(qs["since"]) > 1 {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: "report: since given more than once"})
		return
	}
	period, err := report.ParsePeriod(qs.Get("since"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: err.Error()})
		return
	}
	rep, err := c.Report(period)
	if err != nil {
		c.logger.Error("cannot assemble the compliance report", "error", err.Error())
		writeJSON(w, http.StatusInternalServerError, graph.ErrorResponse{Error: err.Error()})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, rep)
}
