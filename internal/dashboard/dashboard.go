// Package dashboard serves the controller's web dashboard: static HTML,
// CSS and JavaScript embedded in the binary (no build step, no framework)
// that poll the controller's JSON APIs (/api/v1/stat, /api/v1/edges,
// /api/v1/series, /identity, /api/v1/events, /api/v1/quarantine) from the
// same admin listener. It serves the
// files only, under a strict Content-Security-Policy; the data stays with
// the controller's handlers. It depends on the standard library and the
// Prometheus client only; never on the controller, the graph or the proxy.
package dashboard

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Prefix is the path the dashboard is served under.
const Prefix = "/dashboard/"

// CSP is the Content-Security-Policy of every answer: the page loads
// scripts, styles and data from its own origin only, runs no inline
// script or style, and may not be framed.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// contentTypes are the types of the files served, by extension: fixed
// here rather than read from the system's MIME tables, which differ from
// machine to machine. A file of another extension is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

//go:embed static
var static embed.FS

// Results of rampart_controller_dashboard_requests_total.
const (
	ResultOK       = "ok"
	ResultNotFound = "not_found"
	ResultMethod   = "bad_method"
)

// Config configures a Handler. The zero value is ready to use.
type Config struct {
	// Registerer receives the dashboard's request counter; nil means none
	// is registered.
	Registerer prometheus.Registerer
}

// Handler serves the dashboard's files under Prefix.
type Handler struct {
	files    fs.FS
	requests *prometheus.CounterVec
}

var _ http.Handler = (*Handler)(nil)

// New returns the dashboard's handler. A counter already registered with
// cfg.Registerer (a second handler on one registry) is shared.
func New(cfg Config) (*Handler, error) {
	files, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_dashboard_requests_total",
		Help: "Requests for the dashboard's files by result: ok, not_found (no such file; directories are not listed), bad_method (not GET or HEAD).",
	}, []string{"result"})
	for _, r := range []string{ResultOK, ResultNotFound, ResultMethod} {
		requests.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(requests); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("dashboard: %w", err)
			}
			requests = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return &Handler{files: files, requests: requests}, nil
}

// ServeHTTP serves the file the path names under Prefix; Prefix itself is
// index.html. Anything else, a directory included, is 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", CSP)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-cache")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.requests.WithLabelValues(ResultMethod).Inc()
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "the dashboard answers GET and HEAD only", http.StatusMethodNotAllowed)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		h.notFound(w, r.URL.Path)
		return
	}
	if name == "" {
		name = "index.html"
	}
	// Only plain file names: no directories, no dot files, nothing that
	// path cleaning would change.
	if strings.Contains(name, "/") || strings.HasPrefix(name, ".") || path.Clean(name) != name || !fs.ValidPath(name) {
		h.notFound(w, r.URL.Path)
		return
	}
	body, err := fs.ReadFile(h.files, name)
	if err != nil {
		h.notFound(w, r.URL.Path)
		return
	}
	ct, ok := contentTypes[path.Ext(name)]
	if !ok {
		h.notFound(w, r.URL.Path)
		return
	}
	h.requests.WithLabelValues(ResultOK).Inc()
	hdr.Set("Content-Type", ct)
	hdr.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func (h *Handler) notFound(w http.ResponseWriter, p string) {
	h.requests.WithLabelValues(ResultNotFound).Inc()
	http.Error(w, fmt.Sprintf("%s: no such file of the dashboard; open %s", p, Prefix), http.StatusNotFound)
}
