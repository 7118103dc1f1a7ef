package attest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// DefaultMaxExecutableSize bounds the executable the Unix attestor hashes
// when UnixConfig names no bound.
const DefaultMaxExecutableSize = 1 << 30

// UnixConfig configures a Unix attestor.
type UnixConfig struct {
	// TrustDomain of the identities it attests. Required.
	TrustDomain spiffeid.TrustDomain
	// Policies say which processes may claim which identity, and which
	// code may have it. Required.
	Policies *Policies
	// MaxExecutableSize bounds the executable hashed; a larger one is
	// refused (peer_unreadable). Zero means DefaultMaxExecutableSize.
	MaxExecutableSize int64
}

// Validate reports whether c can build a Unix attestor.
func (c UnixConfig) Validate() error {
	var errs []error
	if c.TrustDomain.IsZero() {
		errs = append(errs, errors.New("attest: unix: trust domain is required"))
	}
	if c.Policies == nil {
		errs = append(errs, errors.New("attest: unix: policies are required"))
	}
	if c.MaxExecutableSize < 0 {
		errs = append(errs, fmt.Errorf("attest: unix: max executable size %d is negative", c.MaxExecutableSize))
	}
	return errors.Join(errs...)
}

// Unix attests a process connected to the controller's Unix socket: the
// kernel says which process it is and as which user and group it runs
// (SO_PEERCRED), the controller hashes its executable (/proc/<pid>/exe),
// and a WorkloadAttestationPolicy must let that user and group claim the
// requested identity and admit that code.
//
// See CaptureUnixPeer for how the process is pinned against PID reuse and
// what remains.
type Unix struct {
	td       spiffeid.TrustDomain
	policies *Policies
	maxExe   int64
}

var _ Attestor = (*Unix)(nil)

// NewUnix returns a Unix attestor.
func NewUnix(cfg UnixConfig) (*Unix, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u := &Unix{td: cfg.TrustDomain, policies: cfg.Policies, maxExe: cfg.MaxExecutableSize}
	if u.maxExe == 0 {
		u.maxExe = DefaultMaxExecutableSize
	}
	return u, nil
}

// Attest implements Attestor: the identity is ev.Requested when the
// process on ev.Unix may claim it and its code is admitted.
func (u *Unix) Attest(_ context.Context, ev Evidence) (Result, error) {
	peer := ev.Unix
	if peer == nil {
		return Result{}, refuse(ReasonBadEvidence, "Unix-socket attestation needs a connection to the controller's Unix socket", nil)
	}
	if err := peer.Err(); err != nil {
		return Result{}, err
	}
	id := ev.Requested
	if id.IsZero() {
		return Result{}, refuse(ReasonBadEvidence, "the request names no identity to claim", nil)
	}
	if err := CheckIdentity(u.td, id); err != nil {
		return Result{}, err
	}
	if id.TrustDomain() != u.td {
		return Result{}, refuse(ReasonNoPolicy, id.String()+" is not in trust domain "+u.td.Name(), nil)
	}
	if _, _, err := identity.ParseWorkloadID(id); err != nil {
		return Result{}, refuse(ReasonNoPolicy, "only workload identities (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>) can be claimed", err)
	}
	if err := u.policies.admitUnix(id, peer.UID, peer.GID); err != nil {
		return Result{}, err
	}
	code, err := u.Measure(peer)
	if err != nil {
		return Result{}, err
	}
	if err := u.policies.CheckCode(id, code); err != nil {
		return Result{}, err
	}
	return Result{Attestor: AttestorUnix, ID: id, Digest: code.Digest}, nil
}

// Measure returns the code of the process on peer: the digest of the
// executable it ran when it connected, checked to be still running it, and
// a loader for the detached signature beside that executable. The
// controller measures every process on the Unix socket, also when a join
// token or a certificate attests its identity.
func (u *Unix) Measure(peer *UnixPeer) (Code, error) {
	if peer == nil {
		return Code{}, refuse(ReasonBadEvidence, "no process to measure", nil)
	}
	if err := peer.Err(); err != nil {
		return Code{}, err
	}
	digest, err := peer.measure(u.maxExe)
	if err != nil {
		return Code{}, err
	}
	return Code{
		Digest:    digest,
		Signature: peer.signature,
		Source:    "the executable " + strconv.Quote(peer.exePath) + " of process " + strconv.Itoa(int(peer.PID)),
	}, nil
}

// UnixPeer is the process at the other end of a Unix-socket connection, as
// the kernel reported it when the controller accepted the connection. Its
// file descriptors pin the process; Close releases them.
type UnixPeer struct {
	// PID, UID and GID are what SO_PEERCRED reported: the process that
	// connected, and its effective user and group when it connected.
	PID      int32
	UID, GID uint32

	err error // why the peer could not be captured; nil if it was

	mu      sync.Mutex
	closed  bool
	sys     peerSys // the platform's handles
	exePath string  // the executable's path when captured, in the process's mount namespace
	digest  string  // cached once measured
}

// Err is why the peer could not be captured, an *Error, or nil.
func (p *UnixPeer) Err() error {
	if p == nil {
		return refuse(ReasonBadEvidence, "no Unix peer", nil)
	}
	return p.err
}

// Close releases the handles that pin the process. It is idempotent and
// safe to call concurrently with a measurement, which then fails
// (peer_gone).
func (p *UnixPeer) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.sys.close()
}
