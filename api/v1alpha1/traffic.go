package v1alpha1

// This file holds TrafficPolicy: how the callers of one Service balance,
// retry, eject failing endpoints and time out idle traffic.
// docs/traffic.md describes it; internal/discovery compiles it and the
// proxy's outbound side applies it.

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KindTrafficPolicy is the kind of TrafficPolicy.
const KindTrafficPolicy = "TrafficPolicy"

// TrafficPolicy is the client side of the traffic to one Service of its
// namespace, as Gateway API policy attachment targets it: how callers pick
// its endpoints, when they send a failed request again, when they take a
// failing endpoint out, and how long an idle connection or request may
// last. Fields left out keep the proxy's defaults (docs/traffic.md).
//
// When several policies target one Service, the oldest (by creation time,
// then namespace/name) applies and the others are reported.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=trafficpolicy
// +kubebuilder:printcolumn:name="Target",type="string",JSONPath=".spec.targetRefs[0].name"
// +kubebuilder:printcolumn:name="Load Balancer",type="string",JSONPath=".spec.loadBalancer"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type TrafficPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TrafficPolicySpec `json:"spec"`
}

// TrafficPolicySpec describes a TrafficPolicy.
type TrafficPolicySpec struct {
	// TargetRefs names the Service the policy applies to: exactly one
	// entry, a Service of the policy's namespace.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1
	TargetRefs []TrafficTargetRef `json:"targetRefs"`
	// LoadBalancer is how callers pick an endpoint: PeakEWMA (the
	// default) or RoundRobin.
	LoadBalancer LoadBalancer `json:"loadBalancer,omitempty"`
	// IdleTimeout closes an opaque TCP stream with no bytes either way
	// for this long, and fails an HTTP request whose response (and
	// request) sent nothing for this long (504, or a retry). From 1s to
	// 24h; left out: 1h for TCP streams and HTTP requests, none for gRPC
	// requests, so that long-lived gRPC streams are not cut.
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`
	// Retry says which failed requests are sent again and how much
	// retrying callers may do.
	Retry *TrafficRetry `json:"retry,omitempty"`
	// OutlierDetection says when a failing endpoint is taken out of
	// balancing, and for how long.
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
}

// TrafficTargetRef names the target of a policy (Gateway API's
// LocalPolicyTargetReference).
type TrafficTargetRef struct {
	// Group is the target's API group: "" (Kubernetes core), the group of
	// Services.
	Group string `json:"group,omitempty"`
	// Kind is "Service".
	// +kubebuilder:validation:Enum=Service
	Kind string `json:"kind"`
	// Name is the Service's name, in the policy's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
}

// LoadBalancer is how callers pick an endpoint.
// +kubebuilder:validation:Enum=PeakEWMA;RoundRobin
type LoadBalancer string

// Load balancers.
const (
	// LoadBalancerPeakEWMA is the power of two choices over a peak-EWMA
	// latency estimate times requests in flight.
	LoadBalancerPeakEWMA LoadBalancer = "PeakEWMA"
	// LoadBalancerRoundRobin takes the endpoints in turn.
	LoadBalancerRoundRobin LoadBalancer = "RoundRobin"
)

// TrafficRetry says which failed requests are sent again.
type TrafficRetry struct {
	// Attempts bounds the attempts of one request, the first included:
	// 1 turns retries off. From 1 to 10; left out: 3.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	Attempts *int32 `json:"attempts,omitempty"`
	// Budget bounds how much retrying callers do for the service.
	Budget *RetryBudget `json:"budget,omitempty"`
	// RetryOn lists the answers that are retried; left out: HTTP 502,
	// 503 and 504 (idempotent requests) and gRPC UNAVAILABLE. A request
	// that failed before it was sent is always retried.
	RetryOn *RetryOn `json:"retryOn,omitempty"`
}

// RetryBudget bounds retries over a 10-second window to RetryPercent of
// the requests plus MinRetriesPerSecond.
type RetryBudget struct {
	// RetryPercent is the retries allowed per 100 requests, from 0 to
	// 100; left out: 20.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	RetryPercent *int32 `json:"retryPercent,omitempty"`
	// MinRetriesPerSecond is the retries allowed whatever the traffic,
	// for callers that send few requests, from 0 to 1000; left out: 10.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	MinRetriesPerSecond *int32 `json:"minRetriesPerSecond,omitempty"`
}

// RetryOn lists the answers after which a request is retried. An empty
// list retries on no answer of its kind.
type RetryOn struct {
	// HTTPStatuses (500 to 599) after which an idempotent request (GET,
	// HEAD, OPTIONS, TRACE, PUT, DELETE) is retried.
	// +kubebuilder:validation:items:Minimum=500
	// +kubebuilder:validation:items:Maximum=599
	HTTPStatuses []int32 `json:"httpStatuses,omitempty"`
	// GRPCStatuses are gRPC status names ("UNAVAILABLE",
	// "RESOURCE_EXHAUSTED") after which a gRPC request is retried,
	// whatever its method.
	// +kubebuilder:validation:items:Enum=CANCELLED;UNKNOWN;INVALID_ARGUMENT;DEADLINE_EXCEEDED;NOT_FOUND;ALREADY_EXISTS;PERMISSION_DENIED;RESOURCE_EXHAUSTED;FAILED_PRECONDITION;ABORTED;OUT_OF_RANGE;UNIMPLEMENTED;INTERNAL;UNAVAILABLE;DATA_LOSS;UNAUTHENTICATED
	GRPCStatuses []string `json:"grpcStatuses,omitempty"`
}

// OutlierDetection says when an endpoint is ejected: taken out of
// balancing for a while.
type OutlierDetection struct {
	// ConsecutiveFailures ejects an endpoint after this many failures in
	// a row, from 1 to 1000; 0 turns the rule off; left out: 5.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	ConsecutiveFailures *int32 `json:"consecutiveFailures,omitempty"`
	// FailurePercent ejects an endpoint whose failures over 10 seconds
	// are at least this share of its requests (once there were 20), from
	// 1 to 100; 0 turns the rule off; left out: 50.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	FailurePercent *int32 `json:"failurePercent,omitempty"`
	// BaseEjectionTime is how long a first ejection lasts; the N-th
	// lasts N times as long, at most 5 minutes or BaseEjectionTime if
	// longer. From 1s to 1h; left out: 30s.
	BaseEjectionTime *metav1.Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectedPercent caps the share of the service's endpoints out at
	// once, rounded down, from 1 to 100; whatever it says, one endpoint
	// always stays in. Left out: 50.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxEjectedPercent *int32 `json:"maxEjectedPercent,omitempty"`
}

// Bounds of a TrafficPolicy.
const (
	MinIdleTimeout      = time.Second
	MaxIdleTimeout      = 24 * time.Hour
	MaxRetryAttempts    = 10
	maxMinRetriesPerSec = 1000
	maxConsecutive      = 1000
	MinBaseEjectionTime = time.Second
	MaxBaseEjectionTime = time.Hour
)

// GRPCStatusCodes maps the gRPC status names RetryOn accepts to their
// codes (google.golang.org/grpc/codes). OK is not a failure.
var GRPCStatusCodes = map[string]uint32{
	"CANCELLED":           1,
	"UNKNOWN":             2,
	"INVALID_ARGUMENT":    3,
	"DEADLINE_EXCEEDED":   4,
	"NOT_FOUND":           5,
	"ALREADY_EXISTS":      6,
	"PERMISSION_DENIED":   7,
	"RESOURCE_EXHAUSTED":  8,
	"FAILED_PRECONDITION": 9,
	"ABORTED":             10,
	"OUT_OF_RANGE":        11,
	"UNIMPLEMENTED":       12,
	"INTERNAL":            13,
	"UNAVAILABLE":         14,
	"DATA_LOSS":           15,
	"UNAUTHENTICATED":     16,
}

// Default fills the namespace.
func (p *TrafficPolicy) Default() {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
}

// Target returns the name of the Service the policy targets, "" when it
// does not name exactly one.
func (p *TrafficPolicy) Target() string {
	if len(p.Spec.TargetRefs) != 1 {
		return ""
	}
	return p.Spec.TargetRefs[0].Name
}

// Validate reports every invalid field of p as FieldErrors.
func (p *TrafficPolicy) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindTrafficPolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	spec := &p.Spec
	switch n := len(spec.TargetRefs); {
	case n == 0:
		errs.add("spec.targetRefs", "is required: name the Service the policy applies to, as {kind: Service, name: <service>}")
	case n > 1:
		errs.add("spec.targetRefs", "names %d targets: a TrafficPolicy applies to one Service; write one policy per Service", n)
	}
	for i, ref := range spec.TargetRefs {
		path := fmt.Sprintf("spec.targetRefs[%d]", i)
		if ref.Group != "" {
			errs.add(path+".group", "%s is not supported: a TrafficPolicy targets a Service, whose group is \"\" (leave it out)", quote(ref.Group))
		}
		if ref.Kind != KindService {
			errs.add(path+".kind", "%s is not supported: a TrafficPolicy targets a Service (kind: Service)", quote(ref.Kind))
		}
		if ref.Name == "" {
			errs.add(path+".name", "is required: the name of a Service of the policy's namespace")
		} else if msg := dns1123Label(ref.Name); msg != "" {
			errs.add(path+".name", "%s", msg)
		}
	}
	switch spec.LoadBalancer {
	case "", LoadBalancerPeakEWMA, LoadBalancerRoundRobin:
	default:
		errs.add("spec.loadBalancer", "%s is not supported: use PeakEWMA or RoundRobin", quote(string(spec.LoadBalancer)))
	}
	if d := spec.IdleTimeout; d != nil && (d.Duration < MinIdleTimeout || d.Duration > MaxIdleTimeout) {
		errs.add("spec.idleTimeout", "%v is not within 1s..24h", d.Duration)
	}
	if r := spec.Retry; r != nil {
		validateTrafficRetry(&errs, r)
	}
	if o := spec.OutlierDetection; o != nil {
		validateOutlierDetection(&errs, o)
	}
	return errs.errOrNil()
}

func validateTrafficRetry(errs *FieldErrors, r *TrafficRetry) {
	if a := r.Attempts; a != nil && (*a < 1 || *a > MaxRetryAttempts) {
		errs.add("spec.retry.attempts", "%d is not within 1..%d (1 turns retries off)", *a, MaxRetryAttempts)
	}
	if b := r.Budget; b != nil {
		if v := b.RetryPercent; v != nil && (*v < 0 || *v > 100) {
			errs.add("spec.retry.budget.retryPercent", "%d is not within 0..100", *v)
		}
		if v := b.MinRetriesPerSecond; v != nil && (*v < 0 || *v > maxMinRetriesPerSec) {
			errs.add("spec.retry.budget.minRetriesPerSecond", "%d is not within 0..%d", *v, maxMinRetriesPerSec)
		}
	}
	on := r.RetryOn
	if on == nil {
		return
	}
	seen := make(map[int32]int, len(on.HTTPStatuses))
	for i, s := range on.HTTPStatuses {
		path := fmt.Sprintf("spec.retry.retryOn.httpStatuses[%d]", i)
		if s < 500 || s > 599 {
			errs.add(path, "%d is not within 500..599: only a server's failure is retried", s)
			continue
		}
		if j, dup := seen[s]; dup {
			errs.add(path, "duplicate status %d (also spec.retry.retryOn.httpStatuses[%d])", s, j)
			continue
		}
		seen[s] = i
	}
	seenCode := make(map[string]int, len(on.GRPCStatuses))
	for i, name := range on.GRPCStatuses {
		path := fmt.Sprintf("spec.retry.retryOn.grpcStatuses[%d]", i)
		if _, ok := GRPCStatusCodes[name]; !ok {
			errs.add(path, "%s is not a gRPC status that a failure has: use one of %s", quote(name), grpcStatusList)
			continue
		}
		if j, dup := seenCode[name]; dup {
			errs.add(path, "duplicate status %s (also spec.retry.retryOn.grpcStatuses[%d])", name, j)
			continue
		}
		seenCode[name] = i
	}
}

// grpcStatusList is the names of GRPCStatusCodes in code order, for
// messages.
var grpcStatusList = func() string {
	names := make([]string, 0, len(GRPCStatusCodes))
	for n := range GRPCStatusCodes {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return int(GRPCStatusCodes[a]) - int(GRPCStatusCodes[b]) })
	return strings.Join(names, ", ")
}()

func validateOutlierDetection(errs *FieldErrors, o *OutlierDetection) {
	if v := o.ConsecutiveFailures; v != nil && (*v < 0 || *v > maxConsecutive) {
		errs.add("spec.outlierDetection.consecutiveFailures", "%d is not within 0..%d (0 turns the rule off)", *v, maxConsecutive)
	}
	if v := o.FailurePercent; v != nil && (*v < 0 || *v > 100) {
		errs.add("spec.outlierDetection.failurePercent", "%d is not within 0..100 (0 turns the rule off)", *v)
	}
	if d := o.BaseEjectionTime; d != nil && (d.Duration < MinBaseEjectionTime || d.Duration > MaxBaseEjectionTime) {
		errs.add("spec.outlierDetection.baseEjectionTime", "%v is not within 1s..1h", d.Duration)
	}
	if v := o.MaxEjectedPercent; v != nil && (*v < 1 || *v > 100) {
		errs.add("spec.outlierDetection.maxEjectedPercent", "%d is not within 1..100", *v)
	}
}
