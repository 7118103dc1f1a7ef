package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/quarantine"
)

func newQuarantineCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quarantine",
		Short: "Isolate an identity for a time, list and release quarantined identities",
		Long: `Quarantine a workload identity: every proxy refuses its handshakes, both
ways, and closes its open tunnel connections, until the quarantine expires or
is released. Unlike rampart identity revoke, the workload keeps its
certificates and its control-plane stream, and recovers without attesting
again. Detections whose response is to quarantine add entries too.
See docs/insights.md.`,
	}
	cmd.AddCommand(newQuarantineAddCommand(), newQuarantineListCommand(), newQuarantineReleaseCommand())
	return cmd
}

// quarantinedIDArg parses a SPIFFE ID of the mesh in stateDir to
// quarantine or release.
func quarantinedIDArg(stateDir, arg string) (spiffeid.ID, error) {
	td, err := ca.StoredTrustDomain(filepath.Join(stateDir, controller.CADir))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("quarantine: %w; is --state-dir the controller's?", err)
	}
	id, err := quarantine.CheckID(strings.TrimSpace(arg))
	if err != nil {
		return spiffeid.ID{}, err
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("quarantine: %s is not in the mesh's trust domain %s", id, td.Name())
	}
	return id, nil
}

func newQuarantineAddCommand() *cobra.Command {
	var (
		stateDir, reason string
		duration         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "add <spiffe-id>",
		Short: "Quarantine an identity for a time",
		Long: fmt.Sprintf(`Quarantine a workload identity for --for (at most %s). The running
controller reads the change at once and pushes it to every proxy. Adding an
identity already quarantined replaces its entry: the new end and reason
apply. The controller's own identity cannot be quarantined.`, quarantine.MaxDuration),
		Example: `  rampart quarantine add spiffe://rampart.local/ns/shop/sa/payments --for 30m --reason "scanning paths"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if duration <= 0 || duration > quarantine.MaxDuration {
				return fmt.Errorf("quarantine: --for %s: want more than 0 and at most %s; revoke an identity to keep out for longer (rampart identity revoke)", duration, quarantine.MaxDuration)
			}
			id, err := quarantinedIDArg(stateDir, args[0])
			if err != nil {
				return err
			}
			now := time.Now().UTC().Truncate(time.Second)
			e := quarantine.Entry{SPIFFEID: id.String(), Since: now, Until: now.Add(duration), Reason: reason, By: quarantine.ByOperator}
			if _, err := quarantine.Update(filepath.Join(stateDir, controller.QuarantineFile), now, func(l *quarantine.List) error {
				return l.Add(e)
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Quarantined %s until %s.\n", id, e.Until.Format(time.RFC3339))
			fmt.Fprintln(cmd.ErrOrStderr(), "The running controller pushes the quarantine to every proxy within seconds (at most its --ca-poll-interval).")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir)")
	f.DurationVar(&duration, "for", time.Hour, "how long the quarantine lasts (at most 168h)")
	f.StringVar(&reason, "reason", "", "why, recorded with the entry and in proxies' logs")
	return cmd
}

func newQuarantineReleaseCommand() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:     "release <spiffe-id>",
		Short:   "End an identity's quarantine now",
		Example: `  rampart quarantine release spiffe://rampart.local/ns/shop/sa/payments`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := quarantinedIDArg(stateDir, args[0])
			if err != nil {
				return err
			}
			var released quarantine.Entry
			if _, err := quarantine.Update(filepath.Join(stateDir, controller.QuarantineFile), time.Now(), func(l *quarantine.List) error {
				released, err = l.Release(id.String())
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Released %s (quarantined since %s by %s).\n", id, released.Since.UTC().Format(time.RFC3339), released.By)
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir)")
	return cmd
}

func newQuarantineListCommand() *cobra.Command {
	var stateDir, output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the quarantined identities",
		Long: `List the identities quarantined now in the controller's state directory:
identity, end, time remaining, reason, and who set it (operator, or the ID of
the detection event).`,
		Example: `  rampart quarantine list
  rampart quarantine list -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("quarantine: -o %q: want table or json", output)
			}
			l, err := quarantine.Load(filepath.Join(stateDir, controller.QuarantineFile))
			if err != nil {
				return err
			}
			now := time.Now()
			view := controller.QuarantineView(l, now)
			w := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(view)
			}
			printQuarantine(w, view, now)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir)")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printQuarantine(w io.Writer, v controller.QuarantineResponse, now time.Time) {
	if len(v.Identities) == 0 {
		fmt.Fprintln(w, "No identity is quarantined.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tUNTIL\tREMAINING\tREASON\tBY")
	for _, e := range v.Identities {
		remaining := "-"
		if until, err := time.Parse(time.RFC3339, e.Until); err == nil {
			remaining = max(until.Sub(now), 0).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.SPIFFEID, e.Until, remaining, cmp.Or(e.Reason, "-"), e.By)
	}
	tw.Flush()
}
