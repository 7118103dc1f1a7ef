// Package apps holds the small services that `rampart demo` runs behind
// Rampart proxies: loadgen calls web (HTTP) at a steady rate, web calls
// orders (HTTP), orders calls payments (gRPC). Each app talks only to its
// own proxy's loopback listeners and reads who called it from what the
// receiving proxy adds (the Rampart-Client-Id header, the rampart-client-id
// gRPC metadata key), so the demo can show the verified identity at every
// hop.
//
// The apps know nothing of Rampart's internals: this package must not import
// the proxy, the controller or the mesh API. They are demo code, kept small;
// every outbound call still carries a deadline and every failure is logged.
package apps

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rampart-mesh/rampart/internal/demo/paymentspb"
)

// Role names one of the demo apps.
type Role string

// Roles.
const (
	RoleWeb      Role = "web"
	RoleOrders   Role = "orders"
	RolePayments Role = "payments"
	RoleLoadgen  Role = "loadgen"
)

// Roles lists every role, in the order a request flows through them.
var Roles = []Role{RoleLoadgen, RoleWeb, RoleOrders, RolePayments}

// What the receiving proxy adds to a request: the verified SPIFFE ID of the
// caller. Proxies remove any copy that arrives from outside the mesh.
const (
	// CallerHeader is the HTTP header.
	CallerHeader = "Rampart-Client-Id"
	// CallerMetadataKey is the same header as gRPC metadata.
	CallerMetadataKey = "rampart-client-id"
)

// Defaults of Config.
const (
	DefaultRate    = 5
	DefaultTimeout = 2 * time.Second
	// shutdownTimeout bounds the graceful stop of a server.
	shutdownTimeout = 5 * time.Second
)

// Config configures one app.
type Config struct {
	// Role picks the app. Required.
	Role Role
	// Listen is the app's own address, such as 127.0.0.1:8080. Required
	// for web, orders and payments; loadgen serves nothing.
	Listen string
	// Orders is the base URL web calls orders at: web's proxy's outbound
	// listener for orders. Required for web.
	Orders string
	// Payments is the host:port orders calls payments at, with gRPC in
	// plaintext: orders' proxy's outbound listener for payments (the proxy
	// adds mTLS). Required for orders.
	Payments string
	// Target is the URL loadgen calls: its proxy's outbound listener for
	// web. Required for loadgen.
	Target string
	// Rate is loadgen's requests per second; zero means DefaultRate.
	Rate float64
	// Timeout bounds every outbound call; zero means DefaultTimeout.
	Timeout time.Duration
	// Work makes payments take a random time between zero and twice Work
	// per authorization, so that latency percentiles have something to
	// show; zero means no delay.
	Work time.Duration
	// Logger receives errors and lifecycle events; nil discards them.
	Logger *slog.Logger
}

// Validate reports what is missing or wrong in c.
func (c Config) Validate() error {
	var errs []error
	switch c.Role {
	case RoleWeb:
		if err := checkURL(c.Orders); err != nil {
			errs = append(errs, fmt.Errorf("web needs the orders URL: %w", err))
		}
	case RoleOrders:
		if _, _, err := net.SplitHostPort(c.Payments); err != nil {
			errs = append(errs, fmt.Errorf("orders needs the payments address (host:port): %w", err))
		}
	case RolePayments:
	case RoleLoadgen:
		if err := checkURL(c.Target); err != nil {
			errs = append(errs, fmt.Errorf("loadgen needs the target URL: %w", err))
		}
	default:
		return fmt.Errorf("apps: unknown role %q: want web, orders, payments or loadgen", c.Role)
	}
	if c.Role != RoleLoadgen && c.Listen == "" {
		errs = append(errs, fmt.Errorf("%s needs a listen address", c.Role))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %v is negative", c.Rate))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v is negative", c.Timeout))
	}
	if c.Work < 0 {
		errs = append(errs, fmt.Errorf("work %v is negative", c.Work))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apps: %w", err)
	}
	return nil
}

func checkURL(s string) error {
	if s == "" {
		return errors.New("none given")
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http URL", s)
	}
	return nil
}

// App is one running demo app.
type App struct {
	cfg Config
	log *slog.Logger
	l   net.Listener // nil for loadgen
	run func(ctx context.Context) error
}

// New validates cfg and binds the app's listener.
func New(cfg Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &App{cfg: cfg, log: cfg.Logger.With("app", string(cfg.Role))}

	if cfg.Role == RoleLoadgen {
		g := NewLoadgen(LoadgenConfig{Target: cfg.Target, Rate: cfg.Rate, Timeout: cfg.Timeout, Logger: a.log})
		a.run = g.Run
		return a, nil
	}

	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("apps: %s: %w", cfg.Role, err)
	}
	a.l = l
	switch cfg.Role {
	case RolePayments:
		srv := grpc.NewServer()
		paymentspb.RegisterPaymentsServer(srv, NewPayments(PaymentsConfig{Work: cfg.Work, Logger: a.log}))
		a.run = func(ctx context.Context) error { return serveGRPC(ctx, srv, l) }
	case RoleOrders:
		// NewClient does not connect: the first call does, so orders may
		// start before its proxy.
		conn, err := grpc.NewClient(cfg.Payments, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("apps: orders: payments client: %w", err)
		}
		h := NewOrders(paymentspb.NewPaymentsClient(conn), cfg.Timeout, a.log)
		a.run = func(ctx context.Context) error {
			defer conn.Close()
			return serveHTTP(ctx, h, l, a.log)
		}
	case RoleWeb:
		tr := newTransport()
		h := NewWeb(cfg.Orders, &http.Client{Transport: tr}, cfg.Timeout, a.log)
		a.run = func(ctx context.Context) error {
			defer tr.CloseIdleConnections()
			return serveHTTP(ctx, h, l, a.log)
		}
	}
	return a, nil
}

// Addr is the bound listen address; empty for loadgen.
func (a *App) Addr() string {
	if a.l == nil {
		return ""
	}
	return a.l.Addr().String()
}

// Run serves until ctx ends, then stops gracefully and returns nil; it
// returns an error only when serving fails. Call it once: it releases the
// listener and clients when it returns.
func (a *App) Run(ctx context.Context) error {
	a.log.Info("app started", "listen", a.Addr())
	err := a.run(ctx)
	if err != nil {
		return fmt.Errorf("apps: %s: %w", a.cfg.Role, err)
	}
	a.log.Info("app stopped")
	return nil
}

func newTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
	}
}

// serveHTTP serves h on l until ctx ends.
func serveHTTP(ctx context.Context, h http.Handler, l net.Listener, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// serveGRPC serves srv on l until ctx ends.
func serveGRPC(ctx context.Context, srv *grpc.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(shutdownTimeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		srv.Stop() // GracefulStop returns once Stop has closed everything
		<-stopped
	}
	<-errc
	return nil
}
