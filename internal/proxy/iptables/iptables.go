// Package iptables sets up transparent interception for a sidecar proxy in
// the current network namespace, Istio style: the app's outbound TCP is
// redirected to the proxy's outbound port and TCP arriving for the pod to
// its inbound port, except traffic of the proxy's own user and what the
// configuration exempts. It drives the iptables-save and iptables-restore
// binaries (and their ip6tables twins) through a Runner, applying each
// family's ruleset in one atomic iptables-restore --noflush transaction.
//
// All rules live in Rampart's own chains (prefixed RAMPART_) in the nat
// table, entered from PREROUTING and OUTPUT; Uninstall removes those chains
// and the jumps into them and nothing else.
//
// The package depends only on the standard library; it must not import the
// rest of the proxy, the control plane or Kubernetes packages.
package iptables

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
)

// Default ports, the same as Istio's so that familiar tooling and habits
// carry over.
const (
	DefaultOutboundPort uint16 = 15001
	DefaultInboundPort  uint16 = 15006
	DefaultTunnelPort   uint16 = 15008
	DefaultAdminPort    uint16 = 15000
)

// Rampart's chains in the nat table. Every chain Rampart creates starts
// with ChainPrefix; Uninstall removes all such chains.
const (
	ChainPrefix = "RAMPART_"
	// ChainInbound is jumped to from PREROUTING: it decides which inbound
	// TCP goes to the proxy.
	ChainInbound = "RAMPART_INBOUND"
	// ChainInRedirect redirects to the inbound port.
	ChainInRedirect = "RAMPART_IN_REDIRECT"
	// ChainOutput is jumped to from OUTPUT: it decides which outbound TCP
	// goes to the proxy.
	ChainOutput = "RAMPART_OUTPUT"
	// ChainRedirect redirects to the outbound port.
	ChainRedirect = "RAMPART_REDIRECT"
)

// Config says what to intercept and how to apply it. The zero value of
// every field but ProxyUID/ProxyGID is useful.
type Config struct {
	// OutboundPort receives the app's outbound TCP; default 15001.
	OutboundPort uint16
	// InboundPort receives TCP arriving for the pod; default 15006.
	InboundPort uint16
	// TunnelPort is where peer proxies connect over mTLS; inbound TCP to it
	// is never redirected. Default 15008.
	TunnelPort uint16
	// AdminPort serves /ready, /live and /metrics; inbound TCP to it is
	// never redirected. Default 15000.
	AdminPort uint16

	// ProxyUID and ProxyGID name the user or group the proxy runs as:
	// connections their sockets open are never redirected, so the proxy
	// reaches the network directly instead of looping back to itself. At
	// least one is required. 0 means unset: the proxy must not run as root,
	// whose exemption would let every root process in the pod bypass it.
	ProxyUID uint32
	ProxyGID uint32

	// InboundSkipPorts are destination ports whose inbound TCP goes straight
	// to the app, in addition to TunnelPort and AdminPort.
	InboundSkipPorts []uint16
	// OutboundSkipPorts are destination ports the app reaches directly.
	OutboundSkipPorts []uint16
	// InboundSkipCIDRs are source networks whose inbound TCP goes straight
	// to the app (a node's health checks, say).
	InboundSkipCIDRs []netip.Prefix
	// OutboundSkipCIDRs are destination networks the app reaches directly.
	// Each prefix goes into the ruleset of its own address family.
	OutboundSkipCIDRs []netip.Prefix

	// Runner runs the iptables binaries; default ExecRunner(), which runs
	// them in this process's network namespace.
	Runner Runner
	// IPv4Only accepts installing IPv4 rules alone on a kernel with IPv6
	// when ip6tables is missing. Without it that is an error: IPv6 traffic
	// would bypass the proxy.
	IPv4Only bool
	// DryRun makes Install and Uninstall write the rules they would apply
	// to Output instead of applying them. Uninstall still reads the current
	// rules (iptables-save) to know what it would remove.
	DryRun bool
	// Output receives the DryRun listing; default os.Stdout.
	Output io.Writer
	// Logger reports what was applied; default: discard.
	Logger *slog.Logger

	// hasIPv6 replaces the kernel probe in tests.
	hasIPv6 func() bool
}

// withDefaults returns cfg with zero ports set to their defaults.
func (c Config) withDefaults() Config {
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.InboundPort == 0 {
		c.InboundPort = DefaultInboundPort
	}
	if c.TunnelPort == 0 {
		c.TunnelPort = DefaultTunnelPort
	}
	if c.AdminPort == 0 {
		c.AdminPort = DefaultAdminPort
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports everything wrong with the rule settings at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.ProxyUID == 0 && c.ProxyGID == 0 {
		errs = append(errs, errors.New("iptables: set ProxyUID (or ProxyGID) to the non-root user the proxy runs as (e.g. 1337), whose own connections must not be redirected back to it"))
	}
	ports := []struct {
		name string
		port uint16
	}{
		{"outbound port", c.OutboundPort},
		{"inbound port", c.InboundPort},
		{"tunnel port", c.TunnelPort},
		{"admin port", c.AdminPort},
	}
	for i, a := range ports {
		for _, b := range ports[i+1:] {
			if a.port == b.port {
				errs = append(errs, fmt.Errorf("iptables: %s and %s are both %d: give each its own port", a.name, b.name, a.port))
			}
		}
	}
	for _, p := range c.InboundSkipPorts {
		if p == 0 {
			errs = append(errs, errors.New("iptables: inbound skip ports: 0 is not a port"))
		}
	}
	for _, p := range c.OutboundSkipPorts {
		if p == 0 {
			errs = append(errs, errors.New("iptables: outbound skip ports: 0 is not a port"))
		}
	}
	for _, list := range []struct {
		name     string
		prefixes []netip.Prefix
	}{{"inbound skip CIDRs", c.InboundSkipCIDRs}, {"outbound skip CIDRs", c.OutboundSkipCIDRs}} {
		for _, p := range list.prefixes {
			switch {
			case !p.IsValid():
				errs = append(errs, fmt.Errorf("iptables: %s: %q is not a valid prefix", list.name, p))
			case p.Addr().Is4In6():
				errs = append(errs, fmt.Errorf("iptables: %s: %s is IPv4-mapped IPv6, which never matches: write it as IPv4", list.name, p))
			case p.Addr().Zone() != "":
				errs = append(errs, fmt.Errorf("iptables: %s: %s has a zone, which iptables cannot match", list.name, p))
			}
		}
	}
	return errors.Join(errs...)
}
