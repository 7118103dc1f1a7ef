package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/rampart-mesh/rampart/internal/logging"
	"github.com/rampart-mesh/rampart/internal/proxy/iptables"
)

// runIPTables implements `rampart-proxy iptables`: it installs (or with
// --uninstall removes) transparent interception in the current network
// namespace, typically from a pod's init container.
func runIPTables(args []string) error {
	cfg, uninstall, err := parseIPTablesFlags(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logger, err := logging.New(os.Stderr, "info", "text")
	if err != nil {
		return err
	}
	cfg.Logger = logger
	cfg.Output = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if uninstall {
		return iptables.Uninstall(ctx, cfg)
	}
	return iptables.Install(ctx, cfg)
}

// parseIPTablesFlags turns the subcommand's arguments into a validated
// Config; usage and flag errors go to out.
func parseIPTablesFlags(args []string, out io.Writer) (cfg iptables.Config, uninstall bool, err error) {
	fs := flag.NewFlagSet("rampart-proxy iptables", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, `Usage: rampart-proxy iptables --proxy-uid UID [flags]
       rampart-proxy iptables --uninstall [--dry-run]

Redirects the pod's TCP to the proxy in the current network namespace
(iptables and ip6tables, nat table, chains RAMPART_*). Needs root or
CAP_NET_ADMIN; run it from the pod's init container. Running it again
replaces the rules; --uninstall removes them.

Flags:
`)
		fs.PrintDefaults()
	}
	var proxyUID, proxyGID idValue
	cfg.OutboundPort = iptables.DefaultOutboundPort
	cfg.InboundPort = iptables.DefaultInboundPort
	cfg.TunnelPort = iptables.DefaultTunnelPort
	cfg.AdminPort = iptables.DefaultAdminPort
	fs.Var((*portValue)(&cfg.OutboundPort), "outbound-port", "`port` the app's outbound TCP is redirected to")
	fs.Var((*portValue)(&cfg.InboundPort), "inbound-port", "`port` inbound TCP for the pod is redirected to")
	fs.Var((*portValue)(&cfg.TunnelPort), "tunnel-port", "the proxy's mTLS tunnel `port`; inbound TCP to it is never redirected")
	fs.Var((*portValue)(&cfg.AdminPort), "admin-port", "the proxy's admin `port`; inbound TCP to it is never redirected")
	fs.Var(&proxyUID, "proxy-uid", "`UID` the proxy runs as; its connections are not redirected (required, or --proxy-gid)")
	fs.Var(&proxyGID, "proxy-gid", "`GID` the proxy runs as; its connections are not redirected")
	fs.Var((*portListValue)(&cfg.InboundSkipPorts), "skip-inbound-ports", "comma-separated destination `ports` whose inbound TCP goes straight to the app")
	fs.Var((*portListValue)(&cfg.OutboundSkipPorts), "skip-outbound-ports", "comma-separated destination `ports` the app reaches directly")
	fs.Var((*prefixListValue)(&cfg.InboundSkipCIDRs), "skip-inbound-cidrs", "comma-separated source `CIDRs` (IPv4 or IPv6) whose inbound TCP goes straight to the app")
	fs.Var((*prefixListValue)(&cfg.OutboundSkipCIDRs), "skip-outbound-cidrs", "comma-separated destination `CIDRs` (IPv4 or IPv6) the app reaches directly")
	fs.BoolVar(&cfg.DryRun, "dry-run", false, "print the iptables-restore input instead of applying it")
	fs.BoolVar(&cfg.IPv4Only, "ipv4-only", false, "install IPv4 rules alone when ip6tables is missing on a kernel with IPv6 (IPv6 traffic then bypasses the proxy)")
	fs.BoolVar(&uninstall, "uninstall", false, "remove Rampart's chains and the jumps into them (succeeds when there are none)")
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("iptables: unexpected argument %q: every setting is a flag (see rampart-proxy iptables -h)", fs.Arg(0))
	}
	if uninstall {
		return cfg, true, nil
	}
	if !proxyUID.set && !proxyGID.set {
		return cfg, false, errors.New("iptables: --proxy-uid is required: give the UID the proxy runs as (e.g. --proxy-uid=1337), whose own connections must leave without being redirected back to it; or --proxy-gid, or --uninstall")
	}
	for _, id := range []struct {
		name string
		v    idValue
	}{{"--proxy-uid", proxyUID}, {"--proxy-gid", proxyGID}} {
		if id.v.set && id.v.id == 0 {
			return cfg, false, fmt.Errorf("iptables: %s=0: the proxy must run as its own non-root user, since exempting root would let every root process bypass it", id.name)
		}
	}
	cfg.ProxyUID, cfg.ProxyGID = proxyUID.id, proxyGID.id
	if err := cfg.Validate(); err != nil {
		return cfg, false, err
	}
	return cfg, false, nil
}

// idValue is a flag holding a user or group id, remembering whether it
// was given.
type idValue struct {
	id  uint32
	set bool
}

func (v *idValue) String() string {
	if v == nil || !v.set {
		return ""
	}
	return strconv.FormatUint(uint64(v.id), 10)
}

func (v *idValue) Set(s string) error {
	id, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || id == 1<<32-1 {
		return fmt.Errorf("%q is not a numeric id", s)
	}
	v.id, v.set = uint32(id), true
	return nil
}

// portValue is a flag holding one TCP port.
type portValue uint16

func (p *portValue) String() string { return strconv.Itoa(int(*p)) }
func (p *portValue) Set(s string) error {
	v, err := parsePort(s)
	*p = portValue(v)
	return err
}

// portListValue is a flag holding comma-separated TCP ports; repeating the
// flag appends.
type portListValue []uint16

func (l *portListValue) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = strconv.Itoa(int(p))
	}
	return strings.Join(parts, ",")
}

func (l *portListValue) Set(s string) error {
	for _, part := range splitList(s) {
		p, err := parsePort(part)
		if err != nil {
			return err
		}
		*l = append(*l, p)
	}
	return nil
}

// prefixListValue is a flag holding comma-separated CIDRs; a bare address
// means just that address. Repeating the flag appends.
type prefixListValue []netip.Prefix

func (l *prefixListValue) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func (l *prefixListValue) Set(s string) error {
	for _, part := range splitList(s) {
		p, err := netip.ParsePrefix(part)
		if err != nil {
			a, aerr := netip.ParseAddr(part)
			if aerr != nil {
				return fmt.Errorf("%q is not a CIDR like 10.0.0.0/8 or fd00::/8, nor an address", part)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p != p.Masked() {
			return fmt.Errorf("%q has host bits set: did you mean %s?", part, p.Masked())
		}
		*l = append(*l, p)
	}
	return nil
}

func parsePort(s string) (uint16, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(v), nil
}

// splitList splits a comma-separated list, ignoring spaces and empty items.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
