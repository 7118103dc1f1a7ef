package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/revocation"
)

func newIdentityCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Rotate the mesh's CA, show the identities in use, revoke them",
		Long: `Rotate the controller's issuer and root without downtime, show the trust
anchors, the issuer and the workload certificates in use, and revoke a
compromised certificate or identity. Rotations and revocations change the
state directory; the running controller picks them up within its
--ca-poll-interval and pushes the new trust bundle or revocation list to every
proxy. See docs/identity.md.`,
	}
	cmd.AddCommand(newRotateIssuerCommand(), newRotateRootCommand(), newIdentityStatusCommand(),
		newRevokeCommand(), newRevocationsCommand())
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

func newRevokeCommand() *cobra.Command {
	var (
		stateDir, reason string
		release          bool
	)
	cmd := &cobra.Command{
		Use:   "revoke <spiffe-id|serial>",
		Short: "Revoke a certificate or an identity at once, without waiting for expiry",
		Long: `Revoke a compromised workload's certificate (by serial, as rampart identity
status prints it) or identity (a SPIFFE ID of the mesh's trust domain). The
running controller reads the change at once (and within --ca-poll-interval in
any case) and pushes the revocation list to every proxy: their tunnel
connections with the revoked certificate are closed and new handshakes with it
refused, in both directions.

A revoked serial stays revoked until the certificate expires, and so do the
certificates renewed from it; the workload obtains a new certificate only by
attesting again (a new join token). When a key is stolen, revoke the identity:
it also covers what was obtained with the key. A
revoked identity refuses every certificate of it issued before the
revocation, and the controller issues none for it until --release; its
certificates issued before the revocation stay refused after the release,
until they expire. The controller's own identity cannot be revoked.
See docs/identity.md.`,
		Example: `  rampart identity revoke 5f3a9c0d2e8b41f6a7c3d9e0b1f2a4c6 --reason "key leaked"
  rampart identity revoke spiffe://rampart.local/ns/shop/sa/payments --reason "compromised host"
  rampart identity revoke --release spiffe://rampart.local/ns/shop/sa/payments`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			td, err := ca.StoredTrustDomain(filepath.Join(stateDir, controller.CADir))
			if err != nil {
				return fmt.Errorf("identity: %w; is --state-dir the controller's?", err)
			}
			path := filepath.Join(stateDir, controller.RevocationsFile)
			now := time.Now().UTC().Truncate(time.Second)
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			arg := strings.TrimSpace(args[0])
			if release {
				id, err := revokedIdentityArg(arg, td)
				if err != nil {
					return err
				}
				if _, err := revocation.Update(path, now, 0, func(l *revocation.List) error {
					return l.Release(id.String(), now)
				}); err != nil {
					return fmt.Errorf("identity: %w", err)
				}
				fmt.Fprintf(out, "Released %s: the controller issues it again (attest with a new join token); its certificates issued before the revocation stay refused until they expire.\n", id)
				return nil
			}
			if strings.HasPrefix(arg, "spiffe://") {
				id, err := revokedIdentityArg(arg, td)
				if err != nil {
					return err
				}
				if _, err := revocation.Update(path, now, 0, func(l *revocation.List) error {
					return l.RevokeIdentity(revocation.Identity{SPIFFEID: id.String(), RevokedAt: now, Reason: reason})
				}); err != nil {
					return fmt.Errorf("identity: %w", err)
				}
				fmt.Fprintf(out, "Revoked %s at %s: every certificate of it issued before is refused, and none is issued until --release.\n", id, now.Format(time.RFC3339))
				fmt.Fprintln(errOut, "The running controller pushes the list to every proxy within seconds (at most its --ca-poll-interval).")
				return nil
			}
			serial, err := serialArg(arg)
			if err != nil {
				return err
			}
			entry := revocation.Certificate{Serial: serial, RevokedAt: now, Reason: reason}
			leaves, err := recordedLeaves(stateDir)
			if err != nil {
				// Without the record, the serial cannot be told apart
				// from the controller's own certificate.
				return fmt.Errorf("identity: cannot read the record of certificates in use, needed to check that %s is not the controller's own certificate: %w", serial, err)
			}
			leaf, found := findLeaf(leaves, serial)
			switch {
			case !found:
				fmt.Fprintf(errOut, "warning: %s is not among the certificates in use (rampart identity status); revoking it anyway, until one certificate lifetime from now\n", serial)
			case leaf.Kind == ca.KindServing || leaf.SPIFFEID == identity.ControllerID(td).String():
				return fmt.Errorf("identity: %s is the controller's own certificate: revoking it would cut every proxy off the control plane", serial)
			default:
				entry.NotAfter, entry.SPIFFEID = leaf.NotAfter.UTC(), leaf.SPIFFEID
			}
			// The certificates renewed from it go with it: whoever holds
			// its key may have renewed it.
			renewed := renewedFrom(leaves, serial, now)
			if _, err := revocation.Update(path, now, 0, func(l *revocation.List) error {
				for _, c := range append([]revocation.Certificate{entry}, renewed...) {
					if err := l.RevokeCertificate(c); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return fmt.Errorf("identity: %w", err)
			}
			msg := fmt.Sprintf("Revoked certificate %s", serial)
			if entry.SPIFFEID != "" {
				msg += fmt.Sprintf(" of %s (expires %s)", entry.SPIFFEID, entry.NotAfter.Format(time.RFC3339))
			}
			fmt.Fprintln(out, msg+".")
			for _, c := range renewed {
				fmt.Fprintf(out, "Revoked certificate %s of %s (expires %s): it was renewed from %s.\n", c.Serial, c.SPIFFEID, c.NotAfter.Format(time.RFC3339), serial)
			}
			fmt.Fprintln(errOut, "The running controller pushes the list to every proxy within seconds (at most its --ca-poll-interval), with any certificate renewed from this one; the workload must attest again (a new join token) to get a new certificate.")
			fmt.Fprintf(errOut, "If the key was stolen, revoke the identity too: a thief may have attested with it some other way. rampart identity revoke %s\n", cmp.Or(entry.SPIFFEID, "<spiffe-id>"))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir)")
	f.StringVar(&reason, "reason", "", "why, recorded with the entry and in proxies' logs")
	f.BoolVar(&release, "release", false, "let the controller issue a revoked identity again")
	return cmd
}

// revokedIdentityArg parses a SPIFFE ID to revoke or release: one of the
// mesh's trust domain, not the controller's.
func revokedIdentityArg(arg string, td spiffeid.TrustDomain) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(arg)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: %q is not a SPIFFE ID: %w", arg, err)
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("identity: %s is not in the mesh's trust domain %s", id, td.Name())
	}
	if id == identity.ControllerID(td) {
		return spiffeid.ID{}, fmt.Errorf("identity: %s is the controller's own identity: revoking it would cut every proxy off the control plane", id)
	}
	if _, _, err := identity.ParseWorkloadID(id); err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: %s is not a workload identity (spiffe://%s/ns/<namespace>/sa/<service-account>): %w", id, td.Name(), err)
	}
	return id, nil
}

