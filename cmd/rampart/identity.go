package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controller"
)

func newIdentityCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Rotate the mesh's CA and show the identities in use",
		Long: `Rotate the controller's issuer and root without downtime, and show the trust
anchors, the issuer and the workload certificates in use. Rotations change the
CA in the controller's state directory; the running controller picks them up
within its --ca-poll-interval and pushes the new trust bundle to every proxy.
See docs/identity.md.`,
	}
	cmd.AddCommand(newRotateIssuerCommand(), newRotateRootCommand(), newIdentityStatusCommand())
	return cmd
}

// openCA opens the CA in the controller's state directory, in the trust
// domain it was created for.
func openCA(stateDir string) (*ca.CA, error) {
	dir := filepath.Join(stateDir, controller.CADir)
	td, err := ca.StoredTrustDomain(dir)
	if err != nil {
		return nil, err
	}
	return ca.Open(ca.Config{Dir: dir, TrustDomain: td})
}

func newRotateIssuerCommand() *cobra.Command {
	var stateDir, certFile, keyFile string
	cmd := &cobra.Command{
		Use:   "rotate-issuer",
		Short: "Replace the intermediate that signs workload certificates",
		Long: `Replace the intermediate CA that signs workload certificates with a new one
under the active root. Certificates signed by the old intermediate stay valid
until they expire; workloads get certificates from the new one when they
renew. With an external CA, give the new intermediate it issued with --cert
and --key.`,
		Example: `  rampart identity rotate-issuer --state-dir ~/.rampart`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			authority, err := openCA(stateDir)
			if err != nil {
				return fmt.Errorf("identity: %w", err)
			}
			var inter = authority.Intermediate()
			switch {
			case certFile != "" || keyFile != "":
				if certFile == "" || keyFile == "" {
					return errors.New("identity: give both --cert and --key")
				}
				inter, err = authority.ImportIssuer(certFile, keyFile)
			default:
				inter, err = authority.RotateIssuer()
			}
			if err != nil {
				return fmt.Errorf("identity: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "New issuer %s, valid until %s.\n", ca.SerialOf(inter), inter.NotAfter.UTC().Format(time.RFC3339))
			fmt.Fprintln(cmd.ErrOrStderr(), "The running controller issues from it within its --ca-poll-interval; workloads move to it as they renew.")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir)")
	f.StringVar(&certFile, "cert", "", "external CA only: PEM file of the new intermediate certificate")
	f.StringVar(&keyFile, "key", "", "external CA only: PKCS#8 PEM file of its private key (mode 0600)")
	return cmd
}

// Stages of rotate-root.
const (
	stagePrepare  = "prepare"
	stageActivate = "activate"
	stageRetire   = "retire"
)

func newRotateRootCommand() *cobra.Command {
	var (
		stateDir, stage string
		force           bool
	)
	cmd := &cobra.Command{
		Use:   "rotate-root --stage prepare|activate|retire",
		Short: "Replace the root CA in three stages, without downtime",
		Long: `Replace the root CA in three stages, each run when the previous one has reached
every workload:

  prepare   create a new root and add it to the trust bundle of every proxy;
            certificates are still issued under the old root.
  activate  issue from a new intermediate under the new root; both roots
            stay trusted, so old and new certificates verify everywhere.
  retire    remove the old root from the trust bundle. Refused while a
            certificate in use still chains to it (the controller records
            them), unless --force.

Between stages, wait until every workload has renewed its certificate
(rampart identity status shows which root each chains to).`,
		Example: `  rampart identity rotate-root --stage prepare
  rampart identity rotate-root --stage activate
  rampart identity rotate-root --stage retire`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			authority, err := openCA(stateDir)
			if err != nil {
				return fmt.Errorf("identity: %w", err)
			}
			out := cmd.OutOrStdout()
			switch stage {
			case stagePrepare:
				root, err := authority.PrepareRoot()
				if err != nil {
					return fmt.Errorf("identity: %w", err)
				}
				fmt.Fprintf(out, "Prepared root %s, valid until %s; it is now in every trust bundle.\n", ca.SerialOf(root), root.NotAfter.UTC().Format(time.RFC3339))
				fmt.Fprintln(out, "Next: once every workload has renewed (rampart identity status), run --stage activate.")
			case stageActivate:
				inter, err := authority.ActivateRoot()
				if err != nil {
					return fmt.Errorf("identity: %w", err)
				}
				fmt.Fprintf(out, "Issuing from %s under the new root; the old root stays trusted.\n", ca.SerialOf(inter))
				fmt.Fprintln(out, "Next: once every workload certificate chains to the new root (rampart identity status), run --stage retire.")
				fmt.Fprintln(out, "The controller's own (serving) certificate stays under the old root until then, so that proxies that missed prepare still reach it.")
			case stageRetire:
				root, err := authority.RetireRoot(force)
				if err != nil {
					return fmt.Errorf("identity: %w", err)
				}
				fmt.Fprintf(out, "Retired root %s; it leaves every trust bundle now.\n", ca.SerialOf(root))
			default:
				return fmt.Errorf("identity: --stage %q: want %s, %s or %s", stage, stagePrepare, stageActivate, stageRetire)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir)")
	f.StringVar(&stage, "stage", "", "prepare, activate or retire")
	f.BoolVar(&force, "force", false, "retire even while certificates in use chain to the old root (their holders then fail every new handshake)")
	cmd.MarkFlagRequired("stage") //nolint:errcheck // the flag exists
	return cmd
}

func newIdentityStatusCommand() *cobra.Command {
	var (
		admin  string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the trust anchors, the issuer and the workload certificates in use",
		Long: `Show what the running controller trusts and issues, read from its admin
listener (/identity): the trust anchors with their expiry, the issuer, and
each workload's certificate in use (serial, identity, attested code digest,
expiry, and the root it chains to), with warnings for a root or issuer that
expires within 30 or 7 days.`,
		Example: `  rampart identity status --admin 127.0.0.1:15014`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			body, err := fetchIdentity(ctx, admin)
			if err != nil {
				return err
			}
			if asJSON {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var st controller.IdentityStatus
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("identity: the controller's answer: %w", err)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&admin, "admin", controller.DefaultAdminListen, "the controller's admin address (its --admin-listen)")
	f.BoolVar(&asJSON, "json", false, "print the controller's JSON as is")
	return cmd
}

func fetchIdentity(ctx context.Context, admin string) ([]byte, error) {
	u := admin
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u, "/")+"/identity", nil)
	if err != nil {
		return nil, fmt.Errorf("identity: --admin %q: %w", admin, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("identity: %w; is the controller running with --admin-listen %s?", err, admin)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("identity: %s answered %s", req.URL, resp.Status)
	}
	return body, nil
}

func printStatus(w io.Writer, st controller.IdentityStatus) {
	kind := "Rampart's own CA"
	if st.External {
		kind = "external CA"
	}
	fmt.Fprintf(w, "Trust domain %s (%s)\n\n", st.TrustDomain, kind)
	date := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TRUST ANCHOR\tROLE\tEXPIRES\tSUBJECT")
	for _, a := range st.TrustAnchors {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Serial, a.Role, date(a.NotAfter), a.Subject)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nIssuer %s under root %s, expires %s\n\n", st.Issuer.Serial, st.Issuer.Root, date(st.Issuer.NotAfter))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tSERIAL\tCODE DIGEST\tEXPIRES\tROOT")
	for _, l := range st.Workloads {
		id := l.SPIFFEID
		if l.Kind == ca.KindServing {
			// Under the previous root until retire, on purpose.
			id += " (serving)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, l.Serial, cmp.Or(l.CodeDigest, "-"), date(l.NotAfter), cmp.Or(l.Root, "?"))
	}
	tw.Flush()
	if len(st.Warnings) > 0 {
		fmt.Fprintln(w)
		for _, m := range st.Warnings {
			fmt.Fprintln(w, m)
		}
	}
}
