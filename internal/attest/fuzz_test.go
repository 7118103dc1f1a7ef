package attest

import (
	"encoding/base64"
	"testing"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// FuzzSignatureFile feeds arbitrary signature files, which a workload
// controls, through decoding and verification: nothing panics, and what
// CheckCode accepts is a signature the keys themselves accept for that
// digest.
func FuzzSignatureFile(f *testing.F) {
	ed, p256 := newEd25519Signer(f), newP256Signer(f)
	digest := digestOf("a build")
	p := NewPolicies(td)
	if err := p.Set([]v1alpha1.WorkloadAttestationPolicy{newPolicy("shop", "signed", "", &v1alpha1.CodePolicy{Signers: []v1alpha1.CodeSigner{
		{Name: "ed", PublicKey: ed.pem}, {Name: "p256", PublicKey: p256.pem},
	}}, nil)}); err != nil {
		f.Fatal(err)
	}
	f.Add(ed.sign(digest))
	f.Add([]byte(base64.StdEncoding.EncodeToString(p256.sign(digest)) + "\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sig, err := DecodeSignature(data)
		if err != nil {
			return
		}
		err = p.CheckCode(workloadID("shop", "web"), Code{Digest: digest, Signature: sigOf(sig, nil)})
		if valid := ed.verify(digest, sig) || p256.verify(digest, sig); (err == nil) != valid {
			t.Fatalf("signature %x: CheckCode = %v, but the keys say valid=%t", sig, err, valid)
		}
	})
}
