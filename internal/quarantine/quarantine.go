// Package quarantine is the mesh's list of quarantined identities (rampart
// quarantine, and detections whose response is to quarantine): the file in
// the controller's state directory that the CLI and the controller edit,
// its strict parser, and the list as the controller pushes it to every
// proxy. A quarantined identity is isolated for a time: proxies refuse its
// handshakes both ways. Unlike a revocation it lapses on its own, and the
// controller goes on renewing the identity's certificates.
//
// It depends on internal/fsutil, internal/identity, the control-plane
// protocol and go-spiffe; never on the proxy, the controller or Kubernetes
// packages.
package quarantine

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rampart-mesh/rampart/internal/fsutil"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// Limits of the list.
const (
	// MaxEntries bounds the identities quarantined at once: every proxy
	// holds the whole list and consults it on every handshake.
	MaxEntries = 1000
	// MaxDuration bounds one quarantine: it is a stop-gap while someone
	// looks; an identity to keep out for longer is to be revoked.
	MaxDuration = 7 * 24 * time.Hour
	// MaxReasonLen bounds a reason, in bytes.
	MaxReasonLen = 256
	// MaxFileSize bounds the file read.
	MaxFileSize = 1 << 20
)

// FormatVersion is the version of the file format this package reads and
// writes.
const FormatVersion = 1

// ByOperator is Entry.By for a quarantine set with rampart quarantine add;
// ByDetection for one a detection set without naming its event.
const (
	ByOperator  = "operator"
	ByDetection = "detection"
)

