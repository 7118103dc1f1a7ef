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
	if ev.App != nil {
		if err := ev.App.Err(); err != nil {
			return Result{}, err
		}
		if ev.App.UID != peer.UID || ev.App.GID != peer.GID {
			if err := u.policies.admitUnix(id, ev.App.UID, ev.App.GID); err != nil {
				return Result{}, err
			}
		}
	}
	w, err := u.MeasureWorkload(peer, ev.App)
	if err != nil {
		return Result{}, err
	}
	if err := u.policies.CheckProxyCode(id, w.Proxy); err != nil {
		return Result{}, err
	}
	if err := u.policies.CheckCode(id, w.Code); err != nil {
		return Result{}, err
	}
	res := Result{Attestor: AttestorUnix, ID: id, Digest: w.Code.Digest}
	if ev.App != nil {
		res.ProxyDigest = w.Proxy.Digest
	}
	return res, nil
}

// Workload is what the controller measured of a workload on the Unix
// socket.
type Workload struct {
	// Code is the workload's code, for the policies' code sections and
	// the certificate: the app's when the proxy runs one, the connected
	// process's otherwise.
	Code Code
	// Proxy is the connected process's code, for the policies' proxyCode
	// sections; the same as Code when the proxy runs no app.
	Proxy Code
}

// MeasureWorkload measures a workload on the Unix socket: peer, the
// connected process, and app, the app it runs as its child, or nil when
// it runs none. The app must have been captured from peer (CaptureApp).
// Both are checked to be still the same processes after both were hashed.
// The controller measures every process on the Unix socket, also when a
// join token or a certificate attests its identity.
func (u *Unix) MeasureWorkload(peer, app *UnixPeer) (Workload, error) {
	proxy, err := u.Measure(peer)
	if err != nil {
		return Workload{}, err
	}
	if app == nil {
		return Workload{Code: proxy, Proxy: proxy}, nil
	}
	if app.parent != peer {
		return Workload{}, refuse(ReasonBadEvidence, "the app was not captured from this connection's process", nil)
	}
	code, err := u.Measure(app)
	if err != nil {
		return Workload{}, err
	}
	// The proxy is checked again after the app was hashed: it still runs
	// what was measured.
	if _, err := u.Measure(peer); err != nil {
		return Workload{}, err
	}
	return Workload{Code: code, Proxy: proxy}, nil
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
		Source:    "the executable " + strconv.Quote(peer.exePath) + " of " + peer.describe(),
	}, nil
}

// describe names the process for messages.
func (p *UnixPeer) describe() string {
	if p.parent != nil {
		return "app process " + strconv.Itoa(int(p.PID)) + ", child of process " + strconv.Itoa(int(p.parent.PID))
	}
	return "process " + strconv.Itoa(int(p.PID))
}

// UnixPeer is the process at the other end of a Unix-socket connection, as
// the kernel reported it when the controller accepted the connection, or
// the app that process runs as its child (CaptureApp). Its file
// descriptors pin the process; Close releases them.
type UnixPeer struct {
	// PID, UID and GID are what SO_PEERCRED reported: the process that
	// connected, and its effective user and group when it connected. For
	// an app, its PID and its effective user and group when captured.
	PID      int32
	UID, GID uint32

	err error // why the peer could not be captured; nil if it was

	// parent is the connected process when this is the app it runs as
	// its child (CaptureApp); nil for the connected process itself.
	parent *UnixPeer

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
