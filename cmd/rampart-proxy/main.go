// Command rampart-proxy is the Rampart data plane: the proxy beside each
// workload. See docs/proxy.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rampart-mesh/rampart/internal/logging"
	"github.com/rampart-mesh/rampart/internal/proxy"
	"github.com/rampart-mesh/rampart/internal/proxy/app"
	"github.com/rampart-mesh/rampart/internal/proxy/egress"
	"github.com/rampart-mesh/rampart/internal/proxy/outbound"
	"github.com/rampart-mesh/rampart/internal/proxy/telemetry"
)

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "rampart-proxy:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// run runs the proxy and returns the exit status: with an app, the app's.
func run(args []string) (int, error) {
	if len(args) > 0 && args[0] == "iptables" {
		return 0, runIPTables(args[1:])
	}
	fs := flag.NewFlagSet("rampart-proxy", flag.ContinueOnError)
	var (
		cfg                 proxy.Config
		bundleFile, labels  string
		tokenFile           string
		upstreams           listFlag
		logLevel, logFormat string
		appStopTimeout      time.Duration
	)
	fs.StringVar(&cfg.Controller, "controller", proxy.DefaultController, "controller gRPC address: host:port, or unix:///path of the controller's --attest-socket, where this process is attested without a join token")
	fs.StringVar(&bundleFile, "trust-bundle", "", "PEM file with the mesh's root certificates (the controller writes <state-dir>/bundle.pem)")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "", "trust domain (default: the one named by the trust bundle)")
	fs.StringVar(&cfg.JoinToken, "join-token", os.Getenv("RAMPART_JOIN_TOKEN"), "single-use join token from `rampart token create` (or $RAMPART_JOIN_TOKEN)")
	fs.StringVar(&tokenFile, "join-token-file", "", "file holding the join token")
	fs.StringVar(&cfg.Namespace, "namespace", "default", "namespace of the workload's identity")
	fs.StringVar(&cfg.ServiceAccount, "service-account", "", "service account of the workload's identity (default: the workload name)")
	fs.StringVar(&cfg.Workload, "workload", "", "name of this workload instance (required)")
	fs.StringVar(&labels, "labels", "", "workload labels, k=v[,k=v...], which select it into services")
	fs.StringVar(&cfg.TunnelListen, "tunnel-listen", proxy.DefaultTunnelListen, "address for mTLS tunnel connections from peer proxies")
	fs.StringVar(&cfg.Advertise, "advertise", "", "tunnel address given to peers (default: the bound --tunnel-listen)")
	fs.StringVar(&cfg.AdminListen, "admin-listen", proxy.DefaultAdminListen, "admin address: /ready /live /metrics /config")
	fs.StringVar(&cfg.Address, "address", "", "the workload's own IP address, by which peers may dial it directly (default: the host of --advertise)")
	fs.StringVar(&cfg.OutboundListen, "outbound-listen", "", "transparent mode: where iptables redirects the app's outbound connections, such as "+proxy.DefaultOutboundListen+" (see `rampart-proxy iptables`)")
	var egressHosts string
	fs.StringVar(&egressHosts, "egress-hosts-file", "", "transparent mode: a hosts file (\"address name...\" lines) whose names the egress allow-list check resolves from it rather than DNS; for tests, and for proxies that cannot reach DNS")
	fs.StringVar(&cfg.InboundListen, "inbound-listen", "", "transparent mode: where iptables redirects inbound connections that bypass the tunnel, such as "+proxy.DefaultInboundListen+"; they are refused and counted")
	fs.DurationVar(&cfg.DrainDelay, "drain-delay", 0, "on shutdown, how long to keep serving after readiness turns false and the controller withdraws the workload")
	fs.Var(&upstreams, "upstream", "service[.namespace][:port]=host:port: a local listener the app calls to reach a service (repeatable)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", proxy.DefaultDrainTimeout, "how long to let requests in flight finish on shutdown")
	fs.DurationVar(&cfg.TelemetryInterval, "telemetry-interval", telemetry.DefaultInterval, "how often to send the per-edge traffic summary to the controller; 0 turns it off")
	fs.DurationVar(&appStopTimeout, "app-stop-timeout", app.DefaultStopTimeout, "with an app (-- <command>): how long it may take to exit after SIGTERM before it is killed")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: rampart-proxy [flags] [-- <app command> [args...]]\n\n"+
			"With an app command, the proxy runs the app as its child, and over the controller's Unix\n"+
			"attestation socket the controller measures the app's executable as the workload's code.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, err
	}
	appArgv := fs.Args()
	if len(appArgv) > 0 && args[len(args)-len(appArgv)-1] != "--" {
		return 2, fmt.Errorf("unexpected argument %q: to run an app, put its command line after --", appArgv[0])
	}
	logger, err := logging.New(os.Stderr, logLevel, logFormat)
	if err != nil {
		return 2, err
	}
	switch {
	case cfg.TelemetryInterval < 0 || (cfg.TelemetryInterval > 0 && cfg.TelemetryInterval < time.Second):
		return 2, fmt.Errorf("--telemetry-interval %v out of range: give at least 1s (default %v), or 0 to turn telemetry off", cfg.TelemetryInterval, telemetry.DefaultInterval)
	case cfg.TelemetryInterval == 0:
		cfg.TelemetryInterval = -1 // off
	}
	if bundleFile == "" {
		return 2, errors.New("--trust-bundle is required: the proxy must be able to verify the controller")
	}
	if cfg.TrustBundle, err = proxy.LoadBundle(bundleFile); err != nil {
		return 2, err
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return 2, fmt.Errorf("join token: %w", err)
		}
		cfg.JoinToken = strings.TrimSpace(string(b))
	}
	if cfg.Labels, err = parseLabels(labels); err != nil {
		return 2, err
	}
	for _, u := range upstreams {
		up, err := outbound.ParseUpstream(u)
		if err != nil {
			return 2, err
		}
		cfg.Upstreams = append(cfg.Upstreams, up)
	}
	cfg.Logger = logger.With("workload", cfg.Workload)
	if egressHosts != "" {
		h, err := egress.LoadHosts(egressHosts)
		if err != nil {
			return 2, err
		}
		h.Fallback = net.DefaultResolver
		cfg.EgressResolver = h
	}
	if len(appArgv) > 0 {
		return runWithApp(cfg, app.Config{
			Argv: appArgv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, StopTimeout: appStopTimeout,
		}, logger)
	}

	p, err := proxy.New(cfg)
	if err != nil {
		return 1, err
	}
	logger.Info("rampart-proxy starting", "spiffe_id", p.ID().String(), "tunnel", p.TunnelAddr(), "admin", p.AdminAddr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx); err != nil {
		return 1, err
	}
	logger.Info("rampart-proxy stopped", slog.String("spiffe_id", p.ID().String()))
	return 0, nil
}

