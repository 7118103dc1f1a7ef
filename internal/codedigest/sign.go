package codedigest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParsePrivateKey parses a signing key from PEM: a PKCS#8 "PRIVATE KEY"
// (what `openssl genpkey` writes) or a SEC1 "EC PRIVATE KEY", holding an
// Ed25519 or ECDSA P-256 key, the kinds a WorkloadAttestationPolicy's
// signers may be.
func ParsePrivateKey(pemData []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("codedigest: key is not PEM: want a -----BEGIN PRIVATE KEY----- block")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("codedigest: key is a PEM %q block, want PRIVATE KEY (PKCS#8) or EC PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("codedigest: key does not parse: %w", err)
	}
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("codedigest: key is ECDSA on %s; use P-256 or Ed25519", k.Curve.Params().Name)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("codedigest: key is a %T; use Ed25519 or ECDSA P-256", key)
	}
}

// Sign signs the 32 bytes of the SHA-256 sum that digest names, as the
// controller verifies a detached signature: pure Ed25519 (64 bytes), or
// ECDSA P-256 in ASN.1 DER over the sum (what `openssl dgst -sha256 -sign`
// writes for the file).
func Sign(key crypto.Signer, digest string) ([]byte, error) {
	sum, err := Bytes(digest)
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, sum[:]), nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("codedigest: key is ECDSA on %s; use P-256 or Ed25519", k.Curve.Params().Name)
		}
		return ecdsa.SignASN1(rand.Reader, k, sum[:])
	default:
		return nil, fmt.Errorf("codedigest: cannot sign with a %T; use Ed25519 or ECDSA P-256", key)
	}
}

// EncodeSignature is the content of a detached signature file, <executable>.sig:
// the signature in standard base64 and a newline.
func EncodeSignature(sig []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(sig) + "\n")
}
