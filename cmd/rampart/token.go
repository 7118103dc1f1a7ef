package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// tokensFile is the join-token store in the controller's state directory.
const tokensFile = "tokens.json"

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens, which admit workloads outside Kubernetes to the mesh",
	}
	cmd.AddCommand(newTokenCreateCommand())
	return cmd
}

func newTokenCreateCommand() *cobra.Command {
	var (
		stateDir, namespace, serviceAccount, trustDomain string
		ttl                                              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a single-use join token and print it",
		Long: `Create a single-use join token in the controller's token store and print it.
A proxy started with --join-token presents it once to obtain its first
certificate, for spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
The controller may be running: the store file is shared safely.`,
		Example: `  rampart token create --state-dir ~/.rampart --namespace shop --service-account orders`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			td, err := spiffeid.TrustDomainFromString(trustDomain)
			if err != nil {
				return fmt.Errorf("token: --trust-domain %q: %w", trustDomain, err)
			}
			id, err := identity.WorkloadID(td, namespace, serviceAccount)
			if err != nil {
				return fmt.Errorf("token: %w", err)
			}
			store, err := identity.OpenTokenStore(filepath.Join(stateDir, tokensFile), nil)
			if err != nil {
				return fmt.Errorf("token: %w", err)
			}
			tok, err := store.Create(id, ttl)
			if err != nil {
				return fmt.Errorf("token: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			fmt.Fprintf(cmd.ErrOrStderr(), "The token admits its bearer once as %s until %s.\n",
				id, time.Now().Add(ttl).Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir)")
	f.StringVar(&namespace, "namespace", "", "namespace of the workload's identity")
	f.StringVar(&serviceAccount, "service-account", "", "service account of the workload's identity")
	f.StringVar(&trustDomain, "trust-domain", "rampart.local", "SPIFFE trust domain of the mesh")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token may wait to be used")
	cmd.MarkFlagRequired("namespace")       //nolint:errcheck // the flag exists
	cmd.MarkFlagRequired("service-account") //nolint:errcheck // the flag exists
	return cmd
}

// defaultStateDir is the controller's default --state-dir.
func defaultStateDir() string {
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".rampart")
	}
	return ".rampart"
}
