package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/attest"
	"github.com/rampart-mesh/rampart/internal/codedigest"
	"github.com/rampart-mesh/rampart/internal/fsutil"
)

func newCodeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "code",
		Short: "Take the digest of a build and sign it, for WorkloadAttestationPolicy",
		Long: `The controller admits a workload's code by its digest or by a signature over that
digest (WorkloadAttestationPolicy spec.code and spec.proxyCode). These commands compute the
digest the controller computes and write the signature file it reads. See docs/attestation.md.`,
	}
	cmd.AddCommand(newCodeDigestCommand(), newCodeSignCommand())
	return cmd
}

// digestFile is the code digest of the file at path, as the controller
// computes it for an executable.
func digestFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	d, err := codedigest.Sum(f, attest.DefaultMaxExecutableSize)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

func newCodeDigestCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "digest <binary>...",
		Short: "Print the code digest of each binary, as spec.code.digests lists it",
		Example: `  rampart code digest bin/orders
  sha256:92d4f60638a96fed36a2d568f5b34cf2e5276d7a568554aa139775b574a10956  bin/orders`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, path := range args {
				d, err := digestFile(path)
				if err != nil {
					return fmt.Errorf("code digest: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %s\n", d, path)
			}
			return nil
		},
	}
}

func newCodeSignCommand() *cobra.Command {
	var keyPath string
	cmd := &cobra.Command{
		Use:   "sign --key <private key PEM> <binary>",
		Short: "Sign a binary's digest and write <binary>.sig, where the controller looks for it",
		Long: `Sign the code digest of a binary with an Ed25519 or ECDSA P-256 private key (PEM, PKCS#8
as ` + "`openssl genpkey`" + ` writes it, or SEC1 EC PRIVATE KEY) and write the signature, base64, to
<binary>.sig beside it. A WorkloadAttestationPolicy that lists the matching public key under
spec.code.signers admits the binary; a binary changed in any way has another digest, and the
signature no longer verifies.`,
		Example: `  openssl genpkey -algorithm ed25519 -out release.key
  openssl pkey -in release.key -pubout        # the publicKey of the policy's signer
  rampart code sign --key release.key bin/orders`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" {
				return fmt.Errorf("code sign: --key is required: the PEM private key to sign with")
			}
			pemData, err := os.ReadFile(keyPath)
			if err != nil {
				return fmt.Errorf("code sign: %w", err)
			}
			key, err := codedigest.ParsePrivateKey(pemData)
			if err != nil {
				return fmt.Errorf("code sign: %s: %w", keyPath, err)
			}
			// The controller looks for the signature beside the file the
			// process executes, with every symbolic link resolved.
			path, err := filepath.EvalSymlinks(args[0])
			if err != nil {
				return fmt.Errorf("code sign: %w", err)
			}
			d, err := digestFile(path)
			if err != nil {
				return fmt.Errorf("code sign: %w", err)
			}
			sig, err := codedigest.Sign(key, d)
			if err != nil {
				return fmt.Errorf("code sign: %w", err)
			}
			sigPath := path + ".sig"
			if err := fsutil.WriteFileAtomic(sigPath, codedigest.EncodeSignature(sig), 0o644); err != nil {
				return fmt.Errorf("code sign: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s  %s\nwrote %s\n", d, path, sigPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "PEM private key (Ed25519 or ECDSA P-256)")
	return cmd
}
