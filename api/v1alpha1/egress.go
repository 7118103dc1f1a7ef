package v1alpha1

// This file holds EgressPolicy: the destinations outside the mesh that the
// workloads it selects may reach when the controller runs with
// --egress allow-listed. docs/traffic.md describes what it means;
// internal/discovery compiles the policies selecting a workload into its
// proxy's configuration.

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KindEgressPolicy is the kind of EgressPolicy.
const KindEgressPolicy = "EgressPolicy"

// Bounds of an EgressPolicy, so that a proxy's configuration stays small.
const (
	MaxEgressHosts = 256
	MaxEgressCIDRs = 256
	MaxEgressPorts = 64
)

// EgressPolicy lists destinations outside the mesh that the workloads it
// selects may connect to. A connection is admitted when one policy
// selecting the workload admits it; with none, nothing outside the mesh is
// reachable. A policy in RootNamespace applies to the workloads of every
// namespace that its selector selects.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=egresspolicy
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type EgressPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec EgressPolicySpec `json:"spec"`
}

// EgressPolicySpec describes an EgressPolicy. At least one host or CIDR is
// required.
type EgressPolicySpec struct {
	// Selector picks the workloads the policy applies to; empty means
	// every workload of the namespace (of the mesh, in RootNamespace).
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// Hosts are DNS names ("api.example.com"), or "*.example.com" for
	// every subdomain of example.com (not example.com itself), matched
	// case-insensitively against the TLS server name or HTTP host the app
	// sends. The destination address must also be one the name resolves
	// to. No IP addresses: those go in CIDRs.
	// +kubebuilder:validation:MaxItems=256
	Hosts []string `json:"hosts,omitempty"`
	// CIDRs are IPv4 or IPv6 networks ("203.0.113.0/24",
	// "2001:db8::/32"), or single addresses, that the destination address
	// must be in.
	// +kubebuilder:validation:MaxItems=256
	CIDRs []string `json:"cidrs,omitempty"`
	// Ports restricts the policy to these destination ports; empty means
	// any port.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports,omitempty"`
}

// Default fills the namespace and writes hosts and CIDRs in their
// canonical form: hosts in lower case without a trailing dot, CIDRs as
// netip.Prefix prints them (a single address as a /32 or /128). Entries
// that do not parse are left for Validate to report.
func (p *EgressPolicy) Default() {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
	for i, h := range p.Spec.Hosts {
		if n, msg := NormalizeEgressHost(h); msg == "" {
			p.Spec.Hosts[i] = n
		}
	}
	for i, c := range p.Spec.CIDRs {
		if n, msg := NormalizeEgressCIDR(c); msg == "" {
			p.Spec.CIDRs[i] = n
		}
	}
}

// Validate reports every invalid field of p as FieldErrors.
func (p *EgressPolicy) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindEgressPolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	validateSelector(&errs, p.Spec.Selector)
	spec := &p.Spec
	if len(spec.Hosts) == 0 && len(spec.CIDRs) == 0 {
		errs.add("spec", "list at least one destination in hosts or cidrs")
	}
	if len(spec.Hosts) > MaxEgressHosts {
		errs.add("spec.hosts", "has %d entries, more than the limit of %d: use wildcards or split the policy", len(spec.Hosts), MaxEgressHosts)
	}
	seen := make(map[string]int, len(spec.Hosts))
	for i, h := range spec.Hosts {
		path := fmt.Sprintf("spec.hosts[%d]", i)
		n, msg := NormalizeEgressHost(h)
		if msg != "" {
			errs.add(path, "%s", msg)
			continue
		}
		if j, dup := seen[n]; dup {
			errs.add(path, "duplicate host %s (also spec.hosts[%d])", quote(h), j)
			continue
		}
		seen[n] = i
	}
	if len(spec.CIDRs) > MaxEgressCIDRs {
		errs.add("spec.cidrs", "has %d entries, more than the limit of %d: use wider networks or split the policy", len(spec.CIDRs), MaxEgressCIDRs)
	}
	clear(seen)
	for i, c := range spec.CIDRs {
		path := fmt.Sprintf("spec.cidrs[%d]", i)
		n, msg := NormalizeEgressCIDR(c)
		if msg != "" {
			errs.add(path, "%s", msg)
			continue
		}
		if j, dup := seen[n]; dup {
			errs.add(path, "duplicate network %s (also spec.cidrs[%d])", quote(c), j)
			continue
		}
		seen[n] = i
	}
	if len(spec.Ports) > MaxEgressPorts {
		errs.add("spec.ports", "has %d entries, more than the limit of %d", len(spec.Ports), MaxEgressPorts)
	}
	ports := make(map[int32]int, len(spec.Ports))
	for i, pt := range spec.Ports {
		path := fmt.Sprintf("spec.ports[%d]", i)
		if pt < minPort || pt > maxPort {
			errs.add(path, "must be between %d and %d", minPort, maxPort)
		} else if j, dup := ports[pt]; dup {
			errs.add(path, "duplicate port %d (also spec.ports[%d])", pt, j)
		} else {
			ports[pt] = i
		}
	}
	return errs.errOrNil()
}

