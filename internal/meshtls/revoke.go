package meshtls

import (
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ReasonRevoked names a peer whose certificate is revoked (rampart identity
// revoke): by its serial number, or because its identity was revoked after
// the certificate was issued.
const ReasonRevoked = "revoked"

// RevocationSet is the certificates and identities no longer trusted,
// whatever their expiry. It is immutable once built; the zero value and nil
// revoke nothing.
type RevocationSet struct {
	serials    map[string]struct{}
	identities map[spiffeid.ID]time.Time
}

// NewRevocationSet builds a set from certificate serial numbers (lower-case
// hexadecimal without leading zeros, as SerialOf gives them) and identities
// with the time of their revocation: every certificate of such an identity
// whose NotBefore lies before that time is revoked.
func NewRevocationSet(serials []string, identities map[spiffeid.ID]time.Time) *RevocationSet {
	s := &RevocationSet{
		serials:    make(map[string]struct{}, len(serials)),
		identities: make(map[spiffeid.ID]time.Time, len(identities)),
	}
	for _, serial := range serials {
		s.serials[serial] = struct{}{}
	}
	for id, at := range identities {
		s.identities[id] = at
	}
	return s
}

// Len is the number of entries: certificates plus identities.
func (s *RevocationSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.serials) + len(s.identities)
}

// RevokesSerial reports whether the certificate with serial (as SerialOf
// gives it) is revoked by its serial number.
func (s *RevocationSet) RevokesSerial(serial string) bool {
	if s == nil {
		return false
	}
	_, ok := s.serials[serial]
	return ok
}

// Check returns a *RevokedError when leaf is revoked, nil otherwise.
func (s *RevocationSet) Check(leaf *x509.Certificate) error {
	if s == nil || leaf == nil || (len(s.serials) == 0 && len(s.identities) == 0) {
		return nil
	}
	serial := SerialOf(leaf)
	if _, ok := s.serials[serial]; ok {
		return &RevokedError{Serial: serial}
	}
	if len(s.identities) == 0 {
		return nil
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil // not an SVID: refused elsewhere, never revoked by identity
	}
	if at, ok := s.identities[id]; ok && leaf.NotBefore.Before(at) {
		return &RevokedError{Serial: serial, ID: id, RevokedAt: at}
	}
	return nil
}

// SerialOf is the serial number of cert in lower-case hexadecimal without
// leading zeros, as revocations name certificates.
func SerialOf(cert *x509.Certificate) string {
	if cert == nil || cert.SerialNumber == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}

// RevokedError is a certificate refused because it is revoked.
type RevokedError struct {
	// Serial of the certificate.
	Serial string
	// ID and RevokedAt are set when the identity was revoked rather than
	// the certificate alone.
	ID        spiffeid.ID
	RevokedAt time.Time
}

func (e *RevokedError) Error() string {
	if !e.ID.IsZero() {
		return fmt.Sprintf("meshtls: certificate %s of %s is revoked: the identity was revoked at %s", e.Serial, e.ID, e.RevokedAt.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("meshtls: certificate %s is revoked", e.Serial)
}

// Revocations holds the RevocationSet in force and swaps it atomically:
// handshakes after Set are checked against the new set. The zero value
// revokes nothing; so does a nil *Revocations.
type Revocations struct {
	cur atomic.Pointer[RevocationSet]
}

// Set installs s (nil revokes nothing).
func (r *Revocations) Set(s *RevocationSet) { r.cur.Store(s) }

// Get returns the set in force, or nil.
func (r *Revocations) Get() *RevocationSet {
	if r == nil {
		return nil
	}
	return r.cur.Load()
}

// Check returns a *RevokedError when leaf is revoked by the set in force.
func (r *Revocations) Check(leaf *x509.Certificate) error {
	return r.Get().Check(leaf)
}
