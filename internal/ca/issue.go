package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/codedigest"
)

// Errors callers branch on.
var (
	// ErrInvalidCSR wraps every refusal of a CSR for what it is or asks
	// for, apart from an identity other than the attested one.
	ErrInvalidCSR = errors.New("ca: invalid CSR")
	// ErrIdentityMismatch wraps the refusal of a CSR that asks for a SPIFFE
	// ID other than the one its sender attested.
	ErrIdentityMismatch = errors.New("ca: identity mismatch")
)

// maxCSRSize bounds the DER CSR that SignCSR parses. A CSR with one key and
// one URI SAN is well under a kilobyte; an RSA-8192 one is about 1.5 KiB.
const maxCSRSize = 16 << 10

// Bounds on the RSA keys the CA certifies. The upper bound keeps signature
// checks on untrusted CSRs cheap.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// maxCommonNameLen is ub-common-name from RFC 5280.
const maxCommonNameLen = 64

// SignCSR validates a DER PKCS#10 CSR and issues a leaf X.509-SVID for id,
// the identity its sender attested, valid for ttl but no longer than the
// intermediate. It returns the chain leaf first, then the intermediate (not
// the root).
//
// The CSR must be signed by its key, carry an ECDSA P-256 or P-384, Ed25519
// or RSA key of 2048 to 8192 bits, and have exactly one SAN: the URI id.
// Its subject and other extensions are ignored. A refusal wraps
// ErrInvalidCSR, or ErrIdentityMismatch if the CSR asks for another ID.
func (c *CA) SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return c.SignCSRWith(csrDER, id, ttl, Attested{})
}

// Attested is what an issued leaf records about its holder besides its
// SPIFFE ID. The zero value records nothing more.
type Attested struct {
	// CodeDigest is the attested digest of the holder's code,
	// "sha256:<64 lower-case hex digits>", recorded in the non-critical
	// extension codedigest.OID. Empty records none.
	CodeDigest string
}

// SignCSRWith is SignCSR for a holder of which more was attested than its
// identity: the leaf also records what attested says. A CodeDigest that is
// not a canonical digest fails (not wrapping ErrInvalidCSR: it is the
// caller's, not the CSR's).
func (c *CA) SignCSRWith(csrDER []byte, id spiffeid.ID, ttl time.Duration, attested Attested) ([]*x509.Certificate, error) {
	if err := c.checkLeafArgs(id, ttl); err != nil {
		return nil, err
	}
	var extra []pkix.Extension
	if attested.CodeDigest != "" {
		ext, err := codedigest.Extension(attested.CodeDigest)
		if err != nil {
			return nil, fmt.Errorf("ca: attested code digest: %w", err)
		}
		extra = append(extra, ext)
	}
	csr, err := parseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	requested, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("%w: URI SAN %q is not a SPIFFE ID: %w", ErrInvalidCSR, csr.URIs[0].String(), err)
	}
	switch {
	case !requested.MemberOf(c.td):
		return nil, fmt.Errorf("%w: CSR asks for %s, which is not in trust domain %s", ErrInvalidCSR, requested, c.td.Name())
	case requested.Path() == "":
		return nil, fmt.Errorf("%w: CSR asks for %s, the ID of the trust domain itself, not of a workload", ErrInvalidCSR, requested)
	case requested != id:
		return nil, fmt.Errorf("%w: CSR asks for %s, attested identity is %s", ErrIdentityMismatch, requested, id)
	}
	return c.issueLeaf(csr.PublicKey, id, nil, nil, extra, ttl, false)
}

// IssueServing issues a certificate for a public key held by the caller:
// URI SAN id plus the DNS names and IPs given, usable for both server and
// client authentication. The controller uses it for its own gRPC serving
// certificate. It returns the chain leaf first, then the intermediate.
func (c *CA) IssueServing(pub crypto.PublicKey, id spiffeid.ID, dnsNames []string, ips []net.IP, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := c.checkLeafArgs(id, ttl); err != nil {
		return nil, err
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	if !id.MemberOf(c.td) {
		return nil, fmt.Errorf("ca: %s is not in trust domain %s", id, c.td.Name())
	}
	if id.Path() == "" {
		return nil, fmt.Errorf("ca: %s is the ID of the trust domain itself; give the server an ID with a path", id)
	}
	for _, name := range dnsNames {
		if name == "" || strings.ContainsAny(name, " \t\r\n/") {
			return nil, fmt.Errorf("ca: DNS name %q is not a host name", name)
		}
	}
	for _, ip := range ips {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return nil, fmt.Errorf("ca: IP address %v is neither IPv4 nor IPv6", ip)
		}
	}
	return c.issueLeaf(pub, id, dnsNames, ips, nil, ttl, true)
}

