//go:build linux

package podnet

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serveHello answers each connection on l with "hello from <name> to <peer IP>".
func serveHello(t *testing.T, l net.Listener, name string) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			peer := c.RemoteAddr().(*net.TCPAddr).IP
			fmt.Fprintf(c, "hello from %s to %s\n", name, peer)
			c.Close()
		}
	})
}

func dialHello(ctx context.Context, from *Pod, to netip.AddrPort) (string, error) {
	c, err := from.DialContext(ctx, "tcp", to.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func listenPort(t *testing.T, p *Pod) (net.Listener, netip.AddrPort) {
	t.Helper()
	l, err := p.Listen("tcp", netip.AddrPortFrom(p.IP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	return l, l.Addr().(*net.TCPAddr).AddrPort()
}

func TestPodToPodTCP(t *testing.T) {
	n := New(t)
	a, b := n.AddPod("a"), n.AddPod("b")
	l, addr := listenPort(t, a)
	serveHello(t, l, "a")

	got, err := dialHello(t.Context(), b, addr)
	if err != nil {
		t.Fatal(err)
	}
	// The server saw pod B's own address: the bytes crossed the bridge.
	if want := fmt.Sprintf("hello from a to %s", b.IP); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPodToPodHTTP(t *testing.T) {
	n := New(t)
	server, client := n.AddPod("server"), n.AddPod("client")
	l, addr := listenPort(t, server)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "caller %s", r.RemoteAddr)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr.String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "caller " + client.IP.String() + ":"; !strings.HasPrefix(string(body), want) {
		t.Errorf("body %q, want prefix %q", body, want)
	}
}

func TestCommandSeesItsOwnNetwork(t *testing.T) {
	n := New(t)
	a, b := n.AddPod("a"), n.AddPod("b")
	out, err := a.Command(t.Context(), "ip", "-o", "addr").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), " "+a.IP.String()+"/24 ") {
		t.Errorf("pod a does not show its address %s:\n%s", a.IP, out)
	}
	if strings.Contains(string(out), " "+b.IP.String()+"/") {
		t.Errorf("pod a shows pod b's address %s:\n%s", b.IP, out)
	}

	// A connect() to an arbitrary address, say a service VIP, has a route.
	out, err = a.Command(t.Context(), "ip", "route", "get", "198.51.100.7").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "via " + n.Gateway.String() + " dev eth0"; !strings.Contains(string(out), want) {
		t.Errorf("route to a VIP: got %q, want %q", out, want)
	}
}

func TestCommandAs(t *testing.T) {
	n := New(t)
	p := n.AddPod("p")
	out, err := p.CommandAs(t.Context(), &syscall.Credential{Uid: 65534, Gid: 65533}, "sh", "-c", "id -u; id -g; id -G").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got, want := strings.Fields(string(out)), []string{"65534", "65533", "65533"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("uid, gid, groups: got %q, want %q", got, want)
	}
}

func TestStart(t *testing.T) {
	n := New(t)
	a, b := n.AddPod("a"), n.AddPod("b")
	l, addr := listenPort(t, a)
	serveHello(t, l, "a")

	// A long-running shell, as an unprivileged user, in pod b.
	pr := b.StartAs(t, &syscall.Credential{Uid: 65534, Gid: 65534},
		"sh", "-c", "id -u; ip -o -4 addr show dev eth0; echo ready; sleep 60")
	waitFor(t, pr, "ready")
	if out := pr.Output(); !strings.HasPrefix(out, "65534\n") || !strings.Contains(out, b.IP.String()) {
		t.Errorf("output %q: want uid 65534 and address %s", out, b.IP)
	}
	if _, err := dialHello(t.Context(), b, addr); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	pr.Stop()
	if d := time.Since(start); d > StopGrace/2 {
		t.Errorf("Stop took %v; SIGTERM to the group should end sh and sleep at once", d)
	}
	if err := pr.Wait(); err == nil {
		t.Error("Wait after Stop: nil error, want the signal")
	}
	pr.Stop() // idempotent
}

func waitFor(t *testing.T, pr *Process, s string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(pr.Output(), s) {
		select {
		case <-pr.Done():
			t.Fatalf("process exited (%v) before printing %q: %s", pr.Wait(), s, pr.Output())
		case <-deadline:
			t.Fatalf("no %q after 10s: %s", s, pr.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestRunEntersThePodAndLeavesNoThreadBehind(t *testing.T) {
	n := New(t)
	p := n.AddPod("p")
	want := nsInode(t, filepath.Join(netnsDir, p.NS))
	for range 20 {
		err := p.Run(func() error {
			if got := nsInode(t, "/proc/thread-self/ns/net"); got != want {
				return fmt.Errorf("thread in netns %d, want %d", got, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Run(func() error { return io.EOF }); err != io.EOF {
		t.Errorf("Run returned %v, want fn's error", err)
	}
	if err := p.Run(func() error { runtime.Goexit(); return nil }); err == nil {
		t.Error("Run of a fn that called Goexit: nil error")
	}
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want fn's panic", v)
			}
		}()
		p.Run(func() error { panic("boom") })
	}()

	// No thread of the pool was left in the pod's namespace.
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if got := nsInode(t, "/proc/thread-self/ns/net"); got != home {
				t.Errorf("a pool thread is in netns %d, want %d", got, home)
			}
		})
	}
	wg.Wait()
}

// home is the process's network namespace, read before any test ran. (Later,
// /proc/self names the main thread, which Run may have parked.)
var home = func() uint64 {
	fi, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}()

func nsInode(t *testing.T, path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestDialRejectsNames(t *testing.T) {
	n := New(t)
	p := n.AddPod("p")
	if _, err := p.DialContext(t.Context(), "tcp", "localhost:80"); err == nil {
		t.Error("dialing a name: nil error")
	}
}

func TestCleanupLeavesNothing(t *testing.T) {
	var n *Net
	t.Run("use", func(t *testing.T) {
		n = New(t)
		a := n.AddPod("a")
		n.AddPod("b")
		l, err := a.Listen("tcp", ":0") // left open: teardown closes it
		if err != nil {
			t.Fatal(err)
		}
		_ = l
		// Nothing of this Net is visible from the root namespace.
		out, err := exec.Command("ip", "-o", "addr").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if sub := "inet " + strings.TrimSuffix(n.Subnet.Addr().String(), "0"); strings.Contains(string(out), sub) {
			t.Errorf("root namespace shows the pods' subnet %s:\n%s", n.Subnet, out)
		}
	})
	if n == nil {
		t.FailNow()
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.Contains(string(out), n.ID) {
		t.Errorf("after teardown, ip netns list still shows %s:\n%s", n.ID, out)
	}
}

func TestNetsDoNotCollide(t *testing.T) {
	RequireOrSkip(t)
	var mu sync.Mutex
	ids, subnets := map[string]bool{}, map[netip.Prefix]bool{}
	t.Run("group", func(t *testing.T) {
		for i := range 4 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				n := New(t)
				mu.Lock()
				ids[n.ID], subnets[n.Subnet] = true, true
				mu.Unlock()
				// The same pod names in every Net.
				a, b := n.AddPod("a"), n.AddPod("b")
				l, addr := listenPort(t, a)
				serveHello(t, l, "a")
				if _, err := dialHello(t.Context(), b, addr); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
	if len(ids) != 4 || len(subnets) != 4 {
		t.Errorf("4 Nets had %d IDs and %d subnets: %v %v", len(ids), len(subnets), ids, subnets)
	}
}

func TestNetsAreIsolated(t *testing.T) {
	n1, n2 := New(t), New(t)
	a, other := n1.AddPod("a"), n2.AddPod("a")
	l, addr := listenPort(t, other)
	serveHello(t, l, "other")
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if got, err := dialHello(ctx, a, addr); err == nil {
		t.Errorf("a pod of one Net reached a pod of another: %q", got)
	}
}

func TestSweep(t *testing.T) {
	RequireOrSkip(t)
	// A pid that is dead: a process that has exited and been reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("%s%d-sweep", prefix, cmd.Process.Pid)
	mine := fmt.Sprintf("%s%d-sweep", prefix, os.Getpid())
	notOurs := "rpx-1-sweep"
	for _, ns := range []string{dead, mine, notOurs} {
		if err := ip("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ip("netns", "del", ns) })
	}
	removed, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if !containsString(removed, dead) {
		t.Errorf("Sweep removed %v, want %s among them", removed, dead)
	}
	for _, ns := range []string{mine, notOurs} {
		if containsString(removed, ns) {
			t.Errorf("Sweep removed %s", ns)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			t.Errorf("%s is gone: %v", ns, err)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCreator(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"rp-4242-3f1a", 4242, true},
		{"rp-4242-3f1a-client", 4242, true},
		{"rp-4242", 0, false},
		{"rp-1-x", 0, false},
		{"rp-04242-x", 0, false},
		{"rp-abc-x", 0, false},
		{"rpx-4242-x", 0, false},
		{"cni-4242-x", 0, false},
	}
	for _, tt := range tests {
		pid, ok := creator(tt.name)
		if pid != tt.pid || ok != tt.ok {
			t.Errorf("creator(%q) = %d, %v; want %d, %v", tt.name, pid, ok, tt.pid, tt.ok)
		}
	}
}

func BenchmarkAddPod(b *testing.B) {
	n := New(b)
	for i := 0; b.Loop(); i++ {
		if i > 250 {
			b.Fatal("subnet full; run with -benchtime=200x or less")
		}
		n.AddPod(fmt.Sprint("p", i))
	}
}
