package egress

import (
	"net/netip"
	"strings"
	"testing"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func testPolicy(t *testing.T) *Policy {
	t.Helper()
	p, err := Compile(&meshv1.EgressPolicy{Rules: []*meshv1.EgressRule{
		{Source: "shop/payments", Hosts: []string{"api.stripe.com", "*.paypal.com"}, Ports: []uint32{443}},
		{Source: "shop/deep", Hosts: []string{"*.eu.paypal.com"}, Ports: []uint32{8443}},
		{Source: "rampart-system/mirrors", Cidrs: []string{"203.0.113.0/24", "2001:db8:5::/48"}, Ports: []uint32{80, 443}},
		{Source: "rampart-system/wide", Cidrs: []string{"203.0.0.0/16"}, Ports: []uint32{443}},
		{Source: "shop/any-port", Hosts: []string{"ntp.example.org"}, Cidrs: []string{"198.51.100.7/32"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMatchAddr(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		dst   string
		label string
		ok    bool
	}{
		{"203.0.113.9:443", "203.0.113.0/24", true}, // the longest network
		{"203.0.113.9:80", "203.0.113.0/24", true},
		{"203.0.7.1:443", "203.0.0.0/16", true},
		{"203.0.7.1:80", "", false}, // the /16 admits 443 only
		{"203.0.113.9:22", "", false},
		{"[2001:db8:5::1]:443", "2001:db8:5::/48", true},
		{"[2001:db8:6::1]:443", "", false},
		{"[::ffff:203.0.113.9]:443", "203.0.113.0/24", true}, // IPv4-mapped is IPv4
		{"198.51.100.7:123", "198.51.100.7/32", true},        // any port
		{"198.51.100.8:123", "", false},
	}
	for _, tt := range tests {
		label, ok := p.MatchAddr(netip.MustParseAddrPort(tt.dst))
		if label != tt.label || ok != tt.ok {
			t.Errorf("MatchAddr(%s) = %q, %v; want %q, %v", tt.dst, label, ok, tt.label, tt.ok)
		}
	}
	var none *Policy
	if _, ok := none.MatchAddr(netip.MustParseAddrPort("203.0.113.9:443")); ok {
		t.Error("a nil policy admitted an address")
	}
}

func TestMatchHost(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		name  string
		port  uint16
		label string
		ok    bool
	}{
		{"api.stripe.com", 443, "api.stripe.com", true},
		{"api.stripe.com", 80, "", false},
		{"stripe.com", 443, "", false},
		{"evilapi.stripe.com", 443, "", false},
		{"www.paypal.com", 443, "*.paypal.com", true},
		{"a.b.paypal.com", 443, "*.paypal.com", true}, // any depth
		{"paypal.com", 443, "", false},                // not the apex
		{"x.eu.paypal.com", 8443, "*.eu.paypal.com", true},
		{"x.eu.paypal.com", 443, "*.paypal.com", true},
		{"paypal.com.evil.example", 443, "", false},
		{"notpaypal.com", 443, "", false},
		{"ntp.example.org", 123, "ntp.example.org", true},
		{"API.STRIPE.COM", 443, "", false}, // callers pass canonical names
		{"", 443, "", false},
		{"*.paypal.com", 443, "", false},
	}
	for _, tt := range tests {
		label, ok := p.MatchHost(tt.name, tt.port)
		if label != tt.label || ok != tt.ok {
			t.Errorf("MatchHost(%q, %d) = %q, %v; want %q, %v", tt.name, tt.port, label, ok, tt.label, tt.ok)
		}
	}
	for port, want := range map[uint16]bool{443: true, 8443: true, 123: true} {
		if got := p.HostsOn(port); got != want {
			t.Errorf("HostsOn(%d) = %v, want %v", port, got, want)
		}
	}
	cidrOnly, _ := Compile(&meshv1.EgressPolicy{Rules: []*meshv1.EgressRule{{Cidrs: []string{"10.0.0.0/8"}}}})
	if cidrOnly.HostsOn(443) {
		t.Error("HostsOn without host rules")
	}
}

func TestCompileRefuses(t *testing.T) {
	rule := func(mut func(*meshv1.EgressRule)) *meshv1.EgressPolicy {
		r := &meshv1.EgressRule{Source: "ns/p", Hosts: []string{"example.com"}}
		mut(r)
		return &meshv1.EgressPolicy{Rules: []*meshv1.EgressRule{{Hosts: []string{"ok.example.com"}}, r}}
	}
	many := &meshv1.EgressPolicy{}
	for range MaxRules + 1 {
		many.Rules = append(many.Rules, &meshv1.EgressRule{Hosts: []string{"example.com"}})
	}
	tests := []struct {
		name string
		in   *meshv1.EgressPolicy
		want string
	}{
		{"empty rule", rule(func(r *meshv1.EgressRule) { r.Hosts = nil }), "egress.rules[1]: no hosts and no cidrs"},
		{"upper case host", rule(func(r *meshv1.EgressRule) { r.Hosts = []string{"Example.com"} }), "egress.rules[1].hosts[0]:"},
		{"IP as host", rule(func(r *meshv1.EgressRule) { r.Hosts = []string{"203.0.113.1"} }), "egress.rules[1].hosts[0]:"},
		{"inner wildcard", rule(func(r *meshv1.EgressRule) { r.Hosts = []string{"a.*.com"} }), "egress.rules[1].hosts[0]:"},
		{"top-level wildcard", rule(func(r *meshv1.EgressRule) { r.Hosts = []string{"*.com"} }), "a wildcard must leave at least two labels"},
		{"host bits", rule(func(r *meshv1.EgressRule) { r.Cidrs = []string{"10.0.0.1/8"} }), "egress.rules[1].cidrs[0]:"},
		{"mapped", rule(func(r *meshv1.EgressRule) { r.Cidrs = []string{"::ffff:10.0.0.0/104"} }), "egress.rules[1].cidrs[0]:"},
		{"not a network", rule(func(r *meshv1.EgressRule) { r.Cidrs = []string{"10.0.0.1"} }), "egress.rules[1].cidrs[0]:"},
		{"port 0", rule(func(r *meshv1.EgressRule) { r.Ports = []uint32{443, 0} }), "egress.rules[1].ports[1]: port 0 out of range"},
		{"port too big", rule(func(r *meshv1.EgressRule) { r.Ports = []uint32{65536} }), "egress.rules[1].ports[0]"},
		{"too many rules", many, "egress.rules: 1025 rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if p, err := Compile(nil); err != nil || !p.Empty() {
		t.Errorf("Compile(nil) = %v, %v; want an empty policy", p, err)
	}
}

func TestLabels(t *testing.T) {
	l := Labels{Max: 2}
	for _, tt := range []struct{ in, want string }{
		{"a", "a"}, {"b", "b"}, {"c", OtherDestination}, {"a", "a"}, {"d", OtherDestination},
	} {
		if got := l.Of(tt.in); got != tt.want {
			t.Errorf("Of(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
