package controller

import (
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// serveBaseline answers GET /api/v1/baseline: the insights engine's
// learnt baseline (insights.Snapshot), each workload's labels filled from
// the mesh model, for `rampart policy recommend`. The query parameter
// namespace, when set, keeps that namespace's workloads only.
func (c *Controller) serveBaseline(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k, vs := range q {
		switch {
		case k != "namespace":
			writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: fmt.Sprintf("unknown query parameter %q: the only one is namespace", k)})
			return
		case len(vs) > 1:
			writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: fmt.Sprintf("query parameter %q given %d times: give it once", k, len(vs))})
			return
		}
	}
	ns := q.Get("namespace")
	if ns != "" {
		if err := identity.ValidateName(ns); err != nil {
			writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: fmt.Sprintf("namespace %q: %v", ns, err)})
			return
		}
	}
	writeJSON(w, http.StatusOK, c.labelled(c.insights.Snapshot(), ns))
}

// labelled returns a copy of snap with the workloads of namespace ns (all
// when empty), each with its labels as the mesh model knows them now.
// snap itself is not modified: it may be the engine's.
func (c *Controller) labelled(snap *insights.Snapshot, ns string) *insights.Snapshot {
	out := *snap
	out.Workloads = make([]insights.WorkloadBaseline, 0, len(snap.Workloads))
	for _, wb := range snap.Workloads {
		if ns != "" && wb.Namespace != ns {
			continue
		}
		wb.Labels = nil
		if id, err := spiffeid.FromString(wb.SPIFFEID); err == nil {
			if labels, ok := c.model.WorkloadLabels(id, wb.Workload); ok && len(labels) > 0 {
				wb.Labels = labels
			}
		}
		out.Workloads = append(out.Workloads, wb)
	}
	return &out
}
