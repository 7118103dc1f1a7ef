package localconfig

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// TestLoadEgress loads the EgressPolicy example of docs/traffic.md
// (testdata/load/egress): hosts and networks in canonical form, sorted by
// namespace and name.
func TestLoadEgress(t *testing.T) {
	res, err := Load(filepath.Join("testdata", "load", "egress"))
	if err != nil {
		t.Fatal(err)
	}
	want := []v1alpha1.EgressPolicy{
		{Spec: v1alpha1.EgressPolicySpec{
			CIDRs: []string{"203.0.113.0/24", "2001:db8:5::/48"},
			Ports: []int32{80, 443},
		}},
		{Spec: v1alpha1.EgressPolicySpec{
			Selector: &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "checkout"}},
			Hosts:    []string{"api.stripe.com", "*.paypal.com"},
			Ports:    []int32{443},
		}},
	}
	want[0].APIVersion, want[0].Kind, want[0].Name, want[0].Namespace = v1alpha1.GroupVersion, v1alpha1.KindEgressPolicy, "package-mirrors", "rampart-system"
	want[1].APIVersion, want[1].Kind, want[1].Name, want[1].Namespace = v1alpha1.GroupVersion, v1alpha1.KindEgressPolicy, "payments", "shop"
	if diff := cmp.Diff(want, res.EgressPolicies); diff != "" {
		t.Errorf("EgressPolicies (-want +got):\n%s", diff)
	}
}

// TestLoadEgressProblems checks that every bad field of an EgressPolicy is
// reported with its file and line, and that nothing of the directory loads.
func TestLoadEgressProblems(t *testing.T) {
	res, err := Load(filepath.Join("testdata", "load", "egress-docs-broken"))
	if res != nil {
		t.Errorf("Load returned resources with an error")
	}
	want := []string{
		`egress.yaml:8: spec.hosts[0]: "198.51.100.7" is an IP address: list addresses and networks in cidrs`,
		`egress.yaml:9: spec.hosts[1]: invalid host "api.*.com": a wildcard may only be the whole first label, as in *.example.com`,
		`egress.yaml:11: spec.cidrs[0]: invalid network "10.1.2.3/16": it has bits set past its length; did you mean 10.1.0.0/16?`,
		`egress.yaml:12: spec.ports[0]: must be between 1 and 65535`,
	}
	if diff := cmp.Diff(want, problems(t, err)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}