// Entry is one identity quarantined from Since until Until.
type Entry struct {
	SPIFFEID string    `json:"spiffe_id"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	Reason   string    `json:"reason,omitempty"`
	// By is ByOperator, ByDetection, or the ID of the detection event
	// (16 lower-case hexadecimal digits) that set it.
	By string `json:"by"`
}

// ByOperator reports whether an operator set the entry rather than a
// detection.
func (e Entry) ByOperator() bool { return e.By == ByOperator }

// List is the content of the quarantine file.
type List struct {
	Version    int     `json:"version"`
	Identities []Entry `json:"identities"`
}

// Errors callers branch on.
var (
	// ErrInvalid: an argument or an entry is malformed.
	ErrInvalid = errors.New("quarantine: invalid")
	// ErrFull: the list holds MaxEntries identities in force.
	ErrFull = fmt.Errorf("quarantine: %d identities are quarantined, the most there may be; release some (rampart quarantine release) or revoke them (rampart identity revoke)", MaxEntries)
	// ErrNotQuarantined: release of an identity not in the list.
	ErrNotQuarantined = errors.New("quarantine: not quarantined")
)

// file is the format of the quarantine file.
var file = &fsutil.JSONFile[List]{
	Name:     "quarantine",
	What:     "quarantine list",
	MaxSize:  MaxFileSize,
	Invalid:  ErrInvalid,
	Empty:    func() *List { return &List{Version: FormatVersion} },
	Validate: (*List).Validate,
	Fix:      "fix or restore the file",
}

// Parse decodes and validates the content of a quarantine file. Unknown
// fields, a second JSON value, malformed or duplicate entries and more than
// MaxEntries entries are errors naming the entry at fault.
func Parse(data []byte) (*List, error) { return file.Parse(data) }

// Validate reports the first problem with l, naming the entry.
func (l *List) Validate() error {
	if l.Version != FormatVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, l.Version, FormatVersion)
	}
	if len(l.Identities) > MaxEntries {
		return fmt.Errorf("%w: %d entries, more than the %d allowed", ErrInvalid, len(l.Identities), MaxEntries)
	}
	seen := make(map[string]bool, len(l.Identities))
	for i, e := range l.Identities {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("identities[%d]: %w", i, err)
		}
		if seen[e.SPIFFEID] {
			return fmt.Errorf("%w: identities[%d]: %s listed twice", ErrInvalid, i, e.SPIFFEID)
		}
		seen[e.SPIFFEID] = true
	}
	return nil
}

// Validate reports the first problem with e.
func (e Entry) Validate() error {
	id, err := CheckID(e.SPIFFEID)
	if err != nil {
		return err
	}
	switch {
	case e.Since.IsZero():
		return fmt.Errorf("%w: %s: since is missing", ErrInvalid, id)
	case !e.Until.After(e.Since):
		return fmt.Errorf("%w: %s: until (%s) is not after since (%s)", ErrInvalid, id, stamp(e.Until), stamp(e.Since))
	case e.Until.Sub(e.Since) > MaxDuration:
		return fmt.Errorf("%w: %s: quarantined for %s, more than the %s allowed; revoke an identity to keep out for longer (rampart identity revoke)", ErrInvalid, id, e.Until.Sub(e.Since), MaxDuration)
	}
	if err := CheckBy(e.By); err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	if err := CheckReason(e.Reason); err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	return nil
}

// CheckID parses s as an identity that may be quarantined: a workload
// SPIFFE ID in canonical form, not the controller's own (every proxy would
// cut itself off the control plane).
func CheckID(s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: spiffe_id %q: %v", ErrInvalid, s, err)
	}
	if id.String() != s {
		return spiffeid.ID{}, fmt.Errorf("%w: spiffe_id %q is not in canonical form (%s)", ErrInvalid, s, id)
	}
	if id == identity.ControllerID(id.TrustDomain()) {
		return spiffeid.ID{}, fmt.Errorf("%w: %s is the controller's own identity: quarantining it would cut every proxy off the control plane", ErrInvalid, id)
	}
	if _, _, err := identity.ParseWorkloadID(id); err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %s is not a workload identity (spiffe://%s/ns/<namespace>/sa/<service-account>): %v", ErrInvalid, id, id.TrustDomain().Name(), err)
	}
	return id, nil
}

// CheckBy refuses what is neither ByOperator, ByDetection nor an event ID.
func CheckBy(by string) error {
	if by == ByOperator || by == ByDetection || IsEventID(by) {
		return nil
	}
	return fmt.Errorf("%w: by %.40q: want %q, %q or a detection event ID (16 lower-case hexadecimal digits)", ErrInvalid, by, ByOperator, ByDetection)
}

// IsEventID reports whether s has the form of a detection event's ID: 16
// lower-case hexadecimal digits.
func IsEventID(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
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

// Load reads and validates the quarantine file at path. A missing file is
// an empty list. Errors name the file.
func Load(path string) (*List, error) { return file.Load(path) }

// Update applies change to the list at path under an exclusive lock and
// writes the result atomically (mode 0600), so that concurrent editors
// never lose each other's entries. Entries expired at now are dropped
// first. A change that leaves the list invalid writes nothing.
func Update(path string, now time.Time, change func(*List) error) (*List, error) {
	return file.Update(path, func(l *List) error {
		l.Prune(now)
		if err := change(l); err != nil {
			return err
		}
		l.sort()
		if l.Identities == nil {
			l.Identities = []Entry{}
		}
		return nil
	})
}

// Add quarantines e.SPIFFEID from e.Since until e.Until. An identity
// already quarantined is quarantined again with e, which replaces its
// entry: the new end, reason and author apply.
func (l *List) Add(e Entry) error {
	if err := e.Validate(); err != nil {
		return err
	}
	if i := slices.IndexFunc(l.Identities, func(x Entry) bool { return x.SPIFFEID == e.SPIFFEID }); i >= 0 {
		l.Identities[i] = e
		return nil
	}
	if len(l.Identities) >= MaxEntries {
		return ErrFull
	}
	l.Identities = append(l.Identities, e)
	return nil
}

// Release ends the quarantine of id and returns its entry.
func (l *List) Release(id string) (Entry, error) {
	i := slices.IndexFunc(l.Identities, func(x Entry) bool { return x.SPIFFEID == id })
	if i < 0 {
		return Entry{}, fmt.Errorf("%w: %s; rampart quarantine list shows the identities quarantined", ErrNotQuarantined, id)
	}
	e := l.Identities[i]
	l.Identities = slices.Delete(l.Identities, i, i+1)
	return e, nil
}

// Prune drops the entries whose quarantine ended by now.
func (l *List) Prune(now time.Time) {
	l.Identities = slices.DeleteFunc(l.Identities, func(e Entry) bool { return !now.Before(e.Until) })
}

func (l *List) sort() {
	slices.SortFunc(l.Identities, func(a, b Entry) int { return cmp.Compare(a.SPIFFEID, b.SPIFFEID) })
}

// Active is the list in force at now: a copy of l without the entries
// expired, sorted by identity.
func (l *List) Active(now time.Time) *List {
	out := &List{Version: l.Version, Identities: slices.Clone(l.Identities)}
	out.Prune(now)
	out.sort()
	return out
}

// NextExpiry is the earliest Until of l, zero when l is empty.
func (l *List) NextExpiry() time.Time {
	var next time.Time
	for _, e := range l.Identities {
		if next.IsZero() || e.Until.Before(next) {
			next = e.Until
		}
	}
	return next
}

// Proto is the list as the controller pushes it to proxies; call it on an
// Active list.
func (l *List) Proto() *meshv1.Quarantine {
	out := &meshv1.Quarantine{Identities: make([]*meshv1.QuarantinedIdentity, 0, len(l.Identities))}
	for _, e := range l.Identities {
		out.Identities = append(out.Identities, &meshv1.QuarantinedIdentity{
			SpiffeId: e.SPIFFEID,
			Until:    timestamppb.New(e.Until),
			Reason:   e.Reason,
		})
	}
	return out
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