// serialArg reads a certificate serial number in hexadecimal, with or
// without colons, in either case, and returns it as Rampart prints it.
func serialArg(arg string) (string, error) {
	s := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(arg, "0x"), ":", ""))
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 || strings.ContainsAny(s, "+-_") {
		return "", fmt.Errorf("identity: %q is neither a SPIFFE ID (spiffe://...) nor a hexadecimal certificate serial (rampart identity status lists them)", arg)
	}
	serial := n.Text(16)
	if err := revocation.CheckSerial(serial); err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	return serial, nil
}

// recordedLeaves reads the controller's record of certificates in use.
func recordedLeaves(stateDir string) ([]ca.Leaf, error) {
	authority, err := openCA(stateDir)
	if err != nil {
		return nil, err
	}
	return authority.RecordedLeaves()
}

func findLeaf(leaves []ca.Leaf, serial string) (ca.Leaf, bool) {
	for _, l := range leaves {
		if l.Serial == serial {
			return l, true
		}
	}
	return ca.Leaf{}, false
}

// renewedFrom returns the unexpired certificates of leaves renewed,
// directly or not, from serial, as entries revoked with it.
func renewedFrom(leaves []ca.Leaf, serial string, now time.Time) []revocation.Certificate {
	var out []revocation.Certificate
	for _, l := range leaves {
		if l.Serial == serial || l.Kind == ca.KindServing || !now.Before(l.NotAfter) || !l.DescendsFrom(serial) {
			continue
		}
		out = append(out, revocation.Certificate{
			Serial: l.Serial, SPIFFEID: l.SPIFFEID, NotAfter: l.NotAfter.UTC(), RevokedAt: now,
			Reason: "renewed from revoked certificate " + serial,
		})
	}
	return out
}

func newRevocationsCommand() *cobra.Command {
	var stateDir, output string
	cmd := &cobra.Command{
		Use:   "revocations",
		Short: "List the revoked certificates and identities",
		Long: `List the revocation list in the controller's state directory: revoked
certificates (until they expire) and identities (released or not).`,
		Example: `  rampart identity revocations
  rampart identity revocations -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := revocation.Load(filepath.Join(stateDir, controller.RevocationsFile))
			if err != nil {
				return fmt.Errorf("identity: %w", err)
			}
			w := cmd.OutOrStdout()
			switch output {
			case "json":
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if l.Certificates == nil {
					l.Certificates = []revocation.Certificate{}
				}
				if l.Identities == nil {
					l.Identities = []revocation.Identity{}
				}
				return enc.Encode(l)
			case "", "table":
				printRevocations(w, l, time.Now())
				return nil
			}
			return fmt.Errorf("identity: -o %q: want table or json", output)
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir)")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printRevocations(w io.Writer, l *revocation.List, now time.Time) {
	if l.Len() == 0 {
		fmt.Fprintln(w, "Nothing is revoked.")
		return
	}
	date := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tREVOKED\tSTATE\tREVOKED AT\tREASON")
	for _, c := range l.Certificates {
		what := c.Serial
		if c.SPIFFEID != "" {
			what += " (" + c.SPIFFEID + ")"
		}
		var state string
		switch {
		case c.NotAfter.IsZero():
			state = "revoked, expiry unknown"
		case !now.Before(c.NotAfter):
			state = "expired " + date(c.NotAfter)
		default:
			state = "revoked until " + date(c.NotAfter)
		}
		fmt.Fprintf(tw, "certificate\t%s\t%s\t%s\t%s\n", what, state, date(c.RevokedAt), cmp.Or(c.Reason, "-"))
	}
	for _, id := range l.Identities {
		state := "revoked, not issued"
		if id.Released() {
			state = "released " + date(id.ReleasedAt) + "; older certificates refused"
		}
		fmt.Fprintf(tw, "identity\t%s\t%s\t%s\t%s\n", id.SPIFFEID, state, date(id.RevokedAt), cmp.Or(id.Reason, "-"))
	}
	tw.Flush()
}