// NormalizeEgressHost returns the canonical form of an egress host
// pattern (lower case, no trailing dot), or why it is not one: a DNS name,
// or "*." and a DNS name of at least two labels for its subdomains.
func NormalizeEgressHost(h string) (string, string) {
	if h == "" {
		return "", "must not be empty: write a DNS name such as api.example.com, or *.example.com for its subdomains"
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return "", fmt.Sprintf("%s is an IP address: list addresses and networks in cidrs", quote(h))
	}
	n := strings.ToLower(strings.TrimSuffix(h, "."))
	name, wildcard := strings.CutPrefix(n, "*.")
	if strings.Contains(name, "*") {
		return "", fmt.Sprintf("invalid host %s: a wildcard may only be the whole first label, as in *.example.com", quote(h))
	}
	if msgs := content.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return "", fmt.Sprintf("invalid host %s: want a DNS name such as api.example.com (%s)", quote(h), strings.Join(msgs, "; "))
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) > 63 {
			return "", fmt.Sprintf("invalid host %s: label %s is longer than 63 characters", quote(h), quote(label))
		}
	}
	if allDigits(name[strings.LastIndexByte(name, '.')+1:]) {
		return "", fmt.Sprintf("invalid host %s: its last label is a number, which no DNS name has; list addresses in cidrs", quote(h))
	}
	if wildcard && !strings.Contains(name, ".") {
		return "", fmt.Sprintf("invalid host %s: a wildcard must leave at least two labels, as in *.example.com, not a whole top-level domain", quote(h))
	}
	return n, ""
}

// NormalizeEgressCIDR returns the canonical form of an egress network: an
// IPv4 or IPv6 prefix, or a single address as a /32 or /128. A prefix
// with bits set past its length is refused rather than guessed at.
func NormalizeEgressCIDR(c string) (string, string) {
	if !strings.Contains(c, "/") {
		ip, err := netip.ParseAddr(c)
		if err != nil {
			return "", fmt.Sprintf("invalid network %s: want a CIDR such as 203.0.113.0/24 or 2001:db8::/32, or a single address", quote(c))
		}
		c = ip.String() + "/" + fmt.Sprint(ip.BitLen())
	}
	p, err := netip.ParsePrefix(c)
	switch {
	case err != nil:
		return "", fmt.Sprintf("invalid network %s: want a CIDR such as 203.0.113.0/24 or 2001:db8::/32, or a single address", quote(c))
	case p.Addr().Zone() != "":
		return "", fmt.Sprintf("invalid network %s: IPv6 zones are not supported", quote(c))
	case p.Addr().Is4In6():
		return "", fmt.Sprintf("invalid network %s: write IPv4-mapped networks as IPv4, such as %s", quote(c), mappedAsIPv4(p))
	case p.Masked() != p:
		return "", fmt.Sprintf("invalid network %s: it has bits set past its length; did you mean %s?", quote(c), p.Masked())
	}
	return p.String(), ""
}

// mappedAsIPv4 is the IPv4 form of an IPv4-mapped IPv6 prefix, for a
// suggestion.
func mappedAsIPv4(p netip.Prefix) string {
	bits := max(p.Bits()-96, 0)
	return netip.PrefixFrom(p.Addr().Unmap(), bits).Masked().String()
}
