package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/fsutil"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/insights/recommend"
)

// maxBaselineBytes bounds a baseline read from a file or the controller.
const maxBaselineBytes = 64 << 20

// recommendFlags are the flags of "policy recommend".
type recommendFlags struct {
	admin, namespace, output, from string
	enforce, partial               bool
	now                            func() time.Time
}

func newPolicyRecommendCommand() *cobra.Command {
	f := recommendFlags{now: time.Now}
	cmd := &cobra.Command{
		Use:   "recommend",
		Short: "Write least-privilege AuthorizationPolicies from the learnt baseline",
		Long: `Read the baseline the controller learnt (GET /api/v1/baseline on its admin
address, or a saved copy with --from) and write one ALLOW AuthorizationPolicy
per destination workload, named <workload>-recommended: one rule per caller
identity, with the methods and path templates it was seen using. The
policies are in mode AUDIT unless --enforce: apply them, watch what they
would deny, then set mode: ENFORCE.

Warnings on stderr say what the policies will deny although it was observed
(plaintext callers, callers past the baseline's bounds), what they allow
more broadly than observed (callers with routes past the bound or opaque
TCP), and which workloads get no policy (no labels to select them by).

While the baseline is still learning the command refuses, saying when
learning ends; --partial recommends from what was learnt so far.`,
		Example: `  rampart policy recommend -o ./recommended
  rampart policy recommend --namespace shop --enforce -o -
  rampart policy recommend --from baseline.json -o ./recommended`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.from != "" && cmd.Flags().Changed("controller-admin") {
				return errors.New("policy recommend: --from and --controller-admin: give one, the saved baseline or the controller to ask")
			}
			return runRecommend(cmd, &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.admin, "controller-admin", controller.DefaultAdminListen, "the controller's admin address (its --admin-listen)")
	fl.StringVar(&f.from, "from", "", "read the baseline from this file (saved from GET /api/v1/baseline) instead of the controller")
	fl.StringVarP(&f.namespace, "namespace", "n", "", "only the workloads of this namespace")
	fl.BoolVar(&f.enforce, "enforce", false, "write the policies in mode ENFORCE instead of AUDIT")
	fl.BoolVar(&f.partial, "partial", false, "recommend although the baseline is still learning")
	fl.StringVarP(&f.output, "output", "o", "-", "a directory to write one file per policy into, or - for all on stdout")
	return cmd
}

func runRecommend(cmd *cobra.Command, f *recommendFlags) error {
	if f.namespace != "" {
		if err := identity.ValidateName(f.namespace); err != nil {
			return fmt.Errorf("policy recommend: --namespace %q: %w", f.namespace, err)
		}
	}
	if f.output == "" {
		return errors.New("policy recommend: -o: give a directory, or - for stdout")
	}
	snap, err := loadBaseline(cmd, f)
	if err != nil {
		return err
	}
	if snap.Learning {
		if !f.partial {
			return fmt.Errorf("policy recommend: the baseline is still learning until %s (%s); recommend then, or now with --partial from what was learnt so far",
				snap.LearningEnds.UTC().Format(time.RFC3339), untilText(f.now(), snap.LearningEnds))
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: the baseline is still learning until %s: callers and routes not seen yet will be denied\n",
			snap.LearningEnds.UTC().Format(time.RFC3339))
	}
	res, err := recommend.Policies(snap, recommend.Options{Namespace: f.namespace, Enforce: f.enforce})
	if err != nil {
		return fmt.Errorf("policy recommend: %w", err)
	}
	if err := res.WriteWarnings(cmd.ErrOrStderr()); err != nil {
		return err
	}
	if len(res.Policies) == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "no policy to recommend: the baseline has no workload with labels and callers"+inNamespace(f.namespace))
		return nil
	}
	if f.output == "-" {
		return res.WriteYAML(cmd.OutOrStdout())
	}
	return writePolicyFiles(cmd.OutOrStdout(), f.output, &res)
}

// loadBaseline reads the snapshot from --from or the controller.
func loadBaseline(cmd *cobra.Command, f *recommendFlags) (*insights.Snapshot, error) {
	var (
		data   []byte
		source string
	)
	if f.from != "" {
		file, err := os.Open(f.from)
		if err != nil {
			return nil, fmt.Errorf("policy recommend: --from: %w", err)
		}
		defer file.Close()
		data, err = io.ReadAll(io.LimitReader(file, maxBaselineBytes+1))
		if err != nil {
			return nil, fmt.Errorf("policy recommend: --from: %w", err)
		}
		if len(data) > maxBaselineBytes {
			return nil, fmt.Errorf("policy recommend: --from %s: larger than %d MiB: not a baseline", f.from, maxBaselineBytes>>20)
		}
		source = f.from
	} else {
		q := url.Values{}
		if f.namespace != "" {
			q.Set("namespace", f.namespace)
		}
		var err error
		if data, err = fetchTraffic(cmd.Context(), "policy recommend", f.admin, "/api/v1/baseline", q); err != nil {
			return nil, err
		}
		source = "the controller at " + f.admin
	}
	var snap insights.Snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return nil, fmt.Errorf("policy recommend: %s: not a baseline (%v): save one from GET /api/v1/baseline", source, err)
	}
	return &snap, nil
}

// writePolicyFiles writes each policy to dir/<namespace>.<name>.yaml,
// creating dir, and lists the files on w.
func writePolicyFiles(w io.Writer, dir string, res *recommend.Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("policy recommend: -o: %w", err)
	}
	for i := range res.Policies {
		rec := &res.Policies[i]
		doc, err := rec.YAML()
		if err != nil {
			return fmt.Errorf("policy recommend: %w", err)
		}
		path := filepath.Join(dir, rec.FileName())
		if err := fsutil.WriteFileAtomic(path, doc, 0o644); err != nil {
			return fmt.Errorf("policy recommend: %w", err)
		}
		fmt.Fprintln(w, path)
	}
	return nil
}

func untilText(now, end time.Time) string {
	d := end.Sub(now).Round(time.Second)
	if d <= 0 {
		return "it ends at the controller's next report"
	}
	return d.String() + " from now"
}

func inNamespace(ns string) string {
	if ns == "" {
		return ""
	}
	return " in namespace " + ns
}
