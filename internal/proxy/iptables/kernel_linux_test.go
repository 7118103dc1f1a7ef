package iptables

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rampart-mesh/rampart/internal/proxy/origdst"
)

// ruleLines returns the rule and chain lines of iptables-save output,
// without comments and counters, for comparing tables.
func ruleLines(save string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			l, _, _ = strings.Cut(l, " [") // drop packet counters
		}
		out = append(out, l)
	}
	return out
}

func count(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if l == s {
			n++
		}
	}
	return n
}

func TestKernelInstallIdempotentUninstall(t *testing.T) {
	ns := newNetns(t)
	has6 := false
	if _, err := exec.LookPath("ip6tables-save"); err == nil && kernelHasIPv6() {
		has6 = true
	}
	// Someone else's rules, which must survive everything.
	ns.exec("iptables", "-t", "nat", "-N", "OTHER")
	ns.exec("iptables", "-t", "nat", "-A", "OTHER", "-p", "udp", "-j", "RETURN")
	ns.exec("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "OTHER")
	before4 := ruleLines(ns.exec("iptables-save", "-t", "nat"))
	var before6 []string
	if has6 {
		before6 = ruleLines(ns.exec("ip6tables-save", "-t", "nat"))
	}

	cfg := Config{ProxyUID: 1337, OutboundSkipCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:10::/108")}, Runner: ns.runner()}
	check := func(when string) {
		t.Helper()
		got4 := ruleLines(ns.exec("iptables-save", "-t", "nat"))
		for _, line := range []string{
			":RAMPART_INBOUND -",
			":RAMPART_IN_REDIRECT -",
			":RAMPART_OUTPUT -",
			":RAMPART_REDIRECT -",
			"-A PREROUTING -p tcp -j RAMPART_INBOUND",
			"-A OUTPUT -p tcp -j RAMPART_OUTPUT",
			"-A RAMPART_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
			"-A RAMPART_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
			"-A RAMPART_INBOUND -p tcp -m tcp --dport 15000 -j RETURN",
			"-A RAMPART_INBOUND -p tcp -j RAMPART_IN_REDIRECT",
			"-A RAMPART_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
			"-A RAMPART_OUTPUT -m owner --uid-owner 1337 -j RETURN",
			"-A RAMPART_OUTPUT -o lo -j RETURN",
			"-A RAMPART_OUTPUT -d 127.0.0.0/8 -j RETURN",
			"-A RAMPART_OUTPUT -d 10.96.0.0/12 -j RETURN",
			"-A RAMPART_OUTPUT -p tcp -j RAMPART_REDIRECT",
			"-A OUTPUT -p udp -j OTHER",
			"-A OTHER -p udp -j RETURN",
		} {
			if n := count(got4, line); n != 1 {
				t.Errorf("%s: iptables-save has %d of %q, want 1:\n%s", when, n, line, strings.Join(got4, "\n"))
			}
		}
		if n := count(got4, "-A RAMPART_OUTPUT -d fd00:10::/108 -j RETURN"); n != 0 {
			t.Errorf("%s: an IPv6 CIDR went into iptables", when)
		}
		if !has6 {
			return
		}
		got6 := ruleLines(ns.exec("ip6tables-save", "-t", "nat"))
		for _, line := range []string{
			"-A OUTPUT -p tcp -j RAMPART_OUTPUT",
			"-A PREROUTING -p tcp -j RAMPART_INBOUND",
			"-A RAMPART_OUTPUT -d ::1/128 -j RETURN",
			"-A RAMPART_OUTPUT -d fd00:10::/108 -j RETURN",
			"-A RAMPART_OUTPUT -m owner --uid-owner 1337 -j RETURN",
		} {
			if n := count(got6, line); n != 1 {
				t.Errorf("%s: ip6tables-save has %d of %q, want 1:\n%s", when, n, line, strings.Join(got6, "\n"))
			}
		}
		if n := count(got6, "-A RAMPART_OUTPUT -d 10.96.0.0/12 -j RETURN"); n != 0 {
			t.Errorf("%s: an IPv4 CIDR went into ip6tables", when)
		}
	}

	if err := Install(t.Context(), cfg); err != nil {
		t.Fatalf("Install: %v", err)
	}
	check("after install")
	first := ruleLines(ns.exec("iptables-save", "-t", "nat"))
	if err := Install(t.Context(), cfg); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	check("after a second install")
	if diff := strings.Join(ruleLines(ns.exec("iptables-save", "-t", "nat")), "\n"); diff != strings.Join(first, "\n") {
		t.Errorf("a second install changed the table:\nfirst:\n%s\nsecond:\n%s", strings.Join(first, "\n"), diff)
	}

	// A changed configuration replaces the rules rather than adding to them.
	changed := cfg
	changed.OutboundPort = 16001
	if err := Install(t.Context(), changed); err != nil {
		t.Fatalf("Install with another port: %v", err)
	}
	got := ruleLines(ns.exec("iptables-save", "-t", "nat"))
	if count(got, "-A RAMPART_REDIRECT -p tcp -j REDIRECT --to-ports 16001") != 1 || count(got, "-A RAMPART_REDIRECT -p tcp -j REDIRECT --to-ports 15001") != 0 || count(got, "-A OUTPUT -p tcp -j RAMPART_OUTPUT") != 1 {
		t.Errorf("reinstall with another port:\n%s", strings.Join(got, "\n"))
	}

	for i := range 2 {
		if err := Uninstall(t.Context(), Config{Runner: ns.runner()}); err != nil {
			t.Fatalf("Uninstall #%d: %v", i+1, err)
		}
		after4 := ruleLines(ns.exec("iptables-save", "-t", "nat"))
		if strings.Join(after4, "\n") != strings.Join(before4, "\n") {
			t.Errorf("after uninstall #%d the IPv4 table is not as before:\nbefore:\n%s\nafter:\n%s", i+1, strings.Join(before4, "\n"), strings.Join(after4, "\n"))
		}
		if has6 {
			after6 := ruleLines(ns.exec("ip6tables-save", "-t", "nat"))
			if strings.Join(after6, "\n") != strings.Join(before6, "\n") {
				t.Errorf("after uninstall #%d the IPv6 table is not as before:\n%s", i+1, strings.Join(after6, "\n"))
			}
		}
		if s := ns.exec("iptables-save"); strings.Contains(s, "RAMPART") {
			t.Errorf("after uninstall #%d:\n%s", i+1, s)
		}
	}
}

// TestKernelUninstallFreshNamespace: nothing installed, not even a nat table.
func TestKernelUninstallFreshNamespace(t *testing.T) {
	ns := newNetns(t)
	if err := Uninstall(t.Context(), Config{Runner: ns.runner()}); err != nil {
		t.Fatalf("Uninstall with nothing installed: %v", err)
	}
}

// pod and peer are two namespaces joined by a veth pair:
//
//	pod  rpa 10.200.0.1/24 fd20::1/64  <-->  rpb 10.200.0.2/24 10.200.0.3/24 10.200.0.200/24
//	                                             fd20::2/64 fd20::200/64                      peer
//
// Interception is installed in pod. Every listener answers each connection
// with one line, "<listener name> <original destination>" ("untracked" in
// peer, which has no connection tracking), so the client learns where its
// connection really went.
type topology struct {
	pod, peer *netns
	v6        bool
}

func newTopology(t *testing.T) *topology {
	pod, peer := newNetns(t), newNetns(t)
	pod.ip("link", "add", "rpa", "type", "veth", "peer", "name", "rpb", "netns", peer.name)
	pod.ip("addr", "add", "10.200.0.1/24", "dev", "rpa")
	for _, a := range []string{"10.200.0.2/24", "10.200.0.3/24", "10.200.0.200/24"} {
		peer.ip("addr", "add", a, "dev", "rpb")
	}
	pod.ip("link", "set", "rpa", "up")
	peer.ip("link", "set", "rpb", "up")
	top := &topology{pod: pod, peer: peer}
	if _, err := exec.LookPath("ip6tables-restore"); err == nil && kernelHasIPv6() {
		top.v6 = true
		pod.ip("addr", "add", "fd20::1/64", "dev", "rpa", "nodad")
		peer.ip("addr", "add", "fd20::2/64", "dev", "rpb", "nodad")
		peer.ip("addr", "add", "fd20::200/64", "dev", "rpb", "nodad")
	}
	return top
}

// listen starts an answering listener on addr inside ns.
func listen(t *testing.T, ns *netns, name, addr string) {
	t.Helper()
	var l net.Listener
	if err := ns.do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.name, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			od, err := origdst.Get(c)
			if err != nil {
				// The peer namespace tracks no connections: the kernel
				// answers ENOENT there, which is fine for a direct one.
				fmt.Fprintf(c, "%s untracked\n", name)
			} else {
				fmt.Fprintf(c, "%s %s\n", name, od)
			}
			c.Close()
		}
	})
}

