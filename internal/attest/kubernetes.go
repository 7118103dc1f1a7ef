package attest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// DefaultAudience is the audience a projected ServiceAccount token must be
// issued for to attest a workload to Rampart.
const DefaultAudience = "rampart"

// maxServiceAccountToken bounds the token sent to TokenReview; a projected
// token is around a kilobyte.
const maxServiceAccountToken = 16 << 10

// Keys of TokenReview's status.user.extra that name the pod (and, from
// Kubernetes 1.30, the node) a projected token is bound to.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
)

// KubernetesEvidence is what a workload on Kubernetes presents.
type KubernetesEvidence struct {
	// Token is a projected ServiceAccount token issued for the attestor's
	// audience.
	Token string
	// NodeName is the node the workload says it runs on (the downward
	// API's spec.nodeName).
	NodeName string
}

// TokenReviewer asks the API server who a token belongs to: a
// TokenReview. The Kubernetes source supplies one backed by the API
// server; tests a fake.
type TokenReviewer interface {
	// ReviewToken returns the review's status for token, asked for
	// audiences. An error is a failure to ask, not a token refused.
	ReviewToken(ctx context.Context, token string, audiences []string) (*TokenReview, error)
}

// TokenReview is the status of a TokenReview.
type TokenReview struct {
	Authenticated bool
	// Error is the API server's reason for not authenticating.
	Error string
	// Username is system:serviceaccount:<namespace>:<name> for a
	// ServiceAccount token.
	Username string
	// Audiences the token is valid for, among those asked.
	Audiences []string
	// Extra holds ExtraPodName, ExtraPodUID and ExtraNodeName for a token
	// bound to a pod.
	Extra map[string][]string
}

// ErrPodNotFound is what a PodGetter returns when there is no such pod.
var ErrPodNotFound = errors.New("attest: pod not found")

// PodGetter reads a pod from the API server (or an informer's cache).
type PodGetter interface {
	// GetPod returns the pod, or an error wrapping ErrPodNotFound.
	GetPod(ctx context.Context, namespace, name string) (*Pod, error)
}

// Pod is what the attestor needs of a pod.
type Pod struct {
	Namespace, Name, UID string
	ServiceAccountName   string
	NodeName             string
	// Phase is the pod's status.phase: Pending, Running, Succeeded, Failed
	// or Unknown.
	Phase string
	// Terminating: the pod has a deletion timestamp.
	Terminating bool
}

// KubernetesConfig configures a Kubernetes attestor.
type KubernetesConfig struct {
	// TrustDomain of the identities it attests. Required.
	TrustDomain spiffeid.TrustDomain
	// Audience the token must be issued for; empty means DefaultAudience.
	Audience string
	// Reviewer runs TokenReviews. Required.
	Reviewer TokenReviewer
	// Pods reads the pod a token is bound to. Required.
	Pods PodGetter
}

// Validate reports whether c can build a Kubernetes attestor.
func (c KubernetesConfig) Validate() error {
	var errs []error
	if c.TrustDomain.IsZero() {
		errs = append(errs, errors.New("attest: kubernetes: trust domain is required"))
	}
	if c.Reviewer == nil {
		errs = append(errs, errors.New("attest: kubernetes: token reviewer is required"))
	}
	if c.Pods == nil {
		errs = append(errs, errors.New("attest: kubernetes: pod getter is required"))
	}
	return errors.Join(errs...)
}

// Kubernetes attests a workload by a projected ServiceAccount token: the
// API server must authenticate it for Rampart's audience, it must be bound
// to a pod, and that pod must exist (with the UID the token names), use
// the token's ServiceAccount, run on the node the workload claims, and be
// running. The identity is the token's namespace and ServiceAccount.
//
// It measures no code yet: a policy on code refuses its workloads
// (code_not_attested) until image digests are attested.
type Kubernetes struct {
	td       spiffeid.TrustDomain
	audience string
	reviewer TokenReviewer
	pods     PodGetter
}

var _ Attestor = (*Kubernetes)(nil)

// NewKubernetes returns a Kubernetes attestor.
func NewKubernetes(cfg KubernetesConfig) (*Kubernetes, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &Kubernetes{td: cfg.TrustDomain, audience: cfg.Audience, reviewer: cfg.Reviewer, pods: cfg.Pods}
	if k.audience == "" {
		k.audience = DefaultAudience
	}
	return k, nil
}

