package controller

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// Graph is the live traffic graph the proxies' reports feed.
func (c *Controller) Graph() *graph.Graph { return c.graph }

// trafficParams are the query parameters GET /api/v1/stat and
// GET /api/v1/edges accept.
var trafficParams = []string{"namespace", "workload", "window"}

// parseTrafficQuery validates the query of a traffic request; the error
// names the parameter to fix.
func parseTrafficQuery(q url.Values) (graph.Filter, error) {
	var f graph.Filter
	for k, vs := range q {
		if !slices.Contains(trafficParams, k) {
			return f, fmt.Errorf("unknown query parameter %q: want %s", k, strings.Join(trafficParams, ", "))
		}
		if len(vs) > 1 {
			return f, fmt.Errorf("query parameter %q given %d times: give it once", k, len(vs))
		}
	}
	f.Namespace, f.Workload = q.Get("namespace"), q.Get("workload")
	if f.Namespace != "" {
		if err := identity.ValidateName(f.Namespace); err != nil {
			return f, fmt.Errorf("query parameter namespace %q: %w", f.Namespace, err)
		}
	}
	if f.Workload != "" {
		if f.Namespace == "" {
			return f, errors.New("query parameter workload needs namespace too")
		}
		if err := identity.ValidateName(f.Workload); err != nil {
			return f, fmt.Errorf("query parameter workload %q: %w", f.Workload, err)
		}
	}
	w, err := graph.ParseWindow(q.Get("window"))
	if err != nil {
		return f, fmt.Errorf("query parameter window: %w", err)
	}
	f.Window = w
	return f, nil
}

func (c *Controller) serveStat(w http.ResponseWriter, r *http.Request) {
	f, err := parseTrafficQuery(r.URL.Query())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: err.Error()})
		return
	}
	ws, err := c.graph.Workloads(f)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: err.Error()})
		return
	}
	if f.Workload != "" && len(ws) == 0 {
		writeJSON(w, http.StatusNotFound, graph.ErrorResponse{Error: unknownWorkload(f)})
		return
	}
	writeJSON(w, http.StatusOK, graph.StatResponse{Window: f.Window.String(), WindowSeconds: f.Window.Seconds(), Workloads: ws})
}

func (c *Controller) serveEdges(w http.ResponseWriter, r *http.Request) {
	f, err := parseTrafficQuery(r.URL.Query())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: err.Error()})
		return
	}
	if f.Workload != "" && !c.graph.Known(f.Namespace, f.Workload) {
		writeJSON(w, http.StatusNotFound, graph.ErrorResponse{Error: unknownWorkload(f)})
		return
	}
	es, err := c.graph.Edges(f)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: err.Error()})
		return
	}
	if es == nil {
		es = []graph.EdgeStat{}
	}
	writeJSON(w, http.StatusOK, graph.EdgesResponse{Window: f.Window.String(), WindowSeconds: f.Window.Seconds(), Edges: es})
}

func unknownWorkload(f graph.Filter) string {
	return fmt.Sprintf("workload %s/%s has not reported traffic in the last %v: check the name (rampart stat lists the workloads that did) and that its proxy is running",
		f.Namespace, f.Workload, graph.MaxWindow)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
