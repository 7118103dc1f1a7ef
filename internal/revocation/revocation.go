// Package revocation is the mesh's list of revoked certificates and
// identities (rampart identity revoke): the file in the controller's state
// directory that the CLI edits and the controller reads, its strict parser,
// and what follows from the list: the set of certificates peers must refuse
// (pushed to every proxy) and whether an identity may be issued.
//
// It depends on internal/fsutil, internal/meshtls, the control-plane
// protocol and go-spiffe; never on the proxy, the controller or Kubernetes
// packages.
package revocation

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rampart-mesh/rampart/internal/fsutil"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// Limits of the list.
const (
	// MaxEntries bounds certificates plus identities: every proxy holds the
	// whole list, and every handshake consults it.
	MaxEntries = 10000
	// MaxReasonLen bounds a reason, in bytes.
	MaxReasonLen = 256
	// MaxSerialLen bounds a serial number in hexadecimal: RFC 5280 allows
	// 20 octets.
	MaxSerialLen = 40
	// MaxFileSize bounds the file read.
	MaxFileSize = 8 << 20
	// MaxEncodedSize bounds the list as the controller pushes it to every
	// proxy (Proto, in protobuf encoding): it travels in every proxy's
	// configuration, which must stay well under the proxies' receive
	// limit. MaxEntries entries with short reasons fit; 10,000 identities
	// with 256-byte reasons would not.
	MaxEncodedSize = 1 << 20
)

// FormatVersion is the version of the file format this package reads and
// writes.
const FormatVersion = 1

