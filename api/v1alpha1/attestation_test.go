package v1alpha1

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	digestA = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	digestB = "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

func pemPublicKey(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestWorkloadAttestationPolicyValidate(t *testing.T) {
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPEM, p256PEM := pemPublicKey(t, edPub), pemPublicKey(t, &p256.PublicKey)

	valid := func() *WorkloadAttestationPolicy {
		return &WorkloadAttestationPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindWorkloadAttestationPolicy},
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: WorkloadAttestationPolicySpec{
				ServiceAccount: "web",
				Code: &CodePolicy{
					Digests: []string{digestA},
					Signers: []CodeSigner{{Name: "release", PublicKey: edPEM}, {Name: "ci", PublicKey: p256PEM}},
				},
				Unix: &UnixAttestation{UIDs: []int64{1001}, GIDs: []int64{1001}},
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(*WorkloadAttestationPolicy)
		want   FieldErrors
	}{
		{name: "valid", mutate: func(*WorkloadAttestationPolicy) {}},
		{name: "code only, whole namespace", mutate: func(p *WorkloadAttestationPolicy) { p.Spec.Unix, p.Spec.ServiceAccount = nil, "" }},
		{name: "unix with uids only", mutate: func(p *WorkloadAttestationPolicy) { p.Spec.Code, p.Spec.Unix.GIDs = nil, nil }},
		{name: "unix for any user running an admitted proxy", mutate: func(p *WorkloadAttestationPolicy) {
			p.Spec.Unix, p.Spec.ProxyCode = &UnixAttestation{}, &CodePolicy{Digests: []string{digestA}}
		}},
		{name: "unix for any user running admitted code is open: any process may start the app", mutate: func(p *WorkloadAttestationPolicy) { p.Spec.Unix = &UnixAttestation{} },
			want: FieldErrors{{Path: "spec.unix", Msg: "names no uids or gids and the policy sets no proxyCode"}}},
		{name: "uid 0 and the largest uid", mutate: func(p *WorkloadAttestationPolicy) { p.Spec.Unix.UIDs = []int64{0, 4294967294} }},
		{name: "mesh-wide code policy", mutate: func(p *WorkloadAttestationPolicy) { p.Namespace, p.Spec.Unix = RootNamespace, nil }},
		{name: "says nothing", mutate: func(p *WorkloadAttestationPolicy) { p.Spec.Code, p.Spec.Unix = nil, nil },
			want: FieldErrors{{Path: "spec", Msg: "set code"}}},
		{name: "wrong kind and bad names", mutate: func(p *WorkloadAttestationPolicy) {
			p.Kind, p.Name, p.Spec.ServiceAccount = "AttestationPolicy", "Web", "web_1"
		}, want: FieldErrors{
			{Path: "kind", Msg: `must be "WorkloadAttestationPolicy"`},
			{Path: "metadata.name", Msg: "invalid name"},
			{Path: "spec.serviceAccount", Msg: "invalid name"},
		}},
		{name: "the controller's identity", mutate: func(p *WorkloadAttestationPolicy) {
			p.Namespace, p.Spec.ServiceAccount, p.Spec.Unix = RootNamespace, "rampart-controller", nil
		}, want: FieldErrors{{Path: "spec.serviceAccount", Msg: "rampart-system/rampart-controller is the controller's own identity"}}},
		{name: "empty code", mutate: func(p *WorkloadAttestationPolicy) { p.Spec.Code = &CodePolicy{} },
			want: FieldErrors{{Path: "spec.code", Msg: "admits nothing"}}},
		{name: "proxy code only", mutate: func(p *WorkloadAttestationPolicy) {
			p.Spec.Code, p.Spec.Unix, p.Spec.ProxyCode = nil, nil, &CodePolicy{Digests: []string{digestB}}
		}},
		{name: "bad proxy code", mutate: func(p *WorkloadAttestationPolicy) {
			p.Spec.ProxyCode = &CodePolicy{Digests: []string{digestA, digestA}, Signers: []CodeSigner{{Name: "release"}}}
		}, want: FieldErrors{
			{Path: "spec.proxyCode.digests[1]", Msg: "duplicate digest (also spec.proxyCode.digests[0])"},
			{Path: "spec.proxyCode.signers[0].publicKey", Msg: "is required"},
		}},
		{name: "bad digests", mutate: func(p *WorkloadAttestationPolicy) {
			p.Spec.Code.Digests = []string{digestA, "sha256:" + strings.ToUpper(digestB[7:]), digestA, "9f86d081", digestB}
		}, want: FieldErrors{
			{Path: "spec.code.digests[1]", Msg: `"sha256:60303AE`},
			{Path: "spec.code.digests[2]", Msg: "duplicate digest (also spec.code.digests[0])"},
			{Path: "spec.code.digests[3]", Msg: `"9f86d081" does not start with "sha256:"`},
		}},
		{name: "bad signers", mutate: func(p *WorkloadAttestationPolicy) {
			p.Spec.Code.Signers = []CodeSigner{
				{Name: "", PublicKey: edPEM},
				{Name: "release", PublicKey: "ssh-ed25519 AAAA"},
				{Name: "release", PublicKey: pemPublicKey(t, &p384.PublicKey)},
				{Name: "rsa", PublicKey: pemPublicKey(t, &rsaKey.PublicKey)},
				{Name: "two", PublicKey: edPEM + p256PEM},
				{Name: "cert", PublicKey: strings.ReplaceAll(edPEM, "PUBLIC KEY", "CERTIFICATE")},
				{Name: "empty"},
				{Name: "garbage", PublicKey: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
			}
		}, want: FieldErrors{
			{Path: "spec.code.signers[0].name", Msg: "is required"},
			{Path: "spec.code.signers[1].publicKey", Msg: "is not PEM"},
			{Path: "spec.code.signers[2].name", Msg: `duplicate signer "release" (also spec.code.signers[1])`},
			{Path: "spec.code.signers[2].publicKey", Msg: "is an ECDSA key on P-384"},
			{Path: "spec.code.signers[3].publicKey", Msg: "is a *rsa.PublicKey"},
			{Path: "spec.code.signers[4].publicKey", Msg: "has more after the PUBLIC KEY block"},
			{Path: "spec.code.signers[5].publicKey", Msg: `is a PEM "CERTIFICATE" block`},
			{Path: "spec.code.signers[6].publicKey", Msg: "is required"},
			{Path: "spec.code.signers[7].publicKey", Msg: "does not parse"},
		}},
		{name: "bad unix ids", mutate: func(p *WorkloadAttestationPolicy) {
			p.Spec.Unix = &UnixAttestation{UIDs: []int64{-1, 1001, 1001, 4294967295}, GIDs: []int64{7, 7}}
		}, want: FieldErrors{
			{Path: "spec.unix.uids[0]", Msg: "must be between 0 and 4294967294"},
			{Path: "spec.unix.uids[2]", Msg: "duplicate 1001 (also spec.unix.uids[1])"},
			{Path: "spec.unix.uids[3]", Msg: "must be between 0 and 4294967294"},
			{Path: "spec.unix.gids[1]", Msg: "duplicate 7 (also spec.unix.gids[0])"},
		}},
		{name: "unix open to everyone", mutate: func(p *WorkloadAttestationPolicy) { p.Spec.Code, p.Spec.Unix = nil, &UnixAttestation{} },
			want: FieldErrors{{Path: "spec.unix", Msg: "names no uids or gids and the policy sets no proxyCode"}}},
		{name: "unix in the root namespace", mutate: func(p *WorkloadAttestationPolicy) { p.Namespace = RootNamespace },
			want: FieldErrors{{Path: "spec.unix", Msg: "is not allowed in rampart-system"}}},
		{name: "too many digests", mutate: func(p *WorkloadAttestationPolicy) {
			p.Spec.Code.Digests = make([]string, 1025)
			for i := range p.Spec.Code.Digests {
				p.Spec.Code.Digests[i] = digestA
			}
		}, want: func() FieldErrors {
			// The length, then one duplicate per repeated entry.
			want := FieldErrors{{Path: "spec.code.digests", Msg: "has 1025 entries, more than the 1024 allowed"}}
			for i := 1; i < 1025; i++ {
				want = append(want, FieldError{Path: "spec.code.digests[" + strconv.Itoa(i) + "]", Msg: "duplicate digest"})
			}
			return want
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.mutate(p)
			err := p.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			checkErrors(t, err, tt.want)
		})
	}
}

func TestWorkloadAttestationPolicyDefault(t *testing.T) {
	p := &WorkloadAttestationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: WorkloadAttestationPolicySpec{Code: &CodePolicy{Digests: []string{digestA}}}}
	p.Default()
	if p.Namespace != DefaultNamespace {
		t.Errorf("namespace %q, want %q", p.Namespace, DefaultNamespace)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate after Default: %v", err)
	}
}