// checkLeafArgs checks what the caller, not the CSR, supplies.
func (c *CA) checkLeafArgs(id spiffeid.ID, ttl time.Duration) error {
	if id.IsZero() {
		return errors.New("ca: no SPIFFE ID to issue for")
	}
	if ttl <= 0 {
		return fmt.Errorf("ca: ttl must be positive, got %s", ttl)
	}
	return nil
}

// parseCSR parses and checks everything about a CSR but the SPIFFE ID it
// asks for. On success csr.URIs has exactly one element.
func parseCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalidCSR)
	}
	if len(der) > maxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrInvalidCSR, len(der), maxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: not a DER PKCS#10 request: %w", ErrInvalidCSR, err)
	}
	// The key is checked before the signature so that no time is spent
	// verifying with a key that would be refused anyway.
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: bad self-signature: %w", ErrInvalidCSR, err)
	}
	var extra []string
	if n := len(csr.DNSNames); n > 0 {
		extra = append(extra, fmt.Sprintf("%d DNS", n))
	}
	if n := len(csr.IPAddresses); n > 0 {
		extra = append(extra, fmt.Sprintf("%d IP", n))
	}
	if n := len(csr.EmailAddresses); n > 0 {
		extra = append(extra, fmt.Sprintf("%d email", n))
	}
	if len(extra) > 0 {
		return nil, fmt.Errorf("%w: has %s SANs; an X.509-SVID carries only its SPIFFE ID as a URI SAN", ErrInvalidCSR, strings.Join(extra, ", "))
	}
	if n := len(csr.URIs); n != 1 {
		return nil, fmt.Errorf("%w: has %d URI SANs, want exactly 1: the SPIFFE ID", ErrInvalidCSR, n)
	}
	return csr, nil
}

// checkPublicKey allows ECDSA P-256 and P-384, Ed25519, and RSA of 2048 to
// 8192 bits.
func checkPublicKey(pub crypto.PublicKey) error {
	const allowed = "use ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits"
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return errors.New("empty ECDSA public key")
		}
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("ECDSA curve %s is not allowed; %s", k.Curve.Params().Name, allowed)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("Ed25519 public key of %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		return nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return errors.New("empty RSA public key")
		}
		switch bits := k.N.BitLen(); {
		case bits < minRSABits:
			return fmt.Errorf("RSA key of %d bits is too small; %s", bits, allowed)
		case bits > maxRSABits:
			return fmt.Errorf("RSA key of %d bits is larger than the %d allowed", bits, maxRSABits)
		}
		return nil
	case nil:
		return fmt.Errorf("no public key, or one of an unknown algorithm; %s", allowed)
	default:
		return fmt.Errorf("public key type %T is not allowed; %s", pub, allowed)
	}
}

// issueLeaf signs a leaf for pub with the current intermediate, with the
// extra extensions given; with serving, with the serving intermediate
// (ServingIntermediate) if there is one valid at now.
func (c *CA) issueLeaf(pub crypto.PublicKey, id spiffeid.ID, dnsNames []string, ips []net.IP, extra []pkix.Extension, ttl time.Duration, serving bool) ([]*x509.Certificate, error) {
	now := c.now()
	inter, key, err := c.issuer(now)
	if err != nil {
		return nil, err
	}
	if st := c.state(); serving && st.servingInter != nil && now.Before(st.servingInter.NotAfter) {
		inter, key = st.servingInter, st.servingKey
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	subject := pkix.Name{Organization: []string{organization}}
	// A truncated ID could read as another, valid ID; leave CN out instead.
	if s := id.String(); len(s) <= maxCommonNameLen {
		subject.CommonName = s
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             laterOf(now.Add(-clockSkew), inter.NotBefore),
		NotAfter:              earlierOf(now.Add(ttl), inter.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		SubjectKeyId:          skid,
		ExtraExtensions:       extra,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, pub, key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse certificate for %s: %w", id, err)
	}
	return []*x509.Certificate{leaf, inter}, nil
}

// newSerial returns a random, positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("ca: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID is the leftmost 160 bits of the SHA-256 of the
// subjectPublicKey bits, method 1 of RFC 7093.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: encode public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("ca: decode public key: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}
