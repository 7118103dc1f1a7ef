// Package meshtls holds the mutual-TLS plumbing shared by the proxy and the
// controller: the current SVID and trust bundle as lock-free holders that
// rotate under live listeners, peer verification that yields the peer's
// SPIFFE ID, and the classification of refusals into the reasons that logs
// and metrics name.
//
// It depends on go-spiffe and the standard library only; never on
// Kubernetes packages, the controller or the proxy.
package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Bundle is the set of trusted roots, per trust domain, replaced atomically.
// It implements x509bundle.Source. The zero value trusts nothing.
type Bundle struct {
	set atomic.Pointer[map[spiffeid.TrustDomain]*x509bundle.Bundle]
}

var _ x509bundle.Source = (*Bundle)(nil)

// SetRoots replaces the roots trusted for td. Other trust domains keep theirs.
func (b *Bundle) SetRoots(td spiffeid.TrustDomain, roots []*x509.Certificate) {
	for {
		old := b.set.Load()
		next := make(map[spiffeid.TrustDomain]*x509bundle.Bundle)
		if old != nil {
			for k, v := range *old {
				next[k] = v
			}
		}
		next[td] = x509bundle.FromX509Authorities(td, roots)
		if b.set.CompareAndSwap(old, &next) {
			return
		}
	}
}

// Roots returns the roots trusted for td, or nil.
func (b *Bundle) Roots(td spiffeid.TrustDomain) []*x509.Certificate {
	m := b.set.Load()
	if m == nil {
		return nil
	}
	if bb, ok := (*m)[td]; ok {
		return bb.X509Authorities()
	}
	return nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (b *Bundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	m := b.set.Load()
	if m != nil {
		if bb, ok := (*m)[td]; ok {
			return bb, nil
		}
	}
	return nil, &UntrustedDomainError{TrustDomain: td}
}

// SVID holds the current X.509-SVID of this process and swaps it atomically
// on renewal: handshakes after Set use the new certificate, established
// connections are untouched.
type SVID struct {
	cur atomic.Pointer[svidState]
}

type svidState struct {
	svid *x509svid.SVID
	cert *tls.Certificate
}

// Set installs svid as the current identity.
func (s *SVID) Set(svid *x509svid.SVID) error {
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return errors.New("meshtls: incomplete SVID")
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	s.cur.Store(&svidState{svid: svid, cert: cert})
	return nil
}

// Get returns the current SVID, or nil before the first Set.
func (s *SVID) Get() *x509svid.SVID {
	if st := s.cur.Load(); st != nil {
		return st.svid
	}
	return nil
}

// Certificate returns the current SVID as a TLS certificate.
func (s *SVID) Certificate() (*tls.Certificate, error) {
	if st := s.cur.Load(); st != nil {
		return st.cert, nil
	}
	return nil, ErrNoSVID
}

// Errors callers branch on.
var (
	// ErrNoSVID: this process has no certificate yet.
	ErrNoSVID = errors.New("meshtls: no SVID yet")
	// ErrNoCertificate: the peer presented no certificate.
	ErrNoCertificate = errors.New("meshtls: peer presented no certificate")
)

// WrongIdentityError is a peer that proved an identity other than the one
// expected of it.
type WrongIdentityError struct {
	Want, Got spiffeid.ID
}

func (e *WrongIdentityError) Error() string {
	return fmt.Sprintf("meshtls: peer is %s, expected %s", e.Got, e.Want)
}

// UntrustedDomainError is a peer from a trust domain with no bundle here.
type UntrustedDomainError struct {
	TrustDomain spiffeid.TrustDomain
}

func (e *UntrustedDomainError) Error() string {
	return fmt.Sprintf("meshtls: no trust bundle for trust domain %q", e.TrustDomain)
}

// VerifyPeer verifies a peer's certificate chain (leaf first) against the
// bundle at time now and returns the peer's SPIFFE ID.
func VerifyPeer(certs []*x509.Certificate, bundle x509bundle.Source, now time.Time) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, ErrNoCertificate
	}
	id, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now))
	if err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// Reasons name why a peer was refused, in logs and in metric labels. The set
// is closed so that labels stay bounded.
const (
	ReasonNoCertificate    = "no_certificate"
	ReasonUnknownAuthority = "unknown_authority"
	ReasonExpired          = "expired"
	ReasonNotYetValid      = "not_yet_valid"
	ReasonUntrustedDomain  = "untrusted_domain"
	ReasonWrongIdentity    = "wrong_identity"
	ReasonBadCertificate   = "bad_certificate"
	ReasonHandshake        = "handshake"
)

// Reason classifies an error from VerifyPeer or from a TLS handshake using
// this package's configs.
func Reason(err error) string {
	var (
		revoked     *RevokedError
		quarantined *QuarantinedError
		unknown     x509.UnknownAuthorityError
		invalid     x509.CertificateInvalidError
		wrong       *WrongIdentityError
		untrusted   *UntrustedDomainError
		alert       tls.AlertError
	)
	switch {
	case errors.Is(err, ErrNoCertificate):
		return ReasonNoCertificate
	case errors.As(err, &revoked):
		return ReasonRevoked
	case errors.As(err, &quarantined):
		return ReasonQuarantined
	case errors.As(err, &wrong):
		return ReasonWrongIdentity
	case errors.As(err, &untrusted):
		return ReasonUntrustedDomain
	case errors.As(err, &unknown):
		return ReasonUnknownAuthority
	case errors.As(err, &invalid):
		switch invalid.Reason {
		case x509.Expired:
			// x509 reports both "expired" and "not yet valid" as Expired.
			if strings.Contains(invalid.Detail, "is before") {
				return ReasonNotYetValid
			}
			return ReasonExpired
		default:
			return ReasonBadCertificate
		}
	case errors.As(err, &alert):
		// The peer refused us; say so from its alert.
		switch alert {
		case 42, 43, 44, 45, 46, 48, 116: // bad/unsupported/revoked/expired/unknown cert, unknown CA, cert required
			return ReasonBadCertificate
		}
		return ReasonHandshake
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return ReasonBadCertificate
	}
	return ReasonHandshake
}