// Attest implements Attestor.
func (k *Kubernetes) Attest(ctx context.Context, ev Evidence) (Result, error) {
	e := ev.Kubernetes
	switch {
	case e == nil || e.Token == "":
		return Result{}, refuse(ReasonBadEvidence, "a projected ServiceAccount token with audience "+k.audience+" is required", nil)
	case len(e.Token) > maxServiceAccountToken:
		return Result{}, refuse(ReasonBadEvidence, fmt.Sprintf("the ServiceAccount token is %d bytes, more than the %d allowed", len(e.Token), maxServiceAccountToken), nil)
	case e.NodeName == "":
		return Result{}, refuse(ReasonBadEvidence, "the node the workload runs on is required (the downward API's spec.nodeName)", nil)
	}

	review, err := k.reviewer.ReviewToken(ctx, e.Token, []string{k.audience})
	if err != nil {
		return Result{}, refuse(ReasonAPIUnavailable, "the Kubernetes API server could not review the token; retry", err)
	}
	if review == nil || !review.Authenticated {
		msg := "the Kubernetes API server did not authenticate the ServiceAccount token"
		if review != nil && review.Error != "" {
			msg += ": " + review.Error
		}
		return Result{}, refuse(ReasonTokenRejected, msg, nil)
	}
	if !slices.Contains(review.Audiences, k.audience) {
		return Result{}, refuse(ReasonWrongAudience, "the ServiceAccount token is not for audience "+k.audience+"; project one with that audience", nil)
	}
	ns, sa, ok := parseServiceAccountUser(review.Username)
	if !ok {
		return Result{}, refuse(ReasonTokenRejected, fmt.Sprintf("the token belongs to %q, not to a ServiceAccount", review.Username), nil)
	}
	id, err := identity.WorkloadID(k.td, ns, sa)
	if err != nil {
		return Result{}, refuse(ReasonTokenRejected, "the token's ServiceAccount is not a valid workload identity", err)
	}
	if err := CheckIdentity(k.td, id); err != nil {
		return Result{}, err
	}
	podName, podUID := extra(review, ExtraPodName), extra(review, ExtraPodUID)
	if podName == "" || podUID == "" {
		return Result{}, refuse(ReasonTokenNotBound, "the ServiceAccount token is not bound to a pod; use a projected token (serviceAccountToken volume), not a Secret", nil)
	}
	if node := extra(review, ExtraNodeName); node != "" && node != e.NodeName {
		return Result{}, refuse(ReasonNodeMismatch, fmt.Sprintf("the token was issued for a pod on node %q, the workload claims %q", node, e.NodeName), nil)
	}

	pod, err := k.pods.GetPod(ctx, ns, podName)
	switch {
	case errors.Is(err, ErrPodNotFound):
		return Result{}, refuse(ReasonPodNotFound, fmt.Sprintf("pod %s/%s, to which the token is bound, does not exist", ns, podName), err)
	case err != nil:
		return Result{}, refuse(ReasonAPIUnavailable, "the Kubernetes API server could not be asked for the pod; retry", err)
	case pod == nil:
		return Result{}, refuse(ReasonPodNotFound, fmt.Sprintf("pod %s/%s, to which the token is bound, does not exist", ns, podName), nil)
	case pod.UID != podUID:
		return Result{}, refuse(ReasonPodNotFound, fmt.Sprintf("pod %s/%s is not the pod the token was issued for (UID %s, token's %s): it was replaced", ns, podName, pod.UID, podUID), nil)
	case pod.Namespace != ns || pod.Name != podName:
		return Result{}, refuse(ReasonPodMismatch, fmt.Sprintf("asked for pod %s/%s, got %s/%s", ns, podName, pod.Namespace, pod.Name), nil)
	case pod.ServiceAccountName != sa:
		return Result{}, refuse(ReasonPodMismatch, fmt.Sprintf("pod %s/%s runs as ServiceAccount %q, the token is for %q", ns, podName, pod.ServiceAccountName, sa), nil)
	case pod.NodeName != e.NodeName:
		return Result{}, refuse(ReasonNodeMismatch, fmt.Sprintf("pod %s/%s runs on node %q, the workload claims %q", ns, podName, pod.NodeName, e.NodeName), nil)
	case pod.Phase != "Running" || pod.Terminating:
		phase := pod.Phase
		if pod.Terminating {
			phase += ", terminating"
		}
		return Result{}, refuse(ReasonPodNotRunning, fmt.Sprintf("pod %s/%s is not running (%s)", ns, podName, phase), nil)
	}
	return Result{Attestor: AttestorKubernetes, ID: id}, nil
}

// parseServiceAccountUser splits system:serviceaccount:<ns>:<name>.
func parseServiceAccountUser(user string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, sa, ok = strings.Cut(rest, ":")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return "", "", false
	}
	return ns, sa, true
}

// extra returns the single value of key in the review's extra, or "" when
// it has none or several.
func extra(r *TokenReview, key string) string {
	if v := r.Extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}
