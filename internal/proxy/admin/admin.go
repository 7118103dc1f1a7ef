// Package admin serves the proxy's admin listener on loopback: liveness,
// readiness, Prometheus metrics and a dump of the configuration the proxy
// currently holds (never its keys).
//
// It must not depend on Kubernetes packages.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures a Server.
type Config struct {
	// Listen is the admin address; keep it on loopback.
	Listen string
	// Gatherer supplies /metrics. Required.
	Gatherer prometheus.Gatherer
	// Ready reports readiness for /ready. Required.
	Ready func() bool
	// Dump returns the value rendered as JSON at /config. Required.
	Dump   func() any
	Logger *slog.Logger
}

// Server is the admin HTTP server.
type Server struct {
	l   net.Listener
	srv *http.Server
}

// New binds the admin listener.
func New(cfg Config) (*Server, error) {
	if cfg.Gatherer == nil || cfg.Ready == nil || cfg.Dump == nil {
		return nil, errors.New("admin: gatherer, ready and dump are required")
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !cfg.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(cfg.Dump()) //nolint:errcheck // client went away
	})
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{l: l, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.l.Addr().String() }

// Close releases the listener of a Server that will not Run.
func (s *Server) Close() { s.l.Close() }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		s.srv.Shutdown(sctx) //nolint:errcheck // best effort on exit
		<-errc
		return nil
	}
}
