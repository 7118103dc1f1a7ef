package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/attest"
)

func TestCodeDigest(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "orders")
	if err := os.WriteFile(bin, []byte("a build"), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("a build"))
	out, _, err := execute(t, "code", "digest", bin)
	if err != nil {
		t.Fatal(err)
	}
	if want := "sha256:" + hex.EncodeToString(sum[:]) + "  " + bin + "\n"; out != want {
		t.Errorf("code digest printed %q, want %q", out, want)
	}
	if _, _, err := execute(t, "code", "digest", filepath.Dir(bin)); err == nil {
		t.Error("code digest of a directory succeeded")
	}
}

// TestCodeSignIsWhatTheControllerVerifies signs a build with each kind of
// key and checks the signature file with the controller's own policy
// code: the signed build is admitted, a changed build carrying a copy of
// the signature file is not.
func TestCodeSignIsWhatTheControllerVerifies(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]any{"ed25519": edKey, "p256": ecKey} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				t.Fatal(err)
			}
			keyPath := filepath.Join(dir, "release.key")
			if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
				t.Fatal(err)
			}
			pub, err := x509.MarshalPKIXPublicKey(key.(crypto.Signer).Public())
			if err != nil {
				t.Fatal(err)
			}
			signed, tampered := filepath.Join(dir, "orders"), filepath.Join(dir, "orders-tampered")
			if err := os.WriteFile(signed, []byte("version=1.0.0"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(tampered, []byte("version=1.0.1"), 0o755); err != nil {
				t.Fatal(err)
			}
			out, _, err := execute(t, "code", "sign", "--key", keyPath, signed)
			if err != nil {
				t.Fatalf("code sign: %v", err)
			}
			if !strings.Contains(out, signed+".sig") {
				t.Errorf("code sign printed %q", out)
			}
			sigFile, err := os.ReadFile(signed + ".sig")
			if err != nil {
				t.Fatal(err)
			}

			td := spiffeid.RequireTrustDomainFromString("example.org")
			policies := attest.NewPolicies(td)
			err = policies.Set([]v1alpha1.WorkloadAttestationPolicy{{
				TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindWorkloadAttestationPolicy},
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "signed"},
				Spec: v1alpha1.WorkloadAttestationPolicySpec{Code: &v1alpha1.CodePolicy{Signers: []v1alpha1.CodeSigner{{
					Name: "release", PublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
				}}}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			id := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/orders")
			check := func(bin string) error {
				d, err := digestFile(bin)
				if err != nil {
					t.Fatal(err)
				}
				return policies.CheckCode(id, attest.Code{Digest: d, Signature: func() ([]byte, error) {
					return attest.DecodeSignature(sigFile)
				}})
			}
			if err := check(signed); err != nil {
				t.Errorf("the signed build is refused: %v", err)
			}
			if err := check(tampered); attest.Reason(err) != attest.ReasonCodeNotAllowed {
				t.Errorf("the changed build with the signed build's signature: %v, want %s", err, attest.ReasonCodeNotAllowed)
			}
		})
	}
}

func TestCodeSignRefusals(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "orders")
	if err := os.WriteFile(bin, []byte("a build"), 0o755); err != nil {
		t.Fatal(err)
	}
	notKey := filepath.Join(dir, "not.key")
	if err := os.WriteFile(notKey, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"code", "sign", bin},
		{"code", "sign", "--key", notKey, bin},
		{"code", "sign", "--key", filepath.Join(dir, "missing.key"), bin},
	} {
		if _, _, err := execute(t, args...); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
	if _, err := os.Stat(bin + ".sig"); !os.IsNotExist(err) {
		t.Errorf("a refused signing left %s.sig: %v", bin, err)
	}
}
