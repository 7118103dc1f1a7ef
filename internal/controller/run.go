package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/rampart-mesh/rampart/internal/controlplane"
	"github.com/rampart-mesh/rampart/internal/dashboard"
)

// renewRetry is the wait before retrying a failed renewal of the serving
// certificate.
const renewRetry = 30 * time.Second

// Run serves until ctx ends, then stops gracefully: Watch streams are told
// to reconnect elsewhere, in-flight calls get up to ShutdownTimeout. It
// returns nil after a shutdown asked for by ctx, and the first error
// otherwise. Run may be called once.
func (c *Controller) Run(ctx context.Context) error {
	first := false
	c.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("controller: Run called more than once")
	}

	listenHost, _, _ := net.SplitHostPort(c.cfg.Listen) // checked by Validate
	svid, err := c.issueServingSVID(listenHost)
	if err != nil {
		return err
	}
	if err := c.setServingSVID(svid); err != nil {
		return err
	}
	c.caVersion = c.ca.Version()

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", c.cfg.Listen)
	if err != nil {
		return fmt.Errorf("controller: listen: %w", err)
	}
	var attestLis net.Listener
	if c.cfg.AttestSocket != "" {
		attestLis, err = listenAttestSocket(c.cfg.AttestSocket)
		if err != nil {
			lis.Close()
			return err
		}
		if os.Geteuid() != 0 {
			c.logger.Warn("the controller does not run as root: it can attest only processes of its own user over the Unix socket (reading the executable of another user's process needs root, or CAP_SYS_PTRACE)",
				"attest_socket", c.cfg.AttestSocket)
		}
	}
	var adminLis net.Listener
	if !c.cfg.adminDisabled() {
		adminLis, err = lc.Listen(ctx, "tcp", c.cfg.AdminListen)
		if err != nil {
			lis.Close()
			if attestLis != nil {
				attestLis.Close()
			}
			return fmt.Errorf("controller: admin listen: %w", err)
		}
	}

	gs := grpc.NewServer(
		// On the Unix socket, the credentials also capture the process
		// that connected, for attestation.
		grpc.Creds(controlplane.ServerCredentials(&tls.Config{
			MinVersion: tls.VersionTLS13,
			// Callers are verified by the handlers, so that a refusal is a
			// gRPC status that says why rather than a failed handshake;
			// a first-time proxy has no certificate at all.
			ClientAuth: tls.RequestClientCert,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return c.svid.Certificate()
			},
		})),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
	)
	c.cp.Register(gs)

	var admin *http.Server
	if adminLis != nil {
		admin = &http.Server{Handler: c.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		c.adminAddr = adminLis.Addr().String()
	}
	c.addr = lis.Addr().String()
	close(c.ready)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// A Serve that starts after a shutdown began finds the server
		// stopped: not an error.
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("controller: serve gRPC: %w", err)
		}
		return nil
	})
	if attestLis != nil {
		g.Go(func() error {
			if err := gs.Serve(attestLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("controller: serve gRPC on the attestation socket: %w", err)
			}
			return nil
		})
	}
	if admin != nil {
		g.Go(func() error {
			if err := admin.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("controller: serve admin: %w", err)
			}
			return nil
		})
	}
	if c.watcher != nil {
		g.Go(func() error {
			// Losing the watch (the directory was removed, say) leaves the
			// last good configuration in force: the control plane keeps
			// serving rather than going down with it.
			if err := c.watcher.Run(gctx); err != nil && gctx.Err() == nil {
				c.logger.Error("config directory no longer watched; serving the last good configuration until restarted",
					"dir", c.cfg.ConfigDir, "error", err.Error())
			}
			return nil
		})
	}
	g.Go(func() error { return c.renewServingSVID(gctx, listenHost) })
	g.Go(func() error { return c.watchCA(gctx, listenHost) })
	g.Go(func() error { return c.watchRevocations(gctx) })
	g.Go(func() error { return c.runInsights(gctx) })
	g.Go(func() error { return c.watchQuarantine(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		c.shutdown(gs, admin)
		return nil
	})

	c.serving.Store(true)
	c.logger.Info("controller serving", "addr", c.addr, "admin_addr", c.adminAddr, "attest_socket", c.cfg.AttestSocket,
		"trust_domain", c.td.String(), "spiffe_id", ControllerID(c.td).String(),
		"bundle", c.BundlePath())
	err = g.Wait()
	c.logger.Info("controller stopped")
	return err
}

// shutdown stops serving: not ready, Watch streams drained, in-flight calls
// given ShutdownTimeout, then everything closed.
func (c *Controller) shutdown(gs *grpc.Server, admin *http.Server) {
	c.serving.Store(false)
	c.cp.Drain()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(c.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		c.logger.Warn("graceful stop timed out; closing connections", "timeout", c.cfg.ShutdownTimeout)
		gs.Stop()
		<-stopped
	}
	if admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := admin.Shutdown(ctx); err != nil {
			admin.Close()
		}
	}
}

// renewServingSVID replaces the serving certificate at half its lifetime
// until ctx ends. A failed renewal is retried; the current certificate
// serves meanwhile.
func (c *Controller) renewServingSVID(ctx context.Context, listenHost string) error {
	wait := halfLife(c.svid.Get().Certificates[0].NotAfter, c.cfg.Now())
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		svid, err := c.issueServingSVID(listenHost)
		if err == nil {
			err = c.setServingSVID(svid)
		}
		if err != nil {
			c.logger.Error("serving certificate renewal failed; retrying", "error", err.Error(), "retry_in", renewRetry)
			wait = renewRetry
			continue
		}
		leaf := svid.Certificates[0]
		c.logger.Info("serving certificate renewed", "not_after", leaf.NotAfter)
		wait = halfLife(leaf.NotAfter, c.cfg.Now())
	}
}

// halfLife is half the time left until notAfter, at least 100ms. It is
// measured from now rather than from NotBefore, which the CA backdates for
// clock skew: a short-lived certificate would otherwise be renewed at once.
func halfLife(notAfter, now time.Time) time.Duration {
	return max(notAfter.Sub(now)/2, 100*time.Millisecond)
}

func (c *Controller) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !c.serving.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /identity", c.serveIdentity)
	refused := c.trafficAPIRefused()
	mux.HandleFunc("GET /api/v1/stat", countRefused(refused, "stat", c.serveStat))
	mux.HandleFunc("GET /api/v1/edges", countRefused(refused, "edges", c.serveEdges))
	mux.HandleFunc("GET /api/v1/series", countRefused(refused, "series", c.serveSeries))
	mux.HandleFunc("GET /api/v1/tap", c.serveTap)
	mux.HandleFunc("GET /api/v1/events", countRefused(refused, "events", c.serveEvents))
	mux.HandleFunc("GET /api/v1/quarantine", countRefused(refused, "quarantine", c.serveQuarantine))
	mux.HandleFunc("GET /api/v1/report", countRefused(refused, "report", c.serveReport))
	mux.HandleFunc("GET /api/v1/baseline", countRefused(refused, "baseline", c.serveBaseline))
	if dash, err := dashboard.New(dashboard.Config{Registerer: c.reg}); err != nil {
		c.logger.Error("dashboard not served", "error", err.Error())
	} else {
		mux.Handle(dashboard.Prefix, dash)
		mux.Handle("GET /dashboard", http.RedirectHandler(dashboard.Prefix, http.StatusMovedPermanently))
	}
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "live")
	})
	return mux
}