// dial connects from inside ns, as the given fsuid when not 0, from laddr
// when set, and returns the answering listener's line.
func dial(t *testing.T, ns *netns, uid int, laddr, raddr string) string {
	t.Helper()
	var c net.Conn
	err := ns.do(func() error {
		if uid != 0 {
			// Per thread, and this thread is discarded afterwards. The
			// socket's owner, which -m owner matches, is fixed now.
			if err := unix.Setfsuid(uid); err != nil {
				return err
			}
		}
		d := net.Dialer{Timeout: 3 * time.Second}
		if laddr != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(laddr)}
		}
		var err error
		c, err = d.Dial("tcp", raddr)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", raddr, ns.name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("dial %s from %s: reading the answer: %v", raddr, ns.name, err)
	}
	return strings.TrimSpace(line)
}

// TestKernelRedirect sends real connections through the rules and reads
// their original destination with origdst.Get on the redirect listeners.
func TestKernelRedirect(t *testing.T) {
	top := newTopology(t)
	pod, peer := top.pod, top.peer
	const proxyUID = 1337 // not the test's uid (0): the test's own connections are intercepted
	cfg := Config{
		ProxyUID:          proxyUID,
		OutboundSkipPorts: []uint16{6000},
		OutboundSkipCIDRs: []netip.Prefix{netip.MustParsePrefix("10.200.0.200/32"), netip.MustParsePrefix("fd20::200/128")},
		InboundSkipPorts:  []uint16{2222},
		InboundSkipCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.200.0.3/32")},
		Runner:            pod.runner(),
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := Install(ctx, cfg); err != nil {
		t.Fatalf("Install: %v", err)
	}
	// Dual-stack listeners: IPv4 connections arrive as ::ffff:a.b.c.d,
	// which exercises origdst's IPv4 path on an IPv6 socket.
	listen(t, pod, "outbound", ":15001")
	listen(t, pod, "inbound", ":15006")
	listen(t, pod, "app", ":8080")
	listen(t, pod, "tunnel", ":15008")
	listen(t, pod, "ssh", ":2222")
	listen(t, peer, "peer", ":5432")
	listen(t, peer, "peer6000", ":6000")
	// A plain IPv4 socket, for origdst's IPv4 path on an AF_INET socket.
	listen(t, pod, "outbound4", "127.0.0.1:15101")

	tests := []struct {
		name     string
		from     *netns
		uid      int
		laddr    string
		to       string
		want     string
		needIPv6 bool
	}{
		{"app outbound is redirected", pod, 0, "", "10.200.0.2:5432", "outbound 10.200.0.2:5432", false},
		{"skipped outbound CIDR goes direct", pod, 0, "", "10.200.0.200:5432", "peer untracked", false},
		{"skipped outbound port goes direct", pod, 0, "", "10.200.0.2:6000", "peer6000 untracked", false},
		{"proxy's own outbound goes direct", pod, proxyUID, "", "10.200.0.2:5432", "peer untracked", false},
		{"app to loopback goes direct", pod, 0, "", "127.0.0.1:8080", "app 127.0.0.1:8080", false},
		{"app to its own pod IP goes direct", pod, 0, "", "10.200.0.1:8080", "app 10.200.0.1:8080", false},
		{"inbound is redirected", peer, 0, "", "10.200.0.1:8080", "inbound 10.200.0.1:8080", false},
		{"inbound to the tunnel port goes direct", peer, 0, "", "10.200.0.1:15008", "tunnel 10.200.0.1:15008", false},
		{"skipped inbound port goes direct", peer, 0, "", "10.200.0.1:2222", "ssh 10.200.0.1:2222", false},
		{"inbound from a skipped CIDR goes direct", peer, 0, "10.200.0.3", "10.200.0.1:8080", "app 10.200.0.1:8080", false},
		{"IPv6 app outbound is redirected", pod, 0, "", "[fd20::2]:5432", "outbound [fd20::2]:5432", true},
		{"IPv6 skipped outbound CIDR goes direct", pod, 0, "", "[fd20::200]:5432", "peer untracked", true},
		{"IPv6 proxy's own outbound goes direct", pod, proxyUID, "", "[fd20::2]:5432", "peer untracked", true},
		{"IPv6 app to loopback goes direct", pod, 0, "", "[::1]:8080", "app [::1]:8080", true},
		{"IPv6 inbound is redirected", peer, 0, "", "[fd20::1]:8080", "inbound [fd20::1]:8080", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needIPv6 && !top.v6 {
				t.Skip("no IPv6 (kernel or ip6tables)")
			}
			if got := dial(t, tt.from, tt.uid, tt.laddr, tt.to); got != tt.want {
				t.Errorf("connection to %s answered %q, want %q", tt.to, got, tt.want)
			}
		})
	}

	t.Run("origdst on a plain IPv4 socket", func(t *testing.T) {
		// Redirect one more destination to the AF_INET listener.
		pod.exec("iptables", "-t", "nat", "-I", ChainRedirect, "-d", "10.200.0.9/32", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15101")
		if got, want := dial(t, pod, 0, "", "10.200.0.9:5432"), "outbound4 10.200.0.9:5432"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	if err := Uninstall(ctx, Config{Runner: pod.runner()}); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	t.Run("after uninstall nothing is redirected", func(t *testing.T) {
		if got, want := dial(t, pod, 0, "", "10.200.0.2:5432"), "peer untracked"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}
