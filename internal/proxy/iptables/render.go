package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// family is an address family and the tools that manage its rules.
type family struct {
	name     string // "IPv4" or "IPv6"
	save     string // iptables-save or ip6tables-save
	restore  string // iptables-restore or ip6tables-restore
	loopback netip.Prefix
	is6      bool
}

var (
	ipv4 = family{name: "IPv4", save: "iptables-save", restore: "iptables-restore", loopback: netip.MustParsePrefix("127.0.0.0/8")}
	ipv6 = family{name: "IPv6", save: "ip6tables-save", restore: "ip6tables-restore", loopback: netip.MustParsePrefix("::1/128"), is6: true}
)

// chains are Rampart's chains, in the order they are declared.
var chains = []string{ChainInbound, ChainInRedirect, ChainOutput, ChainRedirect}

// Render returns the iptables-restore --noflush input that installs cfg's
// interception on a table holding no Rampart rules yet: v4 for
// iptables-restore and v6 for ip6tables-restore. Zero ports take their
// defaults. Render does not validate cfg: call Validate first (Install does).
func Render(cfg Config) (v4, v6 string) {
	cfg = cfg.withDefaults()
	return renderFamily(cfg, ipv4, nil), renderFamily(cfg, ipv6, nil)
}

// renderFamily writes one family's transaction. cleanup lines (deleting
// stale jumps and chains) go after the chain declarations, which create
// Rampart's chains or empty them if they exist, and before the rules.
func renderFamily(cfg Config, f family, cleanup []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Rampart transparent interception (%s): input for %s --noflush.\n", f.name, f.restore)
	b.WriteString("*nat\n")
	for _, c := range chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, l := range cleanup {
		b.WriteString(l + "\n")
	}
	for _, l := range rules(cfg, f) {
		b.WriteString(l + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// rules returns the -A lines of one family, the jumps from the built-in
// chains last so that nothing enters a chain before it is complete.
func rules(cfg Config, f family) []string {
	var r []string
	add := func(format string, args ...any) { r = append(r, fmt.Sprintf(format, args...)) }

	// Inbound: TCP arriving on any interface for this pod.
	add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInRedirect, cfg.InboundPort)
	for _, p := range dedup(append([]uint16{cfg.TunnelPort, cfg.AdminPort}, cfg.InboundSkipPorts...)) {
		add("-A %s -p tcp -m tcp --dport %d -j RETURN", ChainInbound, p)
	}
	for _, p := range prefixesOf(cfg.InboundSkipCIDRs, f) {
		add("-A %s -s %s -j RETURN", ChainInbound, p)
	}
	add("-A %s -p tcp -j %s", ChainInbound, ChainInRedirect)

	// Outbound: TCP the pod's processes open.
	add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainRedirect, cfg.OutboundPort)
	// The proxy's own connections leave directly.
	if cfg.ProxyUID != 0 {
		add("-A %s -m owner --uid-owner %d -j RETURN", ChainOutput, cfg.ProxyUID)
	}
	if cfg.ProxyGID != 0 {
		add("-A %s -m owner --gid-owner %d -j RETURN", ChainOutput, cfg.ProxyGID)
	}
	// Connections that stay on this host: to loopback (the app's own
	// local services, the proxy's listeners) and to the pod's own
	// addresses, which the kernel routes over lo. They reach their
	// listener directly. (Istio sends the proxy's own calls to its pod IP
	// through the inbound port; Rampart exempts the proxy entirely, so a
	// proxy dialing its pod IP cannot loop.)
	add("-A %s -o lo -j RETURN", ChainOutput)
	add("-A %s -d %s -j RETURN", ChainOutput, f.loopback)
	for _, p := range dedup(cfg.OutboundSkipPorts) {
		add("-A %s -p tcp -m tcp --dport %d -j RETURN", ChainOutput, p)
	}
	for _, p := range prefixesOf(cfg.OutboundSkipCIDRs, f) {
		add("-A %s -d %s -j RETURN", ChainOutput, p)
	}
	add("-A %s -p tcp -j %s", ChainOutput, ChainRedirect)

	add("-A PREROUTING -p tcp -j %s", ChainInbound)
	add("-A OUTPUT -p tcp -j %s", ChainOutput)
	return r
}

// prefixesOf returns the masked prefixes of family f, without repeats.
func prefixesOf(ps []netip.Prefix, f family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is6() != f.is6 {
			continue
		}
		if p = p.Masked(); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// dedup drops repeated ports, keeping the first of each.
func dedup(ports []uint16) []uint16 {
	var out []uint16
	for _, p := range ports {
		if p != 0 && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
