// Command rampart-controller runs Rampart's control plane: the identity CA,
// discovery and configuration push to proxies. All the work is in
// internal/controller; this file parses flags, sets up logging and signals,
// and reports a failure with a non-zero exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/logging"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "rampart-controller:", err)
		os.Exit(1)
	}
}

func defaultStateDir() string {
	if home := os.Getenv("HOME"); home != "" {
		return filepath.Join(home, ".rampart")
	}
	return ".rampart"
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("rampart-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       controller.Config
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "log format: text or json")
	)
	fs.StringVar(&cfg.StateDir, "state-dir", defaultStateDir(), "directory holding the CA, join tokens and the published trust bundle")
	fs.StringVar(&cfg.ConfigDir, "config-dir", "", "directory of resource files (Services, Workloads, policies, HTTPRoutes; docs/local-config.md), watched for changes (none: only registered workloads)")
	fs.StringVar(&cfg.Listen, "listen", controller.DefaultListen, "gRPC listen address (host:port)")
	fs.StringVar(&cfg.AttestSocket, "attest-socket", "", "also serve the gRPC API on this Unix socket (mode 0660), where local processes obtain identities by WorkloadAttestationPolicy, without a join token (none: off)")
	fs.StringVar(&cfg.AdminListen, "admin-listen", controller.DefaultAdminListen, `admin HTTP listen address for /metrics, /ready, /live and /identity ("off" disables it)`)
	fs.StringVar(&cfg.TrustDomain, "trust-domain", controller.DefaultTrustDomain, "SPIFFE trust domain of the mesh")
	fs.StringVar(&cfg.Egress, "egress", controller.EgressAllowAny, "what transparent proxies do with connections outside the mesh: allow-any, mesh-only, or allow-listed (only what EgressPolicies admit)")
	fs.DurationVar(&cfg.SVIDTTL, "svid-ttl", controller.DefaultSVIDTTL, "lifetime of issued workload certificates")
	var ext ca.External
	fs.StringVar(&ext.BundleFile, "ca-bundle", "", "external CA: PEM file of the root certificate(s) to trust (with --ca-cert and --ca-key; Rampart then never holds a root key)")
	fs.StringVar(&ext.CertFile, "ca-cert", "", "external CA: PEM intermediate certificate, signed by a root of --ca-bundle, that issues workload certificates")
	fs.StringVar(&ext.KeyFile, "ca-key", "", "external CA: PKCS#8 PEM private key of --ca-cert (mode 0600)")
	fs.DurationVar(&cfg.CAPollInterval, "ca-poll-interval", controller.DefaultCAPollInterval, "how often the CA state is read for rotations made with `rampart identity`")
	fs.StringVar(&cfg.EventsWebhook, "events-webhook", "", "POST every security event's JSON to this http:// or https:// URL (none: off; docs/insights.md)")
	fs.StringVar(&cfg.EventsWebhookCA, "events-webhook-ca", "", "PEM file of the root certificates that verify an https --events-webhook (none: the system's roots)")
	fs.IntVar(&cfg.EventLogMax, "event-log-max", 10_000, "security events kept in the state directory's event log, the newest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if ext != (ca.External{}) {
		cfg.ExternalCA = &ext
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	logger, err := logging.New(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	if cfg.AdminListen == "" {
		// An explicitly empty flag switches the admin listener off rather
		// than falling back to the default.
		cfg.AdminListen = "off"
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	c, err := controller.New(cfg)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}
