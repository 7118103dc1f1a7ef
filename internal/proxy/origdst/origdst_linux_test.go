package origdst

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// withSyscallConn is a wrapper that passes its inner connection's
// SyscallConn through, which is all Get needs.
type withSyscallConn struct{ net.Conn }

func (w withSyscallConn) SyscallConn() (syscall.RawConn, error) {
	return w.Conn.(*net.TCPConn).SyscallConn()
}

// netns is a named network namespace that exists for one test; the test
// never touches the namespace it runs in.
type netns struct {
	t    *testing.T
	name string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that changes network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and redirect connections in it")
	}
	for _, bin := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (apt-get install iptables iproute2): %v", bin, err)
		}
	}
	b := make([]byte, 4)
	rand.Read(b)
	n := &netns{t: t, name: "rp-odst-" + hex.EncodeToString(b)}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here: ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	n.run("ip", "-n", n.name, "link", "set", "lo", "up")
	return n
}

func (n *netns) run(argv ...string) {
	n.t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// do runs fn on a thread that joined the namespace and is discarded after.
func (n *netns) do(fn func() error) error {
	f, err := os.Open("/run/netns/" + n.name)
	if err != nil {
		n.t.Fatal(err)
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// accept dials raddr from inside ns and returns the connection the
// listener accepted.
func accept(t *testing.T, ns *netns, l net.Listener, raddr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := ns.do(func() (err error) {
		c, err = net.DialTimeout("tcp", raddr, 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", raddr, err)
	}
	t.Cleanup(func() { c.Close() })
	l.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("accept (was %s redirected?): %v", raddr, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestGetRedirected redirects connections to 10.200.0.9:5432 and
// [fd20::9]:5432 to local listeners with iptables REDIRECT, inside a fresh
// namespace, and reads the original destination back.
func TestGetRedirected(t *testing.T) {
	ns := newNetns(t)
	// A route for the made-up destinations: a veth pair, both ends here.
	ns.run("ip", "-n", ns.name, "link", "add", "rpa", "type", "veth", "peer", "name", "rpb")
	ns.run("ip", "-n", ns.name, "addr", "add", "10.99.0.1/24", "dev", "rpa")
	ns.run("ip", "-n", ns.name, "link", "set", "rpa", "up")
	ns.run("ip", "-n", ns.name, "link", "set", "rpb", "up")
	ns.run("ip", "-n", ns.name, "route", "add", "10.200.0.0/24", "dev", "rpa")
	ns.run("ip", "netns", "exec", ns.name, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.200.0.9", "-j", "REDIRECT", "--to-ports", "15001")
	ns.run("ip", "netns", "exec", ns.name, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.200.0.10", "-j", "REDIRECT", "--to-ports", "15002")

	listen := func(network, addr string) net.Listener {
		var l net.Listener
		if err := ns.do(func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
			t.Fatalf("listen %s: %v", addr, err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	l4 := listen("tcp4", "127.0.0.1:15001") // AF_INET socket
	lds := listen("tcp", ":15002")          // dual-stack AF_INET6 socket

	want := netip.MustParseAddrPort("10.200.0.9:5432")
	c := accept(t, ns, l4, "10.200.0.9:5432")
	for _, conn := range []net.Conn{c, withSyscallConn{c}, tls.Server(c, &tls.Config{})} {
		got, err := Get(conn)
		if err != nil || got != want {
			t.Errorf("Get(%T) = %v, %v; want %v", conn, got, err, want)
		}
	}

	c = accept(t, ns, lds, "10.200.0.10:80")
	if got, err := Get(c); err != nil || got != netip.MustParseAddrPort("10.200.0.10:80") {
		t.Errorf("Get on a dual-stack socket (local %v) = %v, %v; want 10.200.0.10:80", c.LocalAddr(), got, err)
	}

	// Not redirected, in a namespace that tracks connections: the local
	// address itself.
	c = accept(t, ns, l4, "127.0.0.1:15001")
	if got, err := Get(c); err != nil || got != netip.MustParseAddrPort("127.0.0.1:15001") {
		t.Errorf("Get on a direct connection = %v, %v; want 127.0.0.1:15001", got, err)
	}

	t.Run("IPv6", func(t *testing.T) {
		if _, err := exec.LookPath("ip6tables"); err != nil {
			t.Skip("ip6tables not installed")
		}
		if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
			t.Skip("the kernel has no IPv6")
		}
		ns.run("ip", "-n", ns.name, "addr", "add", "fd99::1/64", "dev", "rpa", "nodad")
		ns.run("ip", "-n", ns.name, "route", "add", "fd20::/64", "dev", "rpa")
		ns.run("ip", "netns", "exec", ns.name, "ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "fd20::9", "-j", "REDIRECT", "--to-ports", "15003")
		l6 := listen("tcp6", "[::1]:15003")
		c := accept(t, ns, l6, "[fd20::9]:5432")
		want := netip.MustParseAddrPort("[fd20::9]:5432")
		for _, conn := range []net.Conn{c, withSyscallConn{c}} {
			if got, err := Get(conn); err != nil || got != want {
				t.Errorf("Get(%T) = %v, %v; want %v", conn, got, err, want)
			}
		}
	})
}

// TestGetUntracked: in a namespace without NAT the kernel has no record,
// and the error says what to check.
func TestGetUntracked(t *testing.T) {
	ns := newNetns(t)
	var l net.Listener
	if err := ns.do(func() (err error) { l, err = net.Listen("tcp4", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := accept(t, ns, l, l.Addr().String())
	got, err := Get(c)
	if err == nil {
		t.Skipf("this kernel tracks connections in a fresh namespace (Get = %v): nothing to test", got)
	}
	if !strings.Contains(err.Error(), "redirected by iptables") {
		t.Fatalf("Get on an untracked connection = %v, want the no-record error", err)
	}
}
