package meshtls

import (
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ReasonQuarantined names a peer whose identity is quarantined (rampart
// quarantine): its certificate is valid, but the mesh isolates it for a
// while.
const ReasonQuarantined = "quarantined"

// QuarantineSet is the identities isolated, each until a time. It is
// immutable once built; the zero value and nil quarantine nothing.
type QuarantineSet struct {
	until map[spiffeid.ID]time.Time
}

// NewQuarantineSet builds a set from identities and the time each one's
// quarantine ends.
func NewQuarantineSet(until map[spiffeid.ID]time.Time) *QuarantineSet {
	s := &QuarantineSet{until: make(map[spiffeid.ID]time.Time, len(until))}
	for id, t := range until {
		s.until[id] = t
	}
	return s
}

// Len is the number of identities listed, ended or not.
func (s *QuarantineSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.until)
}

// Quarantines reports whether id is quarantined at now: listed, with its
// end still to come.
func (s *QuarantineSet) Quarantines(id spiffeid.ID, now time.Time) (until time.Time, ok bool) {
	if s == nil || len(s.until) == 0 {
		return time.Time{}, false
	}
	until, ok = s.until[id]
	if !ok || !now.Before(until) {
		return time.Time{}, false
	}
	return until, true
}

// Check returns a *QuarantinedError when the SPIFFE ID of leaf is
// quarantined at now, nil otherwise.
func (s *QuarantineSet) Check(leaf *x509.Certificate, now time.Time) error {
	if s == nil || leaf == nil || len(s.until) == 0 {
		return nil
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil // not an SVID: refused elsewhere
	}
	if until, ok := s.Quarantines(id, now); ok {
		return &QuarantinedError{ID: id, Until: until}
	}
	return nil
}

// QuarantinedError is a peer refused because its identity is quarantined.
type QuarantinedError struct {
	ID    spiffeid.ID
	Until time.Time
}

func (e *QuarantinedError) Error() string {
	return fmt.Sprintf("meshtls: %s is quarantined until %s", e.ID, e.Until.UTC().Format(time.RFC3339))
}

// Quarantine holds the QuarantineSet in force and swaps it atomically:
// handshakes after Set are checked against the new set. The zero value
// and a nil *Quarantine quarantine nothing.
type Quarantine struct {
	cur atomic.Pointer[QuarantineSet]
}

// Set installs s (nil quarantines nothing).
func (q *Quarantine) Set(s *QuarantineSet) { q.cur.Store(s) }

// Get returns the set in force, or nil.
func (q *Quarantine) Get() *QuarantineSet {
	if q == nil {
		return nil
	}
	return q.cur.Load()
}

// Check returns a *QuarantinedError when leaf's identity is quarantined
// at now by the set in force.
func (q *Quarantine) Check(leaf *x509.Certificate, now time.Time) error {
	return q.Get().Check(leaf, now)
}
