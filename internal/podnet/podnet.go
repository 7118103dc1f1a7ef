//go:build linux

package podnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireEnv names the environment variable that, set to 1, turns a skip for
// lack of network namespaces into a failure, so CI cannot silently skip.
const RequireEnv = "RAMPART_REQUIRE_NETNS"

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/var/run/netns"

// prefix starts the name of every namespace this package creates; the
// creator's pid follows it: rp-<pid>-<net>-<pod>.
const prefix = "rp-"

// ipTimeout bounds a single `ip` invocation.
const ipTimeout = 30 * time.Second

// Net is one simulated node: a private network namespace holding a bridge,
// with pods attached to it. Its fields are set by New and read-only.
type Net struct {
	// ID is the prefix of every namespace of this Net, e.g. rp-4242-3f1a.
	ID string
	// NodeNS is the name of the namespace holding the bridge; it is ID
	// itself, and a pod's namespace is ID-<pod name>.
	NodeNS string
	// Subnet is the pods' /24, within 10.0.0.0/8 but outside 10.0.0.0/16.
	Subnet netip.Prefix
	// Gateway is the bridge's address, every pod's default route.
	Gateway netip.Addr

	t testing.TB

	mu         sync.Mutex
	closed     bool
	pods       map[string]*Pod
	nextHost   int      // last octet of the next pod address
	namespaces []string // created, in creation order
	closers    []func() // listeners and transports to close before deleting
}

// inUse holds the IDs and subnets of this process's live Nets so that two of
// them never share either. Nets are isolated from each other anyway (each has
// its own bridge in its own namespace); distinct subnets keep logs readable
// and make a misrouted address fail loudly.
var inUse = struct {
	sync.Mutex
	ids     map[string]bool
	subnets map[netip.Prefix]bool
}{ids: map[string]bool{}, subnets: map[netip.Prefix]bool{}}

// New creates a Net for the test and registers its teardown with t.Cleanup:
// processes started with Pod.Start are stopped first (their cleanups run
// earlier), then listeners and HTTP transports made through pods are closed
// and every namespace is deleted, pods in reverse order, then the node. It
// skips the test when Available reports a problem (see RequireOrSkip) and
// fails it when setup fails.
func New(t testing.TB) *Net {
	t.Helper()
	RequireOrSkip(t)
	n := &Net{t: t, pods: map[string]*Pod{}, nextHost: 2}
	n.ID, n.Subnet = reserve()
	n.NodeNS = n.ID
	n.Gateway = n.Subnet.Addr().Next()
	// Registered before anything exists, so a failure halfway is undone.
	t.Cleanup(func() {
		if err := n.close(); err != nil {
			t.Errorf("podnet: teardown: %v", err)
		}
	})
	if err := n.setup(); err != nil {
		t.Fatalf("podnet: %v", err)
	}
	return n
}

func reserve() (string, netip.Prefix) {
	inUse.Lock()
	defer inUse.Unlock()
	pid := os.Getpid()
	for {
		id := fmt.Sprintf("%s%d-%04x", prefix, pid, rand.N(0x10000))
		// 10.X.Y.0/24 with X in [1, 255] keeps clear of 10.0.0.0/16.
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + rand.N(255)), byte(rand.N(256)), 0}), 24)
		if inUse.ids[id] || inUse.subnets[subnet] {
			continue
		}
		inUse.ids[id], inUse.subnets[subnet] = true, true
		return id, subnet
	}
}

func (n *Net) setup() error {
	if err := n.addNS(n.NodeNS); err != nil {
		return err
	}
	return ipBatch(n.NodeNS,
		"link set lo up",
		// With STP off (the default) ports forward at once; forward_delay 0
		// makes that explicit.
		"link add br0 type bridge forward_delay 0",
		fmt.Sprintf("addr add %s/%d dev br0", n.Gateway, n.Subnet.Bits()),
		"link set br0 up",
	)
}

// addNS creates a named namespace and records it for teardown.
func (n *Net) addNS(name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("net already torn down")
	}
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	n.namespaces = append(n.namespaces, name)
	return nil
}

var podName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// AddPod creates a pod: a namespace with lo up and an eth0 (one end of a veth
// pair whose other end is a port of the node's bridge) holding the next free
// address of the subnet, with a default route via the Gateway so that a
// connect() to any address, a service virtual IP included, is routed out of
// eth0. The name is a DNS label of at most 32 characters, unique in the Net.
// It fails the test on error, so call it from the test's goroutine.
func (n *Net) AddPod(name string) *Pod {
	n.t.Helper()
	p, err := n.addPod(name)
	if err != nil {
		n.t.Fatalf("podnet: add pod %q: %v", name, err)
	}
	return p
}

