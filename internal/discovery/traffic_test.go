package discovery

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func ptr[T any](v T) *T { return &v }

// The TrafficPolicies of docs/traffic.md's example (localconfig's
// testdata/load/traffic) reach every configuration carrying their
// service, and a service without one carries none.
func TestTrafficPolicyExample(t *testing.T) {
	res, err := localconfig.Load("../localconfig/testdata/load/traffic")
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(t)
	m.SetResources(res)
	cfg := m.TransparentConfigFor(wid("shop", "web"), "web-1")
	got := map[string]*meshv1.TrafficPolicy{}
	for _, s := range cfg.GetServices() {
		got[s.GetName()] = s.GetTraffic()
	}
	want := map[string]*meshv1.TrafficPolicy{
		"checkout": {
			LoadBalancer: meshv1.LoadBalancer_LOAD_BALANCER_PEAK_EWMA,
			IdleTimeout:  durationpb.New(30 * time.Second),
			Retry: &meshv1.TrafficPolicy_Retry{
				Attempts: 2, BudgetPercent: ptr[uint32](10), BudgetMinPerSecond: ptr[uint32](5),
				RetryOn: &meshv1.TrafficPolicy_RetryOn{HttpStatuses: []uint32{503}, GrpcCodes: []uint32{14, 8}},
			},
			OutlierDetection: &meshv1.TrafficPolicy_OutlierDetection{
				ConsecutiveFailures: ptr[uint32](3), FailurePercent: ptr[uint32](30),
				BaseEjectionTime: durationpb.New(10 * time.Second), MaxEjectedPercent: 34,
			},
		},
		"cache": {
			LoadBalancer: meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN,
			IdleTimeout:  durationpb.New(10 * time.Minute),
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("traffic policies (-want +got):\n%s", diff)
	}
}

// Of two policies targeting one service, the oldest applies and the other
// is logged; a tie on creation time goes to the first by name.
func TestTrafficPolicyConflict(t *testing.T) {
	var logs bytes.Buffer
	m, err := New(Config{TrustDomain: td, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	svc := v1alpha1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec:       v1alpha1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []v1alpha1.ServicePort{{Port: 80, Protocol: "HTTP"}}},
	}
	policy := func(name string, created time.Time, lb v1alpha1.LoadBalancer) v1alpha1.TrafficPolicy {
		return v1alpha1.TrafficPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", CreationTimestamp: metav1.NewTime(created)},
			Spec:       v1alpha1.TrafficPolicySpec{TargetRefs: []v1alpha1.TrafficTargetRef{{Kind: "Service", Name: "web"}}, LoadBalancer: lb},
		}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		policies []v1alpha1.TrafficPolicy
		want     meshv1.LoadBalancer
		ignored  string
	}{
		{"older wins", []v1alpha1.TrafficPolicy{
			policy("a-new", t0.Add(time.Hour), v1alpha1.LoadBalancerPeakEWMA),
			policy("z-old", t0, v1alpha1.LoadBalancerRoundRobin),
		}, meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN, "a-new"},
		{"tie by name", []v1alpha1.TrafficPolicy{
			policy("b", t0, v1alpha1.LoadBalancerPeakEWMA),
			policy("a", t0, v1alpha1.LoadBalancerRoundRobin),
		}, meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			m.SetResources(&localconfig.Resources{Services: []v1alpha1.Service{svc}, TrafficPolicies: tt.policies})
			s := m.ConfigFor(wid("shop", "client"), "c", []string{"web"}).GetServices()[0]
			if got := s.GetTraffic().GetLoadBalancer(); got != tt.want {
				t.Errorf("load balancer %v, want %v", got, tt.want)
			}
			if !strings.Contains(logs.String(), "policy="+tt.ignored) {
				t.Errorf("log does not report the ignored policy %s:\n%s", tt.ignored, logs.String())
			}
		})
	}
}

// A policy that does not validate (a caller that skipped localconfig) is
// not sent: the proxies would refuse the whole configuration.
func TestTrafficPolicyInvalidNotSent(t *testing.T) {
	m := newModel(t)
	m.SetResources(&localconfig.Resources{
		Services: []v1alpha1.Service{{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec:       v1alpha1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []v1alpha1.ServicePort{{Port: 80}}},
		}},
		TrafficPolicies: []v1alpha1.TrafficPolicy{{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: v1alpha1.TrafficPolicySpec{
				TargetRefs:  []v1alpha1.TrafficTargetRef{{Kind: "Service", Name: "web"}},
				IdleTimeout: &metav1.Duration{Duration: time.Millisecond},
			},
		}},
	})
	if tp := m.ConfigFor(wid("shop", "client"), "c", []string{"web"}).GetServices()[0].GetTraffic(); tp != nil {
		t.Errorf("invalid policy sent: %v", tp)
	}
}