// Config builds TLS configurations for one process's SVID and bundle.
type Config struct {
	SVID   *SVID
	Bundle *Bundle
	// Now is the clock used for verification; nil means time.Now.
	Now func() time.Time
	// NextProtos is the ALPN list offered or accepted.
	NextProtos []string
	// Revocations, when set, refuses a peer whose certificate it revokes,
	// in both Server and Client handshakes. Nil revokes nothing.
	Revocations *Revocations
	// Quarantine, when set, refuses a peer whose identity it quarantines
	// at the time of the handshake, in both Server and Client handshakes.
	// Nil quarantines nothing.
	Quarantine *Quarantine
}

// CheckPeer returns why a peer whose chain verified must still be
// refused: its leaf certificate revoked (*RevokedError) or its identity
// quarantined now (*QuarantinedError). Nil when neither.
func (c Config) CheckPeer(leaf *x509.Certificate) error {
	if err := c.Revocations.Check(leaf); err != nil {
		return err
	}
	return c.Quarantine.Check(leaf, c.now())
}

// PeerError is this side's refusal of the certificate a peer presented,
// with the leaf it presented (nil when it presented none). A handshake
// set up with Server or Client fails with one whenever verification
// refuses the peer; a handshake that failed for another reason (a
// timeout, a reset, not TLS, the peer's own refusal) does not.
type PeerError struct {
	Leaf *x509.Certificate
	Err  error
}

func (e *PeerError) Error() string { return e.Err.Error() }
func (e *PeerError) Unwrap() error { return e.Err }

func refusePeer(certs []*x509.Certificate, err error) error {
	if err == nil {
		return nil
	}
	pe := &PeerError{Err: err}
	if len(certs) > 0 {
		pe.Leaf = certs[0]
	}
	return pe
}

// MaxIssuerBytes bounds the issuer that Presented reports.
const MaxIssuerBytes = 256

// Presented is what a peer's leaf certificate claims, read without
// trusting it: only a verified handshake proves an identity.
type Presented struct {
	// ID is the SPIFFE ID of the certificate's single URI SAN; "" when it
	// has none, several, or one that does not parse.
	ID string
	// Serial is the serial number, as SerialOf gives it; "" when it is
	// not a positive number of at most 20 octets (RFC 5280), which no
	// certificate of a mesh CA has.
	Serial string
	// Issuer is the issuer's distinguished name (RFC 4514), made valid
	// UTF-8 and cut to at most MaxIssuerBytes bytes at a character
	// boundary.
	Issuer string
}

// PresentedBy reads what leaf claims; the zero Presented for nil.
func PresentedBy(leaf *x509.Certificate) Presented {
	if leaf == nil {
		return Presented{}
	}
	var p Presented
	if n := leaf.SerialNumber; n != nil && n.Sign() > 0 && n.BitLen() <= 160 {
		p.Serial = SerialOf(leaf)
	}
	if id, err := x509svid.IDFromCert(leaf); err == nil {
		p.ID = id.String()
	}
	issuer := leaf.Issuer.String()
	if !utf8.ValidString(issuer) {
		issuer = strings.ToValidUTF8(issuer, "\uFFFD")
	}
	if len(issuer) > MaxIssuerBytes {
		n := MaxIssuerBytes
		for n > 0 && !utf8.RuneStart(issuer[n]) {
			n--
		}
		issuer = issuer[:n]
	}
	p.Issuer = issuer
	return p
}

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Server returns an mTLS server config: the peer must present an SVID that
// chains to the bundle. authorize, when not nil, may refuse a verified peer
// by its ID. The verified ID is read back with PeerID.
func (c Config) Server(authorize func(spiffeid.ID) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: c.NextProtos,
		// Verification is ours, so that refusals carry a reason: request a
		// certificate and refuse its absence in VerifyConnection.
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.SVID.Certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := VerifyPeer(cs.PeerCertificates, c.Bundle, c.now())
			if err != nil {
				return refusePeer(cs.PeerCertificates, err)
			}
			if err := c.CheckPeer(cs.PeerCertificates[0]); err != nil {
				return refusePeer(cs.PeerCertificates, err)
			}
			if authorize != nil {
				return refusePeer(cs.PeerCertificates, authorize(id))
			}
			return nil
		},
	}
}

// Client returns an mTLS client config that accepts only a server proving
// exactly the identity want.
func (c Config) Client(want spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: c.NextProtos,
		// The chain and the identity are verified in VerifyConnection:
		// SPIFFE certificates carry no DNS name to check.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert, err := c.SVID.Certificate(); err == nil {
				return cert, nil
			}
			// No SVID yet (first contact with the controller): present
			// none and let the server decide.
			return &tls.Certificate{}, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := VerifyPeer(cs.PeerCertificates, c.Bundle, c.now())
			if err != nil {
				return refusePeer(cs.PeerCertificates, err)
			}
			if err := c.CheckPeer(cs.PeerCertificates[0]); err != nil {
				return refusePeer(cs.PeerCertificates, err)
			}
			if id != want {
				return refusePeer(cs.PeerCertificates, &WrongIdentityError{Want: want, Got: id})
			}
			return nil
		},
	}
}

// PeerID returns the SPIFFE ID of the verified peer of a connection set up
// with Server or Client.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoCertificate
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}
