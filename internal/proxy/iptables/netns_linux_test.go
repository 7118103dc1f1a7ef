package iptables

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// netns is a named network namespace that exists for one test. Tests that
// touch the kernel do everything inside such namespaces and never modify
// the namespace the test process runs in.
type netns struct {
	t    *testing.T
	name string
}

// needKernel skips the test unless it can create network namespaces and
// run iptables: root, iproute2 and the iptables binaries.
func needKernel(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that changes network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and change iptables in them")
	}
	for _, bin := range []string{"ip", "iptables-save", "iptables-restore"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (apt-get install iptables iproute2): %v", bin, err)
		}
	}
}

// newNetns creates a fresh named network namespace with lo up, deleted
// when the test ends.
func newNetns(t *testing.T) *netns {
	t.Helper()
	needKernel(t)
	b := make([]byte, 4)
	rand.Read(b)
	n := &netns{t: t, name: "rp-ipt-" + hex.EncodeToString(b)}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here: ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	n.ip("link", "set", "lo", "up")
	return n
}

// ip runs ip -n NAME args.
func (n *netns) ip(args ...string) {
	n.t.Helper()
	n.cmd(append([]string{"ip", "-n", n.name}, args...)...)
}

// exec runs a command inside the namespace and returns its output.
func (n *netns) exec(args ...string) string {
	n.t.Helper()
	return n.cmd(append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

func (n *netns) cmd(argv ...string) string {
	n.t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// runner runs the iptables tools inside the namespace.
func (n *netns) runner() Runner { return ExecRunner("ip", "netns", "exec", n.name) }

// do runs fn on an OS thread that has joined the namespace, so that the
// sockets fn creates (listeners, dials) belong to it; sockets keep their
// namespace when used from other goroutines afterwards. The thread is
// thrown away after fn: the goroutine exits still locked to it.
func (n *netns) do(fn func() error) error {
	n.t.Helper()
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
