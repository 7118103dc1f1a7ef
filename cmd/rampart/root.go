package main

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// newRootCommand builds the rampart command tree, writing to stdout and
// stderr.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "rampart",
		Short:         "Rampart is a zero-trust service mesh",
		Long:          "Rampart is a zero-trust service mesh: mTLS with SPIFFE identities between every pair of workloads, policy, and golden metrics.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newDemoCommand(),
		newDemoAppCommand(),
		newTokenCommand(),
		newIdentityCommand(),
		newPolicyCommand(),
		newCodeCommand(),
		newVersionCommand(),
		newStatCommand(),
		newEdgesCommand(),
		newDashboardCommand(),
		newTapCommand(),
		newEventsCommand(),
		newReportCommand(),
		newQuarantineCommand(),
	)
	return root
}

// newLogger returns a text logger on w at level.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
