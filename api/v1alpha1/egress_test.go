package v1alpha1

import (
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func validEgressPolicy() *EgressPolicy {
	return &EgressPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindEgressPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop"},
		Spec: EgressPolicySpec{
			Selector: &WorkloadSelector{MatchLabels: map[string]string{"app": "checkout"}},
			Hosts:    []string{"api.stripe.com", "*.paypal.com"},
			CIDRs:    []string{"203.0.113.0/24", "2001:db8::/32"},
			Ports:    []int32{443},
		},
	}
}

func TestEgressPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*EgressPolicy)
		want   FieldErrors
	}{
		{name: "valid", mutate: func(*EgressPolicy) {}},
		{name: "hosts only, any port", mutate: func(p *EgressPolicy) { p.Spec.CIDRs, p.Spec.Ports, p.Spec.Selector = nil, nil, nil }},
		{name: "single addresses", mutate: func(p *EgressPolicy) { p.Spec.CIDRs = []string{"198.51.100.7", "2001:db8::1"} }},
		{name: "upper case and trailing dot", mutate: func(p *EgressPolicy) { p.Spec.Hosts = []string{"API.Example.COM."} }},
		{name: "nothing listed", mutate: func(p *EgressPolicy) { p.Spec.Hosts, p.Spec.CIDRs = nil, nil },
			want: FieldErrors{{Path: "spec", Msg: "list at least one destination"}}},
		{name: "IP among hosts", mutate: func(p *EgressPolicy) { p.Spec.Hosts = []string{"203.0.113.9", "[2001:db8::1]"} },
			want: FieldErrors{{Path: "spec.hosts[0]", Msg: `"203.0.113.9" is an IP address: list addresses and networks in cidrs`},
				{Path: "spec.hosts[1]", Msg: `"[2001:db8::1]" is an IP address`}}},
		{name: "bad hosts", mutate: func(p *EgressPolicy) {
			p.Spec.Hosts = []string{"", "a.*.example.com", "*", "*.com", "bad_name.example.com", "example.123", "api.example.com", "API.example.com."}
		}, want: FieldErrors{
			{Path: "spec.hosts[0]", Msg: "must not be empty"},
			{Path: "spec.hosts[1]", Msg: "invalid host \"a.*.example.com\": a wildcard may only be the whole first label"},
			{Path: "spec.hosts[2]", Msg: "invalid host \"*\": a wildcard may only be"},
			{Path: "spec.hosts[3]", Msg: "invalid host \"*.com\": a wildcard must leave at least two labels"},
			{Path: "spec.hosts[4]", Msg: "invalid host \"bad_name.example.com\": want a DNS name"},
			{Path: "spec.hosts[5]", Msg: "invalid host \"example.123\": its last label is a number"},
			{Path: "spec.hosts[7]", Msg: "duplicate host \"API.example.com.\" (also spec.hosts[6])"},
		}},
		{name: "bad cidrs", mutate: func(p *EgressPolicy) {
			p.Spec.CIDRs = []string{"10.0.0.1/8", "example.com", "fe80::/10%eth0", "::ffff:10.0.0.0/104", "10.0.0.0/33", "10.0.0.0/8", "10.0.0.0/8"}
		}, want: FieldErrors{
			{Path: "spec.cidrs[0]", Msg: "invalid network \"10.0.0.1/8\": it has bits set past its length; did you mean 10.0.0.0/8?"},
			{Path: "spec.cidrs[1]", Msg: "invalid network \"example.com\": want a CIDR"},
			{Path: "spec.cidrs[2]", Msg: "invalid network"},
			{Path: "spec.cidrs[3]", Msg: "invalid network \"::ffff:10.0.0.0/104\": write IPv4-mapped networks as IPv4, such as 10.0.0.0/8"},
			{Path: "spec.cidrs[4]", Msg: "invalid network \"10.0.0.0/33\""},
			{Path: "spec.cidrs[6]", Msg: "duplicate network \"10.0.0.0/8\" (also spec.cidrs[5])"},
		}},
		{name: "bad ports", mutate: func(p *EgressPolicy) { p.Spec.Ports = []int32{0, 443, 443, 70000} },
			want: FieldErrors{
				{Path: "spec.ports[0]", Msg: "must be between 1 and 65535"},
				{Path: "spec.ports[2]", Msg: "duplicate port 443 (also spec.ports[1])"},
				{Path: "spec.ports[3]", Msg: "must be between 1 and 65535"},
			}},
		{name: "too many hosts", mutate: func(p *EgressPolicy) {
			p.Spec.Hosts = nil
			for i := range MaxEgressHosts + 1 {
				p.Spec.Hosts = append(p.Spec.Hosts, "h"+strconv.Itoa(i)+".example.com")
			}
		}, want: FieldErrors{{Path: "spec.hosts", Msg: "has 257 entries, more than the limit of 256"}}},
		{name: "bad selector and kind", mutate: func(p *EgressPolicy) {
			p.Kind = "Egress"
			p.Spec.Selector = &WorkloadSelector{MatchLabels: map[string]string{"app": "not valid"}}
		}, want: FieldErrors{{Path: "kind", Msg: `must be "EgressPolicy"`}, {Path: "spec.selector.matchLabels[app]", Msg: "invalid label value"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validEgressPolicy()
			tt.mutate(p)
			err := p.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			checkErrors(t, err, tt.want)
		})
	}
}

func TestEgressPolicyDefault(t *testing.T) {
	p := &EgressPolicy{Spec: EgressPolicySpec{
		Hosts: []string{"API.Example.COM.", "*.Example.org", "203.0.113.1"},
		CIDRs: []string{"2001:DB8::/32", "198.51.100.7", "2001:db8::1", "10.0.0.1/8"},
	}}
	p.Default()
	want := EgressPolicySpec{
		// Entries that do not parse stay as written, for Validate.
		Hosts: []string{"api.example.com", "*.example.org", "203.0.113.1"},
		CIDRs: []string{"2001:db8::/32", "198.51.100.7/32", "2001:db8::1/128", "10.0.0.1/8"},
	}
	if diff := cmp.Diff(want, p.Spec); diff != "" {
		t.Errorf("Default (-want +got):\n%s", diff)
	}
	if p.Namespace != DefaultNamespace {
		t.Errorf("namespace = %q, want %q", p.Namespace, DefaultNamespace)
	}
}
