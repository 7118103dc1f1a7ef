// Command rampart-proxy is the Rampart data plane: the proxy beside each
// workload. See docs/proxy.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rampart-mesh/rampart/internal/logging"
	"github.com/rampart-mesh/rampart/internal/proxy"
	"github.com/rampart-mesh/rampart/internal/proxy/outbound"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rampart-proxy:", err)
		os.Exit(1)
	}
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func run(args []string) error {
	if len(args) > 0 && args[0] == "iptables" {
		return runIPTables(args[1:])
	}
	fs := flag.NewFlagSet("rampart-proxy", flag.ContinueOnError)
	var (
		cfg                 proxy.Config
		bundleFile, labels  string
		tokenFile           string
		upstreams           listFlag
		logLevel, logFormat string
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
	fs.StringVar(&cfg.InboundListen, "inbound-listen", "", "transparent mode: where iptables redirects inbound connections that bypass the tunnel, such as "+proxy.DefaultInboundListen+"; they are refused and counted")
	fs.DurationVar(&cfg.DrainDelay, "drain-delay", 0, "on shutdown, how long to keep serving after readiness turns false and the controller withdraws the workload")
	fs.Var(&upstreams, "upstream", "service[.namespace][:port]=host:port: a local listener the app calls to reach a service (repeatable)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", proxy.DefaultDrainTimeout, "how long to let requests in flight finish on shutdown")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logger, err := logging.New(os.Stderr, logLevel, logFormat)
	if err != nil {
		return err
	}
	if bundleFile == "" {
		return errors.New("--trust-bundle is required: the proxy must be able to verify the controller")
	}
	if cfg.TrustBundle, err = proxy.LoadBundle(bundleFile); err != nil {
		return err
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return fmt.Errorf("join token: %w", err)
		}
		cfg.JoinToken = strings.TrimSpace(string(b))
	}
	if cfg.Labels, err = parseLabels(labels); err != nil {
		return err
	}
	for _, u := range upstreams {
		up, err := outbound.ParseUpstream(u)
		if err != nil {
			return err
		}
		cfg.Upstreams = append(cfg.Upstreams, up)
	}
	cfg.Logger = logger.With("workload", cfg.Workload)

	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	logger.Info("rampart-proxy starting", "spiffe_id", p.ID().String(), "tunnel", p.TunnelAddr(), "admin", p.AdminAddr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx); err != nil {
		return err
	}
	logger.Info("rampart-proxy stopped", slog.String("spiffe_id", p.ID().String()))
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
