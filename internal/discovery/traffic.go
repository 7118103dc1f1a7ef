package discovery

import (
	"cmp"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// trafficLocked returns the traffic policy of the service k, compiled from
// the TrafficPolicy that targets it, or nil when none does (the proxies'
// defaults). When several target it, the oldest applies (by creation time,
// then namespace/name, as HTTPRoutes take precedence) and the others are
// logged once until the resources change.
func (m *Model) trafficLocked(k serviceKey) *meshv1.TrafficPolicy {
	var winner *v1alpha1.TrafficPolicy
	var losers []*v1alpha1.TrafficPolicy
	for i := range m.resources.TrafficPolicies {
		p := &m.resources.TrafficPolicies[i]
		if namespaceOf(p.Namespace) != k.namespace || p.Target() != k.name {
			continue
		}
		switch {
		case winner == nil:
			winner = p
		case olderPolicy(p, winner):
			losers = append(losers, winner)
			winner = p
		default:
			losers = append(losers, p)
		}
	}
	if winner == nil {
		return nil
	}
	for _, p := range losers {
		m.warnOnceLocked("traffic-conflict/"+k.namespace+"/"+p.Name,
			"TrafficPolicy ignored: an older TrafficPolicy targets the same service",
			"namespace", k.namespace, "service", k.name, "policy", p.Name, "applies", winner.Name)
	}
	if err := winner.Validate(); err != nil {
		// localconfig validates what it loads: this is a bug or a caller
		// that skipped it. The proxies refuse an invalid policy, so send
		// none: the defaults apply, and the problem is logged.
		m.warnOnceLocked("bad-traffic/"+k.namespace+"/"+winner.Name,
			"TrafficPolicy is invalid; the proxies' defaults apply to its service until it is fixed",
			"namespace", k.namespace, "policy", winner.Name, "error", err)
		return nil
	}
	return TrafficToProto(&winner.Spec)
}

// olderPolicy reports whether a takes precedence over b: created earlier,
// then first by namespace and name.
func olderPolicy(a, b *v1alpha1.TrafficPolicy) bool {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c < 0
	}
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name)) < 0
}

// TrafficToProto compiles a valid TrafficPolicySpec into the control-plane
// message; what the spec leaves out stays absent, so that the proxy's
// defaults apply.
func TrafficToProto(spec *v1alpha1.TrafficPolicySpec) *meshv1.TrafficPolicy {
	out := &meshv1.TrafficPolicy{}
	switch spec.LoadBalancer {
	case v1alpha1.LoadBalancerPeakEWMA:
		out.LoadBalancer = meshv1.LoadBalancer_LOAD_BALANCER_PEAK_EWMA
	case v1alpha1.LoadBalancerRoundRobin:
		out.LoadBalancer = meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN
	}
	if d := spec.IdleTimeout; d != nil {
		out.IdleTimeout = durationpb.New(d.Duration)
	}
	if r := spec.Retry; r != nil {
		mr := &meshv1.TrafficPolicy_Retry{}
		if r.Attempts != nil {
			mr.Attempts = uint32(*r.Attempts)
		}
		if b := r.Budget; b != nil {
			mr.BudgetPercent = u32(b.RetryPercent)
			mr.BudgetMinPerSecond = u32(b.MinRetriesPerSecond)
		}
		if on := r.RetryOn; on != nil {
			mo := &meshv1.TrafficPolicy_RetryOn{}
			for _, s := range on.HTTPStatuses {
				mo.HttpStatuses = append(mo.HttpStatuses, uint32(s))
			}
			for _, name := range on.GRPCStatuses {
				mo.GrpcCodes = append(mo.GrpcCodes, v1alpha1.GRPCStatusCodes[name])
			}
			mr.RetryOn = mo
		}
		out.Retry = mr
	}
	if o := spec.OutlierDetection; o != nil {
		mo := &meshv1.TrafficPolicy_OutlierDetection{
			ConsecutiveFailures: u32(o.ConsecutiveFailures),
			FailurePercent:      u32(o.FailurePercent),
		}
		if d := o.BaseEjectionTime; d != nil {
			mo.BaseEjectionTime = durationpb.New(d.Duration)
		}
		if v := u32(o.MaxEjectedPercent); v != nil {
			mo.MaxEjectedPercent = *v
		}
		out.OutlierDetection = mo
	}
	return out
}

// u32 converts an optional, validated non-negative field.
func u32(v *int32) *uint32 {
	if v == nil {
		return nil
	}
	u := uint32(*v)
	return &u
}
