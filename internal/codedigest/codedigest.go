// Package codedigest names the code a workload runs, as the controller
// attested it: the digest "sha256:<64 lower-case hex digits>" of its
// executable, and the private, non-critical X.509 extension in which an
// issued X.509-SVID records that digest. The controller's CA writes the
// extension (Extension); proxies and authorization read it back from a
// peer's certificate (FromCertificate) to require a given build of a peer.
//
// It depends on the standard library only, so that the proxy can import it;
// it must never import the controller, Kubernetes packages or anything
// under internal/proxy.
package codedigest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Prefix starts every digest: the only algorithm is SHA-256.
const Prefix = "sha256:"

// OID identifies Rampart's code-digest extension. Rampart's arc is
// 1.3.6.1.4.1.62253; under it, .1 holds X.509 certificate extensions and
// .1.1 is this one. docs/attestation.md documents it.
var OID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62253, 1, 1}

// oidSHA256 is id-sha256 (RFC 5754).
var oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}

// value is the DER of the extension's value:
//
//	RampartCodeDigest ::= SEQUENCE {
//	    hashAlgorithm  OBJECT IDENTIFIER,  -- id-sha256
//	    digest         OCTET STRING        -- 32 bytes
//	}
type value struct {
	HashAlgorithm asn1.ObjectIdentifier
	Digest        []byte
}

// Check reports why s is not a digest in canonical form, "sha256:" then 64
// lower-case hex digits, or nil if it is one.
func Check(s string) error {
	if len(s) < len(Prefix) || s[:len(Prefix)] != Prefix {
		return fmt.Errorf("codedigest: %s does not start with %q: want sha256:<64 lower-case hex digits>", quote(s), Prefix)
	}
	hexPart := s[len(Prefix):]
	if len(hexPart) != 2*sha256.Size {
		return fmt.Errorf("codedigest: %s has %d hex digits after %q, want %d", quote(s), len(hexPart), Prefix, 2*sha256.Size)
	}
	for i := 0; i < len(hexPart); i++ {
		if c := hexPart[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("codedigest: %s has %q, which is not a lower-case hex digit", quote(s), rune(c))
		}
	}
	return nil
}

// Format returns the digest string of a SHA-256 sum.
func Format(sum [sha256.Size]byte) string {
	return Prefix + hex.EncodeToString(sum[:])
}

// Bytes returns the 32 bytes of the SHA-256 sum that digest names.
func Bytes(digest string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if err := Check(digest); err != nil {
		return sum, err
	}
	// Check proved it is 64 hex digits.
	_, _ = hex.Decode(sum[:], []byte(digest[len(Prefix):]))
	return sum, nil
}

// ErrTooLarge is the error of Sum when the content is longer than allowed.
var ErrTooLarge = errors.New("codedigest: content larger than allowed")

// Sum reads r to its end and returns its digest. It reads at most limit
// bytes: longer content fails with an error wrapping ErrTooLarge.
func Sum(r io.Reader, limit int64) (string, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, limit+1))
	if err != nil {
		return "", fmt.Errorf("codedigest: read: %w", err)
	}
	if n > limit {
		return "", fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return Format(sum), nil
}

// Extension returns the non-critical certificate extension that records
// digest.
func Extension(digest string) (pkix.Extension, error) {
	sum, err := Bytes(digest)
	if err != nil {
		return pkix.Extension{}, err
	}
	der, err := asn1.Marshal(value{HashAlgorithm: oidSHA256, Digest: sum[:]})
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("codedigest: encode extension: %w", err)
	}
	return pkix.Extension{Id: OID, Critical: false, Value: der}, nil
}

// FromCertificate returns the code digest an X.509-SVID records, and
// whether it records one. A certificate that carries the extension more
// than once, marked critical, or with a value that is not exactly one
// well-formed SHA-256 digest reports none: to a policy that requires a
// digest, such a peer has none.
//
// It does not verify the certificate: read the digest of a peer only after
// its chain has been verified against the trust bundle.
func FromCertificate(cert *x509.Certificate) (string, bool) {
	if cert == nil {
		return "", false
	}
	var found *pkix.Extension
	for i := range cert.Extensions {
		if !cert.Extensions[i].Id.Equal(OID) {
			continue
		}
		if found != nil {
			return "", false
		}
		found = &cert.Extensions[i]
	}
	if found == nil || found.Critical {
		return "", false
	}
	var v value
	rest, err := asn1.Unmarshal(found.Value, &v)
	if err != nil || len(rest) != 0 || !v.HashAlgorithm.Equal(oidSHA256) || len(v.Digest) != sha256.Size {
		return "", false
	}
	// encoding/asn1 ignores elements after the last field of a SEQUENCE
	// and some non-canonical encodings: accept only the exact DER that
	// Extension writes.
	canonical, err := asn1.Marshal(value{HashAlgorithm: oidSHA256, Digest: v.Digest})
	if err != nil || !bytes.Equal(canonical, found.Value) {
		return "", false
	}
	return Prefix + hex.EncodeToString(v.Digest), true
}

// quote quotes s for an error message, cut short if long.
func quote(s string) string {
	const maxQuoted = 80
	if len(s) > maxQuoted {
		return fmt.Sprintf("%q...", s[:maxQuoted])
	}
	return fmt.Sprintf("%q", s)
}