func (n *Net) addPod(name string) (*Pod, error) {
	if !podName.MatchString(name) {
		return nil, errors.New("name must be a DNS label of at most 32 characters")
	}
	n.mu.Lock()
	if n.pods[name] != nil {
		n.mu.Unlock()
		return nil, errors.New("a pod of that name exists")
	}
	host := n.nextHost
	if host > 254 {
		n.mu.Unlock()
		return nil, errors.New("subnet full (253 pods)")
	}
	n.nextHost++
	a := n.Subnet.Addr().As4()
	a[3] = byte(host)
	p := &Pod{Name: name, IP: netip.AddrFrom4(a), NS: n.ID + "-" + name, net: n}
	n.pods[name] = p
	n.mu.Unlock()

	if err := n.addNS(p.NS); err != nil {
		return nil, err
	}
	// Both ends are created from the node namespace, eth0 straight into the
	// pod's: no interface ever exists in the root namespace, and the names
	// need not be unique on the machine.
	veth := "veth" + strconv.Itoa(host)
	if err := ipBatch(n.NodeNS,
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", veth, p.NS),
		fmt.Sprintf("link set %s master br0 up", veth),
	); err != nil {
		return nil, err
	}
	if err := ipBatch(p.NS,
		"link set lo up",
		fmt.Sprintf("addr add %s/%d dev eth0", p.IP, n.Subnet.Bits()),
		"link set eth0 up",
		fmt.Sprintf("route add default via %s dev eth0", n.Gateway),
	); err != nil {
		return nil, err
	}
	return p, nil
}

// onClose registers f to run at teardown, before the namespaces go. After
// teardown it runs f at once.
func (n *Net) onClose(f func()) {
	n.mu.Lock()
	if !n.closed {
		n.closers = append(n.closers, f)
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	f()
}

// close tears the Net down; it is idempotent.
func (n *Net) close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	closers, namespaces := n.closers, n.namespaces
	n.mu.Unlock()

	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	var err error
	if len(namespaces) > 0 {
		lines := make([]string, 0, len(namespaces))
		for i := len(namespaces) - 1; i >= 0; i-- {
			lines = append(lines, "netns del "+namespaces[i])
		}
		// -force: carry on past a failed line and report at the end.
		err = run("ip", []string{"-force", "-batch", "-"}, strings.Join(lines, "\n")+"\n")
	}
	inUse.Lock()
	delete(inUse.ids, n.ID)
	delete(inUse.subnets, n.Subnet)
	inUse.Unlock()
	return err
}

// Available reports why the harness cannot run here (not Linux, not root,
// no `ip`, no network namespaces), or nil. The answer is computed once, by
// creating and deleting a namespace.
func Available() error { return available() }

var available = sync.OnceValue(func() error {
	if runtime.GOOS != "linux" {
		return errors.New("podnet: network namespaces need Linux")
	}
	if os.Geteuid() != 0 {
		return errors.New("podnet: needs root to create network namespaces; run the end-to-end tests as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("podnet: needs the ip command; install iproute2")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("podnet: the kernel does not support network namespaces: %w", err)
	}
	probe := fmt.Sprintf("%s%d-probe%04x", prefix, os.Getpid(), rand.N(0x10000))
	if err := ip("netns", "add", probe); err != nil {
		return fmt.Errorf("podnet: cannot create a network namespace: %w", err)
	}
	if err := ip("netns", "del", probe); err != nil {
		return fmt.Errorf("podnet: cannot delete a network namespace: %w", err)
	}
	return nil
})

// RequireOrSkip skips the test when Available reports a problem, or fails it
// when RAMPART_REQUIRE_NETNS=1.
func RequireOrSkip(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%v (and %s=1 forbids skipping)", err, RequireEnv)
	}
	t.Skip(err)
}

// Sweep deletes namespaces left by earlier runs that crashed before their
// teardown: those named rp-<pid>-... whose creator pid is no longer running.
// It never touches another name, nor a namespace of a live process (this one
// included). It returns the names it deleted.
func Sweep() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("podnet: sweep: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		pid, ok := creator(e.Name())
		if !ok || pid == os.Getpid() || alive(pid) {
			continue
		}
		if err := ip("netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("podnet: sweep: %w", err)
	}
	return removed, nil
}

// creator parses the pid out of rp-<pid>-....
func creator(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil || pid <= 1 || strconv.Itoa(pid) != digits {
		return 0, false
	}
	return pid, true
}

// alive reports whether a process with this pid exists (in doubt, yes).
func alive(pid int) bool {
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// ip runs one `ip` command.
func ip(args ...string) error { return run("ip", args, "") }

// ipBatch runs commands in one `ip -n ns -batch -`.
func ipBatch(ns string, lines ...string) error {
	return run("ip", []string{"-n", ns, "-batch", "-"}, strings.Join(lines, "\n")+"\n")
}

func run(name string, args []string, stdin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		what := strings.Join(cmd.Args, " ")
		if stdin != "" {
			what += " <<< " + strings.ReplaceAll(strings.TrimSpace(stdin), "\n", "; ")
		}
		return fmt.Errorf("%s: %w: %s", what, err, strings.TrimSpace(out.String()))
	}
	return nil
}
