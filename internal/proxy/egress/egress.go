// Package egress decides which connections to destinations outside the
// mesh a transparent proxy passes through in allow-listed mode: it
// compiles the configuration's egress rules (hosts with "*." wildcards,
// IPv4 and IPv6 networks, ports), reads the destination name the app
// sends first (TLS server name, HTTP/1 Host, HTTP/2 :authority), and
// checks that the original destination address is one that name resolves
// to, through a bounded cache over an injectable resolver. It also bounds
// the destination labels of the egress metrics.
//
// docs/traffic.md ("Egress") describes the behaviour and what it does not
// cover. It must not depend on Kubernetes packages, the controller or
// api/; the control-plane protocol is its only input.
package egress

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// Bounds of a configuration's egress rules; a configuration past them is
// refused. The controller sends at most MaxRules rules.
const (
	MaxRules   = 1024
	MaxEntries = 512 // hosts and CIDRs of one rule
	MaxPorts   = 64  // ports of one rule
)

// Policy is a compiled egress allow-list. The zero value and nil admit
// nothing. It is immutable and safe for concurrent use.
type Policy struct {
	exact map[string][]portsOf // by host name
	wild  map[string][]portsOf // by the suffix after "*", such as ".example.com"
	cidrs []cidrRule           // longest prefix first
	// hostPorts are the ports some host rule admits; anyPort is set when
	// one admits every port.
	hostPorts map[uint16]bool
	anyPort   bool
}

// portsOf is the ports a pattern admits, from one rule.
type portsOf struct {
	pattern string
	ports   []uint16 // sorted; empty for any
}

func (p portsOf) admits(port uint16) bool {
	if len(p.ports) == 0 {
		return true
	}
	_, ok := slices.BinarySearch(p.ports, port)
	return ok
}

type cidrRule struct {
	prefix netip.Prefix
	label  string
	ports  portsOf
}

// Compile checks an egress policy from the controller and compiles it. A
// nil policy compiles to one that admits nothing. Errors name the field at
// fault, as "egress.rules[2].cidrs[0]".
func Compile(pb *meshv1.EgressPolicy) (*Policy, error) {
	p := &Policy{exact: map[string][]portsOf{}, wild: map[string][]portsOf{}, hostPorts: map[uint16]bool{}}
	rules := pb.GetRules()
	if len(rules) > MaxRules {
		return nil, fmt.Errorf("egress.rules: %d rules, more than the limit of %d", len(rules), MaxRules)
	}
	for i, r := range rules {
		path := fmt.Sprintf("egress.rules[%d]", i)
		if len(r.GetHosts())+len(r.GetCidrs()) == 0 {
			return nil, fmt.Errorf("%s: no hosts and no cidrs: the rule admits nothing", path)
		}
		if n := len(r.GetHosts()) + len(r.GetCidrs()); n > MaxEntries {
			return nil, fmt.Errorf("%s: %d hosts and cidrs, more than the limit of %d", path, n, MaxEntries)
		}
		if len(r.GetPorts()) > MaxPorts {
			return nil, fmt.Errorf("%s.ports: %d ports, more than the limit of %d", path, len(r.GetPorts()), MaxPorts)
		}
		var ports []uint16
		for j, port := range r.GetPorts() {
			if port < 1 || port > 65535 {
				return nil, fmt.Errorf("%s.ports[%d]: port %d out of range 1-65535", path, j, port)
			}
			ports = append(ports, uint16(port))
		}
		slices.Sort(ports)
		ports = slices.Compact(ports)
		for j, h := range r.GetHosts() {
			name, wildcard, err := parseHost(h)
			if err != nil {
				return nil, fmt.Errorf("%s.hosts[%d]: %w", path, j, err)
			}
			po := portsOf{pattern: h, ports: ports}
			if wildcard {
				p.wild[name] = append(p.wild[name], po)
			} else {
				p.exact[name] = append(p.exact[name], po)
			}
			if len(ports) == 0 {
				p.anyPort = true
			}
			for _, port := range ports {
				p.hostPorts[port] = true
			}
		}
		for j, c := range r.GetCidrs() {
			pfx, err := netip.ParsePrefix(c)
			if err != nil || pfx.Addr().Zone() != "" || pfx.Addr().Is4In6() || pfx.Masked() != pfx {
				return nil, fmt.Errorf("%s.cidrs[%d]: %q is not a network in canonical form, such as 203.0.113.0/24 or 2001:db8::/32", path, j, c)
			}
			p.cidrs = append(p.cidrs, cidrRule{prefix: pfx, label: pfx.String(), ports: portsOf{pattern: pfx.String(), ports: ports}})
		}
	}
	// Longest prefix first, so that the label is the most specific
	// network that admits the address.
	slices.SortStableFunc(p.cidrs, func(a, b cidrRule) int { return b.prefix.Bits() - a.prefix.Bits() })
	return p, nil
}

// parseHost checks a host pattern in canonical form: a lower-case DNS
// name, or "*." and one; it returns the name, or for a wildcard the
// suffix that subdomains end with (".example.com").
func parseHost(h string) (string, bool, error) {
	name, wildcard := strings.CutPrefix(h, "*.")
	if !validName(name) {
		return "", false, fmt.Errorf("%q is not a lower-case DNS name or *. and one", h)
	}
	if wildcard {
		if !strings.Contains(name, ".") {
			return "", false, fmt.Errorf("%q: a wildcard must leave at least two labels", h)
		}
		return "." + name, true, nil
	}
	return name, false, nil
}

// validName reports whether s is a lower-case DNS name without a
// trailing dot whose last label is not numeric (that would be an
// address).
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := range len(label) {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// MatchAddr returns the network of a CIDR rule that admits the address and
// port (the longest such network), and whether one does.
func (p *Policy) MatchAddr(dst netip.AddrPort) (string, bool) {
	if p == nil {
		return "", false
	}
	a := dst.Addr().Unmap()
	for _, c := range p.cidrs {
		if c.prefix.Contains(a) && c.ports.admits(dst.Port()) {
			return c.label, true
		}
	}
	return "", false
}

// HostsOn reports whether some host rule admits connections to port: only
// then is the name the app sends worth reading.
func (p *Policy) HostsOn(port uint16) bool {
	return p != nil && (p.anyPort || p.hostPorts[port])
}

// MatchHost returns the pattern of a host rule that admits name (in
// canonical form: lower case, no trailing dot) on port, and whether one
// does. An exact name wins over wildcards, and a longer wildcard over a
// shorter one. "*.example.com" admits every subdomain of example.com, at
// any depth, but not example.com itself.
func (p *Policy) MatchHost(name string, port uint16) (string, bool) {
	if p == nil || !validName(name) {
		return "", false
	}
	for _, po := range p.exact[name] {
		if po.admits(port) {
			return po.pattern, true
		}
	}
	for i := strings.IndexByte(name, '.'); i >= 0; {
		for _, po := range p.wild[name[i:]] {
			if po.admits(port) {
				return po.pattern, true
			}
		}
		j := strings.IndexByte(name[i+1:], '.')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return "", false
}

// Empty reports whether the policy admits nothing.
func (p *Policy) Empty() bool {
	return p == nil || len(p.exact)+len(p.wild)+len(p.cidrs) == 0
}
