package attest

import (
	"context"
	"errors"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// Attestor proves a workload's identity from the evidence it presents.
type Attestor interface {
	// Attest returns what the evidence proves, or an *Error saying why it
	// proves nothing. It never returns a Result with a zero ID and a nil
	// error.
	Attest(ctx context.Context, ev Evidence) (Result, error)
}

// Evidence is what a workload presents to be attested. Each attestor reads
// its own part and refuses (bad_evidence) when that part is missing.
type Evidence struct {
	// Requested is the identity the workload asks for: the URI SAN of its
	// CSR. The Unix attestor checks that the process may claim it; the
	// join-token and Kubernetes attestors derive the identity from their
	// evidence and ignore it (the CA then refuses a CSR for another).
	Requested spiffeid.ID
	// JoinToken is a join token from `rampart token create`.
	JoinToken string
	// Unix is the process at the other end of a connection to the
	// controller's Unix socket.
	Unix *UnixPeer
	// App is the app that the process on Unix runs as its child
	// (CertifyRequest.app_pid), pinned by UnixPeer.CaptureApp; nil when
	// it runs none. When set, the app's executable is the workload's
	// code, and Unix's is the proxy's.
	App *UnixPeer
	// Kubernetes is a projected ServiceAccount token and the node it
	// claims to run on.
	Kubernetes *KubernetesEvidence
}

// Names of the attestors, in Result.Attestor and logs.
const (
	AttestorJoinToken  = "join_token"
	AttestorUnix       = "unix"
	AttestorKubernetes = "kubernetes"
)

// Result is what an attestor proved.
type Result struct {
	// Attestor names the attestor that proved it.
	Attestor string
	// ID is the attested workload identity.
	ID spiffeid.ID
	// Digest is the attested digest of the workload's code,
	// "sha256:<hex>", or empty when the attestor measured none.
	Digest string
	// ProxyDigest is the digest of the process that asked on the
	// workload's behalf when it is not the workload itself (Evidence.App
	// was set); empty otherwise.
	ProxyDigest string
}

// Reasons an attestation is refused: a closed set, for logs and metric
// labels.
const (
	// Join tokens (the strings match the controller's existing reasons).
	ReasonNoToken      = "no_token"
	ReasonBadToken     = "bad_token"
	ReasonUnknownToken = "unknown_token"
	ReasonUsedToken    = "used_token"
	ReasonExpiredToken = "expired_token"

	// ReasonBadEvidence: the attestor's part of the evidence is missing
	// or malformed.
	ReasonBadEvidence = "bad_evidence"
	// ReasonReservedIdentity: the identity is the controller's own.
	ReasonReservedIdentity = "reserved_identity"

	// Unix socket.
	ReasonNoPolicy       = "no_policy"        // no policy lets a local process claim the identity
	ReasonUserNotAllowed = "user_not_allowed" // the process's uid or gid is not one a policy lists
	ReasonPeerGone       = "peer_gone"        // the process exited (its PID may be someone else's now)
	ReasonPeerChanged    = "peer_changed"     // the process executed another program since it connected
	ReasonPeerUnreadable = "peer_unreadable"  // the controller cannot read the process's executable

	// The app a proxy runs as its child (CertifyRequest.app_pid).
	ReasonAppNotChild  = "app_not_child"  // the PID is not a child process of the connected process
	ReasonAppGone      = "app_gone"       // the app exited before it was attested
	ReasonAppChanged   = "app_changed"    // the app executed another program while it was attested
	ReasonAppNeedsUnix = "app_needs_unix" // an app PID was sent other than over the Unix attestation socket

	// Code integrity.
	ReasonCodeNotAttested = "code_not_attested" // a policy requires a code digest and none was measured
	ReasonCodeNotAllowed  = "code_not_allowed"  // the digest is neither listed nor signed by a listed key
	ReasonCodeChanged     = "code_changed"      // on renewal, the code differs from the certificate's

	// Kubernetes.
	ReasonTokenRejected  = "sa_token_rejected"  // TokenReview did not authenticate the token
	ReasonWrongAudience  = "wrong_audience"     // the token is not for Rampart
	ReasonTokenNotBound  = "sa_token_not_bound" // the token is not bound to a pod
	ReasonPodNotFound    = "pod_not_found"      // no such pod, or another pod by that name
	ReasonPodMismatch    = "pod_mismatch"       // the pod runs as another service account
	ReasonNodeMismatch   = "node_mismatch"      // the pod is not on the claimed node
	ReasonPodNotRunning  = "pod_not_running"    // the pod is not running, or is terminating
	ReasonAPIUnavailable = "unavailable"        // the Kubernetes API could not be asked

	ReasonInternal = "internal"
)

var reasons = []string{
	ReasonNoToken, ReasonBadToken, ReasonUnknownToken, ReasonUsedToken, ReasonExpiredToken,
	ReasonBadEvidence, ReasonReservedIdentity,
	ReasonNoPolicy, ReasonUserNotAllowed, ReasonPeerGone, ReasonPeerChanged, ReasonPeerUnreadable,
	ReasonAppNotChild, ReasonAppGone, ReasonAppChanged, ReasonAppNeedsUnix,
	ReasonCodeNotAttested, ReasonCodeNotAllowed, ReasonCodeChanged,
	ReasonTokenRejected, ReasonWrongAudience, ReasonTokenNotBound, ReasonPodNotFound,
	ReasonPodMismatch, ReasonNodeMismatch, ReasonPodNotRunning, ReasonAPIUnavailable,
	ReasonInternal,
}

// Reasons returns every reason an *Error may carry.
func Reasons() []string { return slices.Clone(reasons) }

// Error is a refused attestation.
type Error struct {
	// Reason is one of Reasons().
	Reason string
	// Msg says, to the workload's operator, what is wrong and what to do.
	Msg string
	// Digest is the code digest that was refused, when the refusal is
	// about code.
	Digest string
	// Err is the underlying error, for the controller's log; may be nil.
	Err error
}

func (e *Error) Error() string {
	s := "attest: " + e.Reason + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Reason returns the reason of an *Error in err's chain, or ReasonInternal.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) && slices.Contains(reasons, e.Reason) {
		return e.Reason
	}
	return ReasonInternal
}

func refuse(reason, msg string, err error) *Error {
	return &Error{Reason: reason, Msg: msg, Err: err}
}

// CheckIdentity refuses the identities that no attestation may grant: the
// controller's own, which proxies trust to configure them.
func CheckIdentity(td spiffeid.TrustDomain, id spiffeid.ID) error {
	if id == identity.ControllerID(td) {
		return refuse(ReasonReservedIdentity, id.String()+" is the controller's own identity; no workload may receive it", nil)
	}
	return nil
}
