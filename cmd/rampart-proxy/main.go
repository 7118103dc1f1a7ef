// Command rampart-proxy is the Rampart data plane: the proxy beside each
// workload. See docs/proxy.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rampart-mesh/rampart/internal/logging"
	"github.com/rampart-mesh/rampart/internal/proxy"
	"github.com/rampart-mesh/rampart/internal/proxy/accesslog"
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
	appUID := fs.Int("app-uid", -1, "with -- <command>: the user the app runs as (the proxy needs the privilege to switch); required with --outbound-listen, since iptables lets the proxy's own user's traffic through")
	appGID := fs.Int("app-gid", -1, "with -- <command>: the group the app runs as; defaults to --app-uid's primary group when that is given")
	fs.StringVar(&cfg.OutboundListen, "outbound-listen", "", "transparent mode: where iptables redirects the app's outbound connections, such as "+proxy.DefaultOutboundListen+" (see `rampart-proxy iptables`)")
	var egressHosts string
	fs.StringVar(&egressHosts, "egress-hosts-file", "", "transparent mode: a hosts file (\"address name...\" lines) whose names the egress allow-list check resolves from it rather than DNS; for tests, and for proxies that cannot reach DNS")
	fs.StringVar(&cfg.InboundListen, "inbound-listen", "", "transparent mode: where iptables redirects inbound connections that bypass the tunnel, such as "+proxy.DefaultInboundListen+"; they are refused and counted")
	fs.DurationVar(&cfg.DrainDelay, "drain-delay", 0, "on shutdown, how long to keep serving after readiness turns false and the controller withdraws the workload")
	fs.Var(&upstreams, "upstream", "service[.namespace][:port]=host:port: a local listener the app calls to reach a service (repeatable)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", proxy.DefaultDrainTimeout, "how long to let requests in flight finish on shutdown")
	fs.DurationVar(&cfg.TelemetryInterval, "telemetry-interval", telemetry.DefaultInterval, "how often to send the per-edge traffic summary to the controller; 0 turns it off")
	fs.DurationVar(&appStopTimeout, "app-stop-timeout", app.DefaultStopTimeout, "with an app (-- <command>): how long it may take to exit after SIGTERM before it is killed")
	var (
		sampleRatio float64
		accessLog   string
	)
	fs.StringVar(&cfg.Tracing.Endpoint, "otlp-endpoint", "", "host:port of an OTLP/gRPC trace collector: the proxy then exports a span per HTTP request (see docs/observability.md#tracing)")
	fs.BoolVar(&cfg.Tracing.Insecure, "otlp-insecure", false, "send spans to --otlp-endpoint without TLS, for a collector that has none")
	fs.Float64Var(&sampleRatio, "trace-sample-ratio", 1.0, "share of new traces sampled, 0 to 1; a request with a trace context follows its caller's decision")
	fs.StringVar(&accessLog, "access-log", "", "\"json\": write a JSON line per HTTP request to standard output (see docs/observability.md#access-logs); empty writes none")
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
	if i := len(args) - len(appArgv) - 1; len(appArgv) > 0 && (i < 0 || args[i] != "--") {
		return 2, fmt.Errorf("unexpected argument %q: to run an app, put its command line after --", appArgv[0])
	}
	var appCred *syscall.Credential
	if len(appArgv) > 0 {
		var err error
		if appCred, err = appCredential(*appUID, *appGID, cfg.OutboundListen != ""); err != nil {
			return 2, err
		}
	} else if *appUID != -1 || *appGID != -1 {
		return 2, errors.New("--app-uid and --app-gid need an app: put its command line after --")
	}
	logger, err := logging.New(os.Stderr, logLevel, logFormat)
	if err != nil {
		return 2, err
	}
	switch {
	case cfg.TelemetryInterval < 0 || (cfg.TelemetryInterval > 0 && (cfg.TelemetryInterval < telemetry.MinSentInterval || cfg.TelemetryInterval > telemetry.MaxSentInterval)):
		return 2, fmt.Errorf("--telemetry-interval %v out of range: give %v to %v (default %v), or 0 to turn telemetry off",
			cfg.TelemetryInterval, telemetry.MinSentInterval, telemetry.MaxSentInterval, telemetry.DefaultInterval)
	case cfg.TelemetryInterval == 0:
		cfg.TelemetryInterval = -1 // off
	}
	if err := tracingFlags(&cfg, fs, sampleRatio, accessLog); err != nil {
		return 2, err
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
		appCfg := app.Config{
			Argv: appArgv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, StopTimeout: appStopTimeout,
		}
		appCfg.Credential = appCred
		return runWithApp(cfg, appCfg, logger)
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

// appCredential returns the user the app runs as, nil for the proxy's own.
// Under transparent interception the proxy's user is the one iptables
// exempts, so an app running as it would bypass the proxy entirely: the
// app must then run as another user.
func appCredential(uid, gid int, transparent bool) (*syscall.Credential, error) {
	if uid < -1 || gid < -1 || uid > math.MaxUint32-1 || gid > math.MaxUint32-1 {
		return nil, errors.New("--app-uid and --app-gid must be user and group IDs")
	}
	if uid == -1 {
		if gid != -1 {
			return nil, errors.New("--app-gid needs --app-uid")
		}
		if transparent {
			return nil, errors.New("--outbound-listen with -- <command> needs --app-uid: the app would run as the proxy's own user, whose traffic iptables lets through, and bypass the proxy")
		}
		return nil, nil
	}
	if uid == os.Geteuid() {
		return nil, fmt.Errorf("--app-uid %d is the proxy's own user: give the app another one", uid)
	}
	if gid == -1 {
		u, err := user.LookupId(strconv.Itoa(uid))
		if err != nil {
			return nil, fmt.Errorf("--app-uid %d: %w; give --app-gid", uid, err)
		}
		if gid, err = strconv.Atoi(u.Gid); err != nil {
			return nil, fmt.Errorf("--app-uid %d: primary group %q: %w", uid, u.Gid, err)
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false}, nil
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
			if ctx.Err() == nil {
				// Drain first: the app keeps serving the requests that
				// are still arriving; it is stopped once the proxy has
				// drained (below).
				logger.Info("signal: draining, then stopping the app", "signal", sig.String())
				cancel()
				continue
			}
			logger.Info("second signal: forwarding it to the app", "signal", sig.String())
			if err := a.Signal(sig.(syscall.Signal)); err != nil {
				logger.Warn("could not forward the signal to the app", "err", err)
			}
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

// tracingFlags checks the tracing and access log flags and sets them in
// cfg.
func tracingFlags(cfg *proxy.Config, fs *flag.FlagSet, sampleRatio float64, accessLog string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.Tracing.Endpoint == "" && (set["otlp-insecure"] || set["trace-sample-ratio"]) {
		return errors.New("--otlp-insecure and --trace-sample-ratio need --otlp-endpoint, the collector to send spans to")
	}
	cfg.Tracing.SampleRatio = sampleRatio
	if cfg.Tracing.Endpoint != "" {
		if err := cfg.Tracing.Validate(); err != nil {
			return fmt.Errorf("--otlp-endpoint, --trace-sample-ratio: %w", err)
		}
	}
	switch accessLog {
	case "":
	case accesslog.FormatJSON:
		cfg.AccessLog = os.Stdout
	default:
		return fmt.Errorf("--access-log %q: the only format is %q (or leave it empty for none)", accessLog, accesslog.FormatJSON)
	}
	return nil
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
