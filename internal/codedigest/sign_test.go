package codedigest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
)

func pemOf(t *testing.T, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestSignVerifies(t *testing.T) {
	sum := sha256.Sum256([]byte("a build"))
	digest := Format(sum)

	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKCS8PrivateKey(edKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPKCS8, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecSEC1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		pem    []byte
		verify func(sig []byte) bool
	}{
		{"Ed25519 PKCS#8", pemOf(t, "PRIVATE KEY", edDER), func(sig []byte) bool {
			return ed25519.Verify(edKey.Public().(ed25519.PublicKey), sum[:], sig)
		}},
		{"P-256 PKCS#8", pemOf(t, "PRIVATE KEY", ecPKCS8), func(sig []byte) bool { return ecdsa.VerifyASN1(&ecKey.PublicKey, sum[:], sig) }},
		{"P-256 SEC1", pemOf(t, "EC PRIVATE KEY", ecSEC1), func(sig []byte) bool { return ecdsa.VerifyASN1(&ecKey.PublicKey, sum[:], sig) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ParsePrivateKey(tt.pem)
			if err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}
			sig, err := Sign(key, digest)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if !tt.verify(sig) {
				t.Error("the signature does not verify over the digest's 32 bytes")
			}
			file := EncodeSignature(sig)
			dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(file)))
			if err != nil || string(dec) != string(sig) {
				t.Errorf("EncodeSignature = %q, does not decode to the signature", file)
			}
			other := sha256.Sum256([]byte("another build"))
			if tt.verify(mustSign(t, key, Format(other))) {
				t.Error("a signature over another digest verifies")
			}
		})
	}
}

func mustSign(t *testing.T, key crypto.Signer, digest string) []byte {
	t.Helper()
	sig, err := Sign(key, digest)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestParsePrivateKeyRefusals(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384DER, err := x509.MarshalPKCS8PrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"not PEM":        []byte("hello"),
		"a certificate":  pemOf(t, "CERTIFICATE", []byte{1}),
		"garbage PKCS#8": pemOf(t, "PRIVATE KEY", []byte{1, 2, 3}),
		"P-384":          pemOf(t, "PRIVATE KEY", p384DER),
	} {
		if _, err := ParsePrivateKey(in); err == nil {
			t.Errorf("%s: ParsePrivateKey succeeded", name)
		}
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := Sign(edKey, "sha256:nope"); err == nil {
		t.Error("Sign of a malformed digest succeeded")
	}
}
