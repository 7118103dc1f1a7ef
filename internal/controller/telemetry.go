package controller

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

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

// serveSeries answers GET /api/v1/series: each workload's traffic bucket
// by bucket over the window, for the dashboard's sparklines. It takes the
// query of /api/v1/stat.
func (c *Controller) serveSeries(w http.ResponseWriter, r *http.Request) {
	f, err := parseTrafficQuery(r.URL.Query())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: err.Error()})
		return
	}
	ss, err := c.graph.Series(f)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, graph.ErrorResponse{Error: err.Error()})
		return
	}
	if f.Workload != "" && len(ss) == 0 {
		writeJSON(w, http.StatusNotFound, graph.ErrorResponse{Error: unknownWorkload(f)})
		return
	}
	writeJSON(w, http.StatusOK, graph.SeriesResponse{
		Window: f.Window.String(), WindowSeconds: f.Window.Seconds(),
		StepSeconds: graph.SeriesStep(f.Window).Seconds(), Workloads: ss,
	})
}

// trafficAPIRefused counts the answers of the traffic API that are not
// 200, by endpoint and status code.
func (c *Controller) trafficAPIRefused() *prometheus.CounterVec {
	cv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_traffic_api_refused_total",
		Help: "Requests to /api/v1/stat, /api/v1/edges and /api/v1/series answered with an error, by endpoint and HTTP status code (400: a bad query, 404: an unknown workload).",
	}, []string{"endpoint", "code"})
	if err := c.reg.Register(cv); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
		c.logger.Error("traffic API refusals are not exported", "error", err.Error())
	}
	return cv
}

// countRefused wraps a traffic API handler, counting its error answers.
func countRefused(refused *prometheus.CounterVec, endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r)
		if sw.code != http.StatusOK {
			refused.WithLabelValues(endpoint, strconv.Itoa(sw.code)).Inc()
		}
	}
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}