// Certificate is one certificate revoked by serial number. It cannot be
// released: the entry lapses when the certificate expires.
type Certificate struct {
	// Serial in lower-case hexadecimal without leading zeros.
	Serial string `json:"serial"`
	// SPIFFEID is the identity the certificate was issued for, when known
	// (from the controller's record of certificates in use); for display.
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// NotAfter is the certificate's expiry, when known; without it the
	// entry lasts one certificate lifetime from RevokedAt.
	NotAfter  time.Time `json:"not_after,omitzero"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// Identity is a SPIFFE ID revoked: every certificate of it whose NotBefore
// lies before RevokedAt is refused, and none is issued until it is
// released. A released entry keeps refusing the certificates issued before
// RevokedAt until the last of them has expired.
type Identity struct {
	SPIFFEID   string    `json:"spiffe_id"`
	RevokedAt  time.Time `json:"revoked_at"`
	Reason     string    `json:"reason,omitempty"`
	ReleasedAt time.Time `json:"released_at,omitzero"`
}

// Released reports whether the identity may be issued again.
func (i Identity) Released() bool { return !i.ReleasedAt.IsZero() }

// List is the content of the revocations file.
type List struct {
	Version      int           `json:"version"`
	Certificates []Certificate `json:"certificates"`
	Identities   []Identity    `json:"identities"`
}

// Len is the number of entries.
func (l *List) Len() int { return len(l.Certificates) + len(l.Identities) }

// Errors callers branch on.
var (
	// ErrFull: the list holds MaxEntries entries.
	ErrFull = fmt.Errorf("revocation: the list holds %d entries, the most it may; the running controller removes entries from the file as they lapse", MaxEntries)
	// ErrInvalid: an argument or an entry is malformed.
	ErrInvalid = errors.New("revocation: invalid")
)

// file is the format of the revocations file.
var file = &fsutil.JSONFile[List]{
	Name:     "revocation",
	What:     "revocation list",
	MaxSize:  MaxFileSize,
	Invalid:  ErrInvalid,
	Empty:    func() *List { return &List{Version: FormatVersion} },
	Validate: (*List).Validate,
	Fix:      "the controller keeps the list it had: fix or restore the file",
}

// Parse decodes and validates the content of a revocations file. Unknown
// fields, a second JSON value, malformed or duplicate entries and more than
// MaxEntries entries are errors naming the entry at fault.
func Parse(data []byte) (*List, error) { return file.Parse(data) }

// Validate reports the first problem with l, naming the entry.
func (l *List) Validate() error {
	if l.Version != FormatVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, l.Version, FormatVersion)
	}
	if l.Len() > MaxEntries {
		return fmt.Errorf("%w: %d entries, more than the %d allowed", ErrInvalid, l.Len(), MaxEntries)
	}
	if n := l.EncodedSize(); n > MaxEncodedSize {
		return fmt.Errorf("%w: the list encodes to %d bytes for the proxies, more than the %d (1 MiB) allowed: shorten reasons or release identities that may be issued again", ErrInvalid, n, MaxEncodedSize)
	}
	serials := make(map[string]bool, len(l.Certificates))
	for i, c := range l.Certificates {
		if err := CheckSerial(c.Serial); err != nil {
			return fmt.Errorf("certificates[%d]: %w", i, err)
		}
		if serials[c.Serial] {
			return fmt.Errorf("%w: certificates[%d]: serial %s listed twice", ErrInvalid, i, c.Serial)
		}
		serials[c.Serial] = true
		if c.SPIFFEID != "" {
			if _, err := spiffeid.FromString(c.SPIFFEID); err != nil {
				return fmt.Errorf("%w: certificates[%d] (%s): spiffe_id %q: %v", ErrInvalid, i, c.Serial, c.SPIFFEID, err)
			}
		}
		if c.RevokedAt.IsZero() {
			return fmt.Errorf("%w: certificates[%d] (%s): revoked_at is missing", ErrInvalid, i, c.Serial)
		}
		if err := CheckReason(c.Reason); err != nil {
			return fmt.Errorf("certificates[%d] (%s): %w", i, c.Serial, err)
		}
	}
	ids := make(map[string]bool, len(l.Identities))
	for i, id := range l.Identities {
		parsed, err := spiffeid.FromString(id.SPIFFEID)
		if err != nil {
			return fmt.Errorf("%w: identities[%d]: spiffe_id %q: %v", ErrInvalid, i, id.SPIFFEID, err)
		}
		if parsed.String() != id.SPIFFEID {
			return fmt.Errorf("%w: identities[%d]: spiffe_id %q is not in canonical form (%s)", ErrInvalid, i, id.SPIFFEID, parsed)
		}
		if ids[id.SPIFFEID] {
			return fmt.Errorf("%w: identities[%d]: %s listed twice", ErrInvalid, i, id.SPIFFEID)
		}
		ids[id.SPIFFEID] = true
		if id.RevokedAt.IsZero() {
			return fmt.Errorf("%w: identities[%d] (%s): revoked_at is missing", ErrInvalid, i, id.SPIFFEID)
		}
		if id.Released() && id.ReleasedAt.Before(id.RevokedAt) {
			return fmt.Errorf("%w: identities[%d] (%s): released_at is before revoked_at", ErrInvalid, i, id.SPIFFEID)
		}
		if err := CheckReason(id.Reason); err != nil {
			return fmt.Errorf("identities[%d] (%s): %w", i, id.SPIFFEID, err)
		}
	}
	return nil
}

// EncodedSize is the size in bytes of the list as the controller pushes it
// to proxies (Proto), which MaxEncodedSize bounds.
func (l *List) EncodedSize() int {
	// The lifetime only sets timestamps, whose encoded size barely varies.
	return proto.Size(l.Proto(24 * time.Hour))
}

// CheckSerial refuses what is not a serial number as Rampart prints them:
// lower-case hexadecimal, no leading zero, no separator, at most
// MaxSerialLen digits.
func CheckSerial(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: serial is empty", ErrInvalid)
	case len(s) > MaxSerialLen:
		return fmt.Errorf("%w: serial %.48q has more than %d hexadecimal digits", ErrInvalid, s, MaxSerialLen)
	case s[0] == '0':
		return fmt.Errorf("%w: serial %q has a leading zero; write it as rampart identity status prints it", ErrInvalid, s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: serial %q is not lower-case hexadecimal", ErrInvalid, s)
		}
	}
	return nil
}

// CheckReason refuses a reason longer than MaxReasonLen or with control
// characters or invalid UTF-8: it ends up in logs.
func CheckReason(r string) error {
	if len(r) > MaxReasonLen {
		return fmt.Errorf("%w: reason is %d bytes, more than the %d allowed", ErrInvalid, len(r), MaxReasonLen)
	}
	for _, c := range r {
		if c == unicode.ReplacementChar || unicode.IsControl(c) {
			return fmt.Errorf("%w: reason %q holds a control character or invalid UTF-8", ErrInvalid, r)
		}
	}
	return nil
}

// Load reads and validates the revocations file at path. A missing file is
// an empty list. Errors name the file.
func Load(path string) (*List, error) { return file.Load(path) }

// Update applies change to the list at path under an exclusive lock and
// writes the result atomically (mode 0600), so that concurrent editors
// never lose each other's entries. Entries that lapsed by now (see
// Prune) are dropped first. A change that leaves the list invalid writes
// nothing.
func Update(path string, now time.Time, lifetime time.Duration, change func(*List) error) (*List, error) {
	return file.Update(path, func(l *List) error {
		l.Prune(now, lifetime)
		if err := change(l); err != nil {
			return err
		}
		l.sort()
		return nil
	})
}

// RevokeCertificate adds c (RevokedAt and Serial set). Revoking a serial
// already listed keeps the first entry.
func (l *List) RevokeCertificate(c Certificate) error {
	if err := CheckSerial(c.Serial); err != nil {
		return err
	}
	if err := CheckReason(c.Reason); err != nil {
		return err
	}
	if slices.ContainsFunc(l.Certificates, func(e Certificate) bool { return e.Serial == c.Serial }) {
		return nil
	}
	if l.Len() >= MaxEntries {
		return fmt.Errorf("%w (certificates when they expire, released identities one certificate lifetime after their revocation)", ErrFull)
	}
	l.Certificates = append(l.Certificates, c)
	return nil
}

// RevokeIdentity adds id (RevokedAt set). Revoking an identity already
// listed and not released keeps the first entry; revoking a released one
// revokes it again from id.RevokedAt.
func (l *List) RevokeIdentity(id Identity) error {
	if err := CheckReason(id.Reason); err != nil {
		return err
	}
	for i, e := range l.Identities {
		if e.SPIFFEID != id.SPIFFEID {
			continue
		}
		if !e.Released() {
			return nil
		}
		l.Identities[i] = Identity{SPIFFEID: id.SPIFFEID, RevokedAt: id.RevokedAt, Reason: id.Reason}
		return nil
	}
	if l.Len() >= MaxEntries {
		return fmt.Errorf("%w; release identities that may be issued again (rampart identity revoke --release)", ErrFull)
	}
	l.Identities = append(l.Identities, Identity{SPIFFEID: id.SPIFFEID, RevokedAt: id.RevokedAt, Reason: id.Reason})
	return nil
}

// Release lets the controller issue id again from at on. Certificates of
// id issued before its revocation stay refused until they expire.
func (l *List) Release(id string, at time.Time) error {
	for i, e := range l.Identities {
		if e.SPIFFEID != id {
			continue
		}
		if e.Released() {
			return fmt.Errorf("%w: %s was already released at %s", ErrInvalid, id, e.ReleasedAt.UTC().Format(time.RFC3339))
		}
		l.Identities[i].ReleasedAt = at
		return nil
	}
	if slices.ContainsFunc(l.Certificates, func(c Certificate) bool { return c.Serial == id }) {
		return fmt.Errorf("%w: %s is a certificate: a revoked certificate stays revoked until it expires; release applies to identities", ErrInvalid, id)
	}
	return fmt.Errorf("%w: %s is not revoked", ErrInvalid, id)
}

// Prune drops the entries that no longer refuse anything at now:
// certificates past their expiry (or, expiry unknown, one lifetime after
// their revocation), and released identities one lifetime after their
// revocation, when every certificate issued before it has expired.
// lifetime is the longest a certificate issued by the controller lives;
// zero means it is not known here (the CLI), and only the certificates of
// known expiry lapse.
func (l *List) Prune(now time.Time, lifetime time.Duration) {
	l.Certificates = slices.DeleteFunc(l.Certificates, func(c Certificate) bool {
		if lifetime <= 0 && c.NotAfter.IsZero() {
			return false
		}
		return !now.Before(certExpiry(c, lifetime))
	})
	if lifetime <= 0 {
		return
	}
	l.Identities = slices.DeleteFunc(l.Identities, func(id Identity) bool {
		return id.Released() && !now.Before(id.RevokedAt.Add(lifetime))
	})
}

func certExpiry(c Certificate, lifetime time.Duration) time.Time {
	if !c.NotAfter.IsZero() {
		return c.NotAfter
	}
	return c.RevokedAt.Add(lifetime)
}

func (l *List) sort() {
	slices.SortFunc(l.Certificates, func(a, b Certificate) int { return cmp.Compare(a.Serial, b.Serial) })
	slices.SortFunc(l.Identities, func(a, b Identity) int { return cmp.Compare(a.SPIFFEID, b.SPIFFEID) })
}

// Active is the list in force at now: a copy of l without the entries
// Prune would drop, sorted.
func (l *List) Active(now time.Time, lifetime time.Duration) *List {
	out := &List{
		Version:      l.Version,
		Certificates: slices.Clone(l.Certificates),
		Identities:   slices.Clone(l.Identities),
	}
	out.Prune(now, lifetime)
	out.sort()
	return out
}

// Proto is the list as the controller pushes it to proxies; call it on an
// Active list. A certificate without a known expiry is sent with the one
// Prune gives it.
func (l *List) Proto(lifetime time.Duration) *meshv1.Revocations {
	out := &meshv1.Revocations{}
	for _, c := range l.Certificates {
		out.Certificates = append(out.Certificates, &meshv1.RevokedCertificate{
			Serial:   c.Serial,
			NotAfter: timestamppb.New(certExpiry(c, lifetime)),
			Reason:   c.Reason,
		})
	}
	for _, id := range l.Identities {
		out.Identities = append(out.Identities, &meshv1.RevokedIdentity{
			SpiffeId:  id.SPIFFEID,
			RevokedAt: timestamppb.New(id.RevokedAt),
			Reason:    id.Reason,
		})
	}
	return out
}

// Set is the certificates that peers refuse under l.
func (l *List) Set() *meshtls.RevocationSet {
	serials := make([]string, 0, len(l.Certificates))
	for _, c := range l.Certificates {
		serials = append(serials, c.Serial)
	}
	ids := make(map[spiffeid.ID]time.Time, len(l.Identities))
	for _, e := range l.Identities {
		if id, err := spiffeid.FromString(e.SPIFFEID); err == nil { // validated on load
			ids[id] = e.RevokedAt
		}
	}
	return meshtls.NewRevocationSet(serials, ids)
}

// RevokedIdentityError is an identity the controller must not issue.
type RevokedIdentityError struct {
	Entry Identity
	// Until is set when the identity was released but certificates may
	// not be issued before this time yet (see CheckIssue).
	Until time.Time
}

func (e *RevokedIdentityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "identity %s was revoked at %s", e.Entry.SPIFFEID, e.Entry.RevokedAt.UTC().Format(time.RFC3339))
	if e.Entry.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Entry.Reason)
	}
	if !e.Until.IsZero() {
		fmt.Fprintf(&b, "; it was released, and may be issued again from %s, when a new certificate can no longer predate the revocation", e.Until.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(&b, "; no certificate is issued for it until `rampart identity revoke --release %s`", e.Entry.SPIFFEID)
	}
	return b.String()
}

// CheckIssue returns a *RevokedIdentityError when id may not be issued at
// now: it is revoked and not released, or released less than backdate
// after its revocation. backdate is how far the CA sets a certificate's
// NotBefore before its issue: a certificate issued sooner would predate the
// revocation and be refused by every peer.
func (l *List) CheckIssue(id spiffeid.ID, now time.Time, backdate time.Duration) error {
	s := id.String()
	for _, e := range l.Identities {
		if e.SPIFFEID != s {
			continue
		}
		if !e.Released() {
			return &RevokedIdentityError{Entry: e}
		}
		// NotBefore has whole seconds: round the revocation up to one.
		until := e.RevokedAt.Add(backdate)
		if t := until.Truncate(time.Second); t.Before(until) {
			until = t.Add(time.Second)
		}
		if now.Before(until) {
			return &RevokedIdentityError{Entry: e, Until: until}
		}
	}
	return nil
}
