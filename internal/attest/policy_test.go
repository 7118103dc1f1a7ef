package attest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/codedigest"
)

func digestOf(s string) string { return codedigest.Format(sha256.Sum256([]byte(s))) }

func pemKey(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// testSigner is a code-signing key pair for tests.
type testSigner struct {
	pem    string
	sign   func(digest string) []byte
	verify func(digest string, sig []byte) bool // independently of the code under test
}

func newEd25519Signer(t testing.TB) testSigner {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testSigner{pem: pemKey(t, pub), sign: func(d string) []byte {
		sum, err := codedigest.Bytes(d)
		if err != nil {
			t.Fatal(err)
		}
		return ed25519.Sign(priv, sum[:])
	}, verify: func(d string, sig []byte) bool {
		sum := sha256Of(d)
		return ed25519.Verify(pub, sum[:], sig)
	}}
}

func newP256Signer(t testing.TB) testSigner {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testSigner{pem: pemKey(t, &key.PublicKey), sign: func(d string) []byte {
		sum, err := codedigest.Bytes(d)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}, verify: func(d string, sig []byte) bool {
		sum := sha256Of(d)
		return ecdsa.VerifyASN1(&key.PublicKey, sum[:], sig)
	}}
}

// sha256Of decodes a digest string by hand, not with codedigest.
func sha256Of(d string) [32]byte {
	var sum [32]byte
	b, err := hex.DecodeString(strings.TrimPrefix(d, "sha256:"))
	if err != nil || len(b) != 32 {
		panic("bad digest " + d)
	}
	copy(sum[:], b)
	return sum
}

func sigOf(b []byte, err error) func() ([]byte, error) {
	return func() ([]byte, error) { return b, err }
}

func TestCheckCode(t *testing.T) {
	good, bad := digestOf("good build"), digestOf("tampered build")
	ed, p256, other := newEd25519Signer(t), newP256Signer(t), newEd25519Signer(t)
	web := workloadID("shop", "web")

	byDigest := newPolicy("shop", "web-code", "web", &v1alpha1.CodePolicy{Digests: []string{good}}, nil)
	bySigner := newPolicy("shop", "signed", "", &v1alpha1.CodePolicy{Signers: []v1alpha1.CodeSigner{{Name: "release", PublicKey: ed.pem}, {Name: "ci", PublicKey: p256.pem}}}, nil)
	meshWide := newPolicy(v1alpha1.RootNamespace, "mesh", "", &v1alpha1.CodePolicy{Digests: []string{good}}, nil)
	unixOnly := newPolicy("shop", "uids", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{1000}})

	tests := []struct {
		name     string
		policies []v1alpha1.WorkloadAttestationPolicy
		id       string // defaults to web
		code     Code
		reason   string // "" admits
	}{
		{name: "no policies admit anything", code: Code{Digest: bad}},
		{name: "no policies admit nothing measured", code: Code{}},
		{name: "policy without code admits anything", policies: []v1alpha1.WorkloadAttestationPolicy{unixOnly}, code: Code{}},
		{name: "listed digest", policies: []v1alpha1.WorkloadAttestationPolicy{byDigest}, code: Code{Digest: good}},
		{name: "unlisted digest", policies: []v1alpha1.WorkloadAttestationPolicy{byDigest}, code: Code{Digest: bad}, reason: ReasonCodeNotAllowed},
		{name: "nothing measured", policies: []v1alpha1.WorkloadAttestationPolicy{byDigest}, code: Code{}, reason: ReasonCodeNotAttested},
		{name: "policy of another service account", policies: []v1alpha1.WorkloadAttestationPolicy{byDigest}, id: "spiffe://example.org/ns/shop/sa/api", code: Code{Digest: bad}},
		{name: "policy of another namespace", policies: []v1alpha1.WorkloadAttestationPolicy{byDigest}, id: "spiffe://example.org/ns/bank/sa/web", code: Code{Digest: bad}},
		{name: "identity of another trust domain", policies: []v1alpha1.WorkloadAttestationPolicy{meshWide}, id: "spiffe://other.org/ns/shop/sa/web", code: Code{}},
		{name: "mesh-wide policy applies in every namespace", policies: []v1alpha1.WorkloadAttestationPolicy{meshWide}, id: "spiffe://example.org/ns/bank/sa/teller", code: Code{Digest: bad}, reason: ReasonCodeNotAllowed},
		{name: "Ed25519 signature", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner}, code: Code{Digest: bad, Signature: sigOf(ed.sign(bad), nil)}},
		{name: "P-256 signature", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner}, code: Code{Digest: bad, Signature: sigOf(p256.sign(bad), nil)}},
		{name: "signature by another key", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner}, code: Code{Digest: bad, Signature: sigOf(other.sign(bad), nil)}, reason: ReasonCodeNotAllowed},
		{name: "signature over another digest", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner}, code: Code{Digest: bad, Signature: sigOf(ed.sign(good), nil)}, reason: ReasonCodeNotAllowed},
		{name: "garbage signature", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner}, code: Code{Digest: bad, Signature: sigOf([]byte("nope"), nil)}, reason: ReasonCodeNotAllowed},
		{name: "no signature file", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner}, code: Code{Digest: bad, Signature: sigOf(nil, errors.New("no such file"))}, reason: ReasonCodeNotAllowed},
		{name: "signature not checkable on this path", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner}, code: Code{Digest: bad}, reason: ReasonCodeNotAllowed},
		{name: "every policy must admit: signed but not listed", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner, byDigest}, code: Code{Digest: bad, Signature: sigOf(ed.sign(bad), nil)}, reason: ReasonCodeNotAllowed},
		{name: "every policy must admit: listed and signed", policies: []v1alpha1.WorkloadAttestationPolicy{bySigner, byDigest}, code: Code{Digest: good, Signature: sigOf(ed.sign(good), nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := setPolicies(t, tt.policies...)
			id := web
			if tt.id != "" {
				id = spiffeidMust(t, tt.id)
			}
			err := p.CheckCode(id, tt.code)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("CheckCode: %v", err)
				}
				return
			}
			e := wantReason(t, err, tt.reason)
			if tt.reason == ReasonCodeNotAllowed {
				if e.Digest != tt.code.Digest {
					t.Errorf("refusal names digest %q, want %q", e.Digest, tt.code.Digest)
				}
				if !strings.Contains(e.Msg, tt.code.Digest) {
					t.Errorf("message %q does not name the digest", e.Msg)
				}
			}
		})
	}
}

