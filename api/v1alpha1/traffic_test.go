package v1alpha1

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestTrafficPolicyValidate(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	valid := func() *TrafficPolicy {
		return &TrafficPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindTrafficPolicy},
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: TrafficPolicySpec{
				TargetRefs:   []TrafficTargetRef{{Kind: "Service", Name: "web"}},
				LoadBalancer: LoadBalancerRoundRobin,
				IdleTimeout:  dur(5 * time.Minute),
				Retry: &TrafficRetry{
					Attempts: i32(2),
					Budget:   &RetryBudget{RetryPercent: i32(0), MinRetriesPerSecond: i32(5)},
					RetryOn:  &RetryOn{HTTPStatuses: []int32{503}, GRPCStatuses: []string{"UNAVAILABLE", "RESOURCE_EXHAUSTED"}},
				},
				OutlierDetection: &OutlierDetection{
					ConsecutiveFailures: i32(0), FailurePercent: i32(30),
					BaseEjectionTime: dur(10 * time.Second), MaxEjectedPercent: i32(100),
				},
			},
		}
	}
	tests := []struct {
		name   string
		modify func(p *TrafficPolicy)
		want   []string // paths
	}{
		{"valid", func(*TrafficPolicy) {}, nil},
		{"minimal", func(p *TrafficPolicy) { p.Spec = TrafficPolicySpec{TargetRefs: p.Spec.TargetRefs} }, nil},
		{"no target", func(p *TrafficPolicy) { p.Spec.TargetRefs = nil }, []string{"spec.targetRefs"}},
		{"two targets", func(p *TrafficPolicy) {
			p.Spec.TargetRefs = append(p.Spec.TargetRefs, TrafficTargetRef{Kind: "Service", Name: "api"})
		}, []string{"spec.targetRefs"}},
		{"bad target", func(p *TrafficPolicy) {
			p.Spec.TargetRefs[0] = TrafficTargetRef{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "Web"}
		}, []string{"spec.targetRefs[0].group", "spec.targetRefs[0].kind", "spec.targetRefs[0].name"}},
		{"bad balancer", func(p *TrafficPolicy) { p.Spec.LoadBalancer = "LeastRequest" }, []string{"spec.loadBalancer"}},
		{"idle too short", func(p *TrafficPolicy) { p.Spec.IdleTimeout = dur(500 * time.Millisecond) }, []string{"spec.idleTimeout"}},
		{"idle too long", func(p *TrafficPolicy) { p.Spec.IdleTimeout = dur(25 * time.Hour) }, []string{"spec.idleTimeout"}},
		{"retry out of range", func(p *TrafficPolicy) {
			p.Spec.Retry.Attempts = i32(0)
			p.Spec.Retry.Budget = &RetryBudget{RetryPercent: i32(101), MinRetriesPerSecond: i32(-1)}
			p.Spec.Retry.RetryOn = &RetryOn{HTTPStatuses: []int32{404, 503, 503}, GRPCStatuses: []string{"OK", "Unavailable", "INTERNAL", "INTERNAL"}}
		}, []string{
			"spec.retry.attempts", "spec.retry.budget.retryPercent", "spec.retry.budget.minRetriesPerSecond",
			"spec.retry.retryOn.httpStatuses[0]", "spec.retry.retryOn.httpStatuses[2]",
			"spec.retry.retryOn.grpcStatuses[0]", "spec.retry.retryOn.grpcStatuses[1]", "spec.retry.retryOn.grpcStatuses[3]",
		}},
		{"outlier out of range", func(p *TrafficPolicy) {
			p.Spec.OutlierDetection = &OutlierDetection{
				ConsecutiveFailures: i32(-1), FailurePercent: i32(101),
				BaseEjectionTime: dur(2 * time.Hour), MaxEjectedPercent: i32(0),
			}
		}, []string{
			"spec.outlierDetection.consecutiveFailures", "spec.outlierDetection.failurePercent",
			"spec.outlierDetection.baseEjectionTime", "spec.outlierDetection.maxEjectedPercent",
		}},
		{"wrong kind", func(p *TrafficPolicy) { p.Kind = "Service" }, []string{"kind"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.modify(p)
			err := p.Validate()
			var fes FieldErrors
			if err != nil && !errors.As(err, &fes) {
				t.Fatalf("Validate: %v, want FieldErrors", err)
			}
			var got []string
			for _, fe := range fes {
				got = append(got, fe.Path)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("invalid fields (-want +got):\n%s\n%v", diff, err)
			}
		})
	}
}

func TestTrafficPolicyDefault(t *testing.T) {
	p := &TrafficPolicy{Spec: TrafficPolicySpec{TargetRefs: []TrafficTargetRef{{Kind: "Service", Name: "web"}}}}
	p.Default()
	if p.Namespace != DefaultNamespace || p.Target() != "web" {
		t.Errorf("after Default: namespace %q, target %q", p.Namespace, p.Target())
	}
}