// runWithApp starts the app as the proxy's child, before the proxy asks
// for its identity (the controller measures the app), then runs the proxy.
// SIGINT and SIGTERM go to the app too. When the app exits, or on a
// signal, the proxy drains; the exit status is then the app's. When the
// proxy fails (its identity refused), it stops the app and fails.
func runWithApp(cfg proxy.Config, appCfg app.Config, logger *slog.Logger) (int, error) {
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)

	a, err := app.Start(appCfg)
	if err != nil {
		return 1, err
	}
	cfg.AppPID = a.PID()
	p, err := proxy.New(cfg)
	if err != nil {
		a.Stop()
		return 1, err
	}
	logger.Info("rampart-proxy starting", "spiffe_id", p.ID().String(), "tunnel", p.TunnelAddr(), "admin", p.AdminAddr(),
		"app_pid", a.PID(), "app", appCfg.Argv[0])

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	var appDone <-chan struct{} = a.Done()
	for {
		select {
		case sig := <-sigc:
			logger.Info("signal: stopping the app and draining", "signal", sig.String())
			if err := a.Signal(sig.(syscall.Signal)); err != nil {
				logger.Warn("could not forward the signal to the app", "err", err)
			}
			cancel()
		case <-appDone:
			logger.Info("the app exited; draining", "app", a.String())
			appDone = nil
			cancel()
		case err := <-runErr:
			if err != nil {
				a.Stop()
				return 1, fmt.Errorf("%w (the app was stopped: %v)", err, a)
			}
			a.Stop()
			logger.Info("rampart-proxy stopped", "spiffe_id", p.ID().String(), "app", a.String())
			return a.ExitCode(), nil
		}
	}
}

func parseLabels(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	m := make(map[string]string)
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		m[k] = v
	}
	return m, nil
}