func TestNilPoliciesAreEmpty(t *testing.T) {
	var p *Policies
	if err := p.CheckCode(workloadID("shop", "web"), Code{}); err != nil {
		t.Errorf("CheckCode on nil policies: %v", err)
	}
	wantReason(t, p.admitUnix(workloadID("shop", "web"), 0, 0), ReasonNoPolicy)
	if p.Len() != 0 {
		t.Error("nil policies have a length")
	}
}

func TestAdmitUnix(t *testing.T) {
	web := workloadID("shop", "web")
	tests := []struct {
		name     string
		policies []v1alpha1.WorkloadAttestationPolicy
		uid, gid uint32
		reason   string
	}{
		{name: "no policy", reason: ReasonNoPolicy},
		{name: "only a code policy", policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "code", "web", &v1alpha1.CodePolicy{Digests: []string{digestOf("x")}}, nil),
		}, uid: 1000, reason: ReasonNoPolicy},
		{name: "listed uid", policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{1000, 1001}}),
		}, uid: 1001},
		{name: "unlisted uid", policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{1000}}),
		}, uid: 1001, reason: ReasonUserNotAllowed},
		{name: "unlisted gid", policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{1000}, GIDs: []int64{50}}),
		}, uid: 1000, gid: 51, reason: ReasonUserNotAllowed},
		{name: "any user running an admitted proxy", policies: []v1alpha1.WorkloadAttestationPolicy{
			func() v1alpha1.WorkloadAttestationPolicy {
				p := newPolicy("shop", "web", "web", &v1alpha1.CodePolicy{Digests: []string{digestOf("x")}}, &v1alpha1.UnixAttestation{})
				p.Spec.ProxyCode = &v1alpha1.CodePolicy{Digests: []string{digestOf("proxy")}}
				return p
			}(),
		}, uid: 4242},
		{name: "namespace-wide and specific: both must admit", policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "team", "", nil, &v1alpha1.UnixAttestation{GIDs: []int64{50}}),
			newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{1000}}),
		}, uid: 1000, gid: 51, reason: ReasonUserNotAllowed},
		{name: "policy for another identity", policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "api", "api", nil, &v1alpha1.UnixAttestation{UIDs: []int64{1000}}),
		}, uid: 1000, reason: ReasonNoPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := setPolicies(t, tt.policies...).admitUnix(web, tt.uid, tt.gid)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("admitUnix: %v", err)
				}
				return
			}
			wantReason(t, err, tt.reason)
		})
	}
}

func TestSetIsAllOrNothing(t *testing.T) {
	good := newPolicy("shop", "web", "web", &v1alpha1.CodePolicy{Digests: []string{digestOf("a")}}, nil)
	p := setPolicies(t, good)
	bad := newPolicy("shop", "broken", "web", &v1alpha1.CodePolicy{Digests: []string{"sha256:nope"}}, nil)
	err := p.Set([]v1alpha1.WorkloadAttestationPolicy{good, bad})
	if err == nil || !strings.Contains(err.Error(), "shop/broken") {
		t.Fatalf("Set with an invalid policy = %v, want an error naming shop/broken", err)
	}
	if p.Len() != 1 {
		t.Errorf("%d policies in force after a failed Set, want the previous 1", p.Len())
	}
	// The caller's slice is not modified by defaulting.
	noNS := newPolicy("", "web", "web", &v1alpha1.CodePolicy{Digests: []string{digestOf("a")}}, nil)
	in := []v1alpha1.WorkloadAttestationPolicy{noNS}
	if err := p.Set(in); err != nil {
		t.Fatal(err)
	}
	if in[0].Namespace != "" {
		t.Error("Set modified its argument")
	}
	// And the default namespace applies.
	wantReason(t, p.CheckCode(workloadID("default", "web"), Code{Digest: digestOf("b")}), ReasonCodeNotAllowed)
}

func TestDecodeSignature(t *testing.T) {
	raw := []byte{0x30, 0x44, 0x02, 0x20, 0xff, 0x00, '\n'}
	tests := []struct {
		name string
		in   []byte
		want []byte
		err  bool
	}{
		{name: "base64 with newline", in: []byte(base64.StdEncoding.EncodeToString([]byte("signature")) + "\n"), want: []byte("signature")},
		{name: "raw", in: raw, want: raw},
		{name: "empty", in: nil, err: true},
		{name: "too large", in: make([]byte, MaxSignatureFileSize+1), err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeSignature(tt.in)
			if tt.err {
				if err == nil {
					t.Fatalf("DecodeSignature = %x, want an error", got)
				}
				return
			}
			if err != nil || string(got) != string(tt.want) {
				t.Fatalf("DecodeSignature = %x, %v; want %x", got, err, tt.want)
			}
		})
	}
}
