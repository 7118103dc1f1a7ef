package discovery

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// egressModel is a model in allow-listed mode with the EgressPolicy
// example of docs/traffic.md and the policies given.
func egressModel(t *testing.T, extra ...v1alpha1.EgressPolicy) *Model {
	t.Helper()
	res, err := localconfig.Load(filepath.Join("..", "localconfig", "testdata", "load", "egress"))
	if err != nil {
		t.Fatal(err)
	}
	res.EgressPolicies = append(res.EgressPolicies, extra...)
	m, err := New(Config{TrustDomain: td, Egress: meshv1.EgressMode_EGRESS_ALLOW_LISTED})
	if err != nil {
		t.Fatal(err)
	}
	m.SetResources(res)
	return m
}

func egressPolicy(ns, name string, selector map[string]string, spec v1alpha1.EgressPolicySpec) v1alpha1.EgressPolicy {
	if selector != nil {
		spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: selector}
	}
	p := v1alpha1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	p.Default()
	return p
}

func TestEgressCompiledPerWorkload(t *testing.T) {
	m := egressModel(t,
		// Unsorted, with duplicates in other spellings: compiled sorted
		// and deduplicated.
		egressPolicy("shop", "extra", map[string]string{"app": "checkout"}, v1alpha1.EgressPolicySpec{
			Hosts: []string{"b.example.com", "A.example.com", "a.example.com."},
			CIDRs: []string{"198.51.100.9", "198.51.100.9/32", "2001:DB8::/32"},
			Ports: []int32{8443, 443},
		}),
		// Another namespace's policy selects no workload of shop.
		egressPolicy("billing", "other", nil, v1alpha1.EgressPolicySpec{Hosts: []string{"billing.example.com"}}),
	)
	mustRegister(t, m, Registration{ID: wid("shop", "checkout"), Name: "checkout-1", Labels: map[string]string{"app": "checkout"}, TunnelAddress: "10.0.0.3:15008"})
	mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-1", Labels: map[string]string{"app": "web"}, TunnelAddress: "10.0.0.4:15008"})

	mirrors := &meshv1.EgressRule{Source: "rampart-system/package-mirrors", Cidrs: []string{"2001:db8:5::/48", "203.0.113.0/24"}, Ports: []uint32{80, 443}}
	tests := []struct {
		id       string
		workload string
		want     *meshv1.EgressPolicy
	}{
		{"checkout", "checkout-1", &meshv1.EgressPolicy{Rules: []*meshv1.EgressRule{
			mirrors,
			{Source: "shop/extra", Hosts: []string{"a.example.com", "b.example.com"}, Cidrs: []string{"198.51.100.9/32", "2001:db8::/32"}, Ports: []uint32{443, 8443}},
			{Source: "shop/payments", Hosts: []string{"*.paypal.com", "api.stripe.com"}, Ports: []uint32{443}},
		}}},
		// Only the mesh-wide policy selects web.
		{"web", "web-1", &meshv1.EgressPolicy{Rules: []*meshv1.EgressRule{mirrors}}},
		// Not a workload the model knows: no rules, which admits nothing.
		{"web", "web-9", nil},
	}
	for _, tt := range tests {
		t.Run(tt.workload, func(t *testing.T) {
			cfg := m.TransparentConfigFor(wid("shop", tt.id), tt.workload)
			if diff := cmp.Diff(tt.want, cfg.GetEgress(), cmpOpts...); diff != "" {
				t.Errorf("egress (-want +got):\n%s", diff)
			}
			if got := cfg.GetSettings().GetEgress(); got != meshv1.EgressMode_EGRESS_ALLOW_LISTED {
				t.Errorf("egress mode = %v, want allow-listed", got)
			}
		})
	}
	// A proxy naming its upstreams has no interception: no egress list.
	if got := m.ConfigFor(wid("shop", "checkout"), "checkout-1", nil).GetEgress(); got != nil {
		t.Errorf("egress of an explicit proxy = %v, want none", got)
	}
}

func TestEgressOnlyInAllowListedMode(t *testing.T) {
	res, err := localconfig.Load(filepath.Join("..", "localconfig", "testdata", "load", "egress"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []meshv1.EgressMode{meshv1.EgressMode_EGRESS_ALLOW_ANY, meshv1.EgressMode_EGRESS_MESH_ONLY} {
		m, err := New(Config{TrustDomain: td, Egress: mode})
		if err != nil {
			t.Fatal(err)
		}
		m.SetResources(res)
		mustRegister(t, m, Registration{ID: wid("shop", "checkout"), Name: "checkout-1", Labels: map[string]string{"app": "checkout"}, TunnelAddress: "10.0.0.3:15008"})
		if got := m.TransparentConfigFor(wid("shop", "checkout"), "checkout-1").GetEgress(); got != nil {
			t.Errorf("mode %v: egress list %v sent, want none", mode, got)
		}
	}
}

func TestEgressRulesBounded(t *testing.T) {
	var extra []v1alpha1.EgressPolicy
	for i := range MaxEgressRules + 5 {
		extra = append(extra, egressPolicy("shop", fmt.Sprintf("p%05d", i), nil, v1alpha1.EgressPolicySpec{Hosts: []string{"example.com"}}))
	}
	m := egressModel(t, extra...)
	mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-1", Labels: map[string]string{"app": "web"}, TunnelAddress: "10.0.0.4:15008"})
	rules := m.TransparentConfigFor(wid("shop", "web"), "web-1").GetEgress().GetRules()
	if len(rules) != MaxEgressRules {
		t.Fatalf("%d rules, want the limit %d", len(rules), MaxEgressRules)
	}
	// In namespace/name order: the mesh-wide policy comes first, the
	// last policies of shop are left out.
	if first, last := rules[0].GetSource(), rules[len(rules)-1].GetSource(); first != "rampart-system/package-mirrors" || last != fmt.Sprintf("shop/p%05d", MaxEgressRules-2) {
		t.Errorf("kept %s .. %s", first, last)
	}
}
