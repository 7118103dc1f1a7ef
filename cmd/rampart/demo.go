package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/demo"
	"github.com/rampart-mesh/rampart/internal/demo/apps"
)

func newDemoCommand() *cobra.Command {
	var (
		cfg     demo.Config
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a mesh of three services on this machine and watch their traffic",
		Long: `Run a whole Rampart mesh on this machine: the controller, and four workloads
(loadgen -> web -> orders -> payments), each beside its own rampart-proxy, so
that every call goes over mTLS between SPIFFE identities. The demo prints where
everything listens, traces one request through the chain, then prints the
traffic of every hop at a fixed interval. Ctrl-C stops everything.

See docs/demo.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.BinDir == "" {
				dir, err := executableDir()
				if err != nil {
					return fmt.Errorf("demo: finding the binaries: %w; pass --bin-dir", err)
				}
				cfg.BinDir = dir
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			cfg.Out = cmd.OutOrStdout()
			cfg.Logger = newLogger(cmd.ErrOrStderr(), level)
			d, err := demo.New(cfg)
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.BinDir, "bin-dir", "", "directory holding rampart-controller and rampart-proxy (default: the directory of this executable)")
	f.StringVar(&cfg.StateDir, "state-dir", "", "directory for the controller's state, the service files and the logs (default: a new temporary directory, removed on a clean exit)")
	f.DurationVar(&cfg.Interval, "interval", demo.DefaultInterval, "how often to print the traffic table")
	f.Float64Var(&cfg.Rate, "rate", demo.DefaultRate, "requests per second that loadgen sends")
	f.BoolVarP(&verbose, "verbose", "v", false, "log what the demo does to stderr")
	return cmd
}

// executableDir is the directory of the running executable, symlinks
// resolved.
func executableDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Dir(exe), nil
}

// newDemoAppCommand runs one of the demo's apps; `rampart demo` starts it.
func newDemoAppCommand() *cobra.Command {
	var (
		cfg  apps.Config
		role string
	)
	cmd := &cobra.Command{
		Use:    "demo-app",
		Short:  "Run one app of the demo (started by rampart demo)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Role = apps.Role(role)
			cfg.Logger = newLogger(cmd.ErrOrStderr(), slog.LevelInfo)
			a, err := apps.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "web, orders, payments or loadgen")
	f.StringVar(&cfg.Listen, "listen", "", "address to serve on (web, orders, payments)")
	f.StringVar(&cfg.Orders, "orders", "", "base URL of orders (web)")
	f.StringVar(&cfg.Payments, "payments", "", "host:port of payments, called with gRPC in plaintext (orders)")
	f.StringVar(&cfg.Target, "target", "", "URL to call (loadgen)")
	f.Float64Var(&cfg.Rate, "rate", apps.DefaultRate, "requests per second (loadgen)")
	f.DurationVar(&cfg.Timeout, "timeout", apps.DefaultTimeout, "deadline of every outbound call")
	f.DurationVar(&cfg.Work, "work", 2*time.Millisecond, "mean simulated processing time per authorization (payments)")
	cmd.MarkFlagRequired("role") //nolint:errcheck // the flag exists
	return cmd
}
