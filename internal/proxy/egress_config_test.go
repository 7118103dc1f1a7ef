package proxy

import (
	"strings"
	"testing"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// TestValidateConfigEgress checks that a configuration whose egress
// allow-list the proxy cannot apply as written is refused with reason
// egress, naming the field at fault.
func TestValidateConfigEgress(t *testing.T) {
	allowListed := func(rules ...*meshv1.EgressRule) func(*meshv1.ProxyConfig) {
		return func(c *meshv1.ProxyConfig) {
			c.Settings = &meshv1.Settings{Egress: meshv1.EgressMode_EGRESS_ALLOW_LISTED}
			c.Egress = &meshv1.EgressPolicy{Rules: rules}
		}
	}
	tests := []struct {
		name    string
		mutate  func(*meshv1.ProxyConfig)
		wantErr string
	}{
		{"good", allowListed(&meshv1.EgressRule{Source: "shop/p", Hosts: []string{"api.example.com", "*.example.org"}, Cidrs: []string{"203.0.113.0/24", "2001:db8::/32"}, Ports: []uint32{443}}), ""},
		{"none", allowListed(), ""},
		{"bad host", allowListed(&meshv1.EgressRule{Hosts: []string{"Bad Host"}}), "egress.rules[0].hosts[0]"},
		{"bad network", allowListed(&meshv1.EgressRule{Hosts: []string{"a.example.com"}}, &meshv1.EgressRule{Cidrs: []string{"10.0.0.1/8"}}), "egress.rules[1].cidrs[0]"},
		{"bad port", allowListed(&meshv1.EgressRule{Cidrs: []string{"10.0.0.0/8"}, Ports: []uint32{0}}), "egress.rules[0].ports[0]"},
		{"empty rule", allowListed(&meshv1.EgressRule{Source: "shop/p"}), "egress.rules[0]: no hosts and no cidrs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodConfig()
			tt.mutate(c)
			_, err := validateConfig(c, self)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if got := rejectReason(err); got != rejectEgress {
				t.Fatalf("reason %q, want %q", got, rejectEgress)
			}
		})
	}
}
