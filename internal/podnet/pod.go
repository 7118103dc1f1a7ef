//go:build linux

package podnet

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// StopGrace is how long Process.Stop waits after SIGTERM before SIGKILL.
const StopGrace = 3 * time.Second

// Pod is one network namespace attached to a Net's bridge.
type Pod struct {
	// Name is the pod's name, unique in its Net.
	Name string
	// IP is eth0's address.
	IP netip.Addr
	// NS is the network namespace's name, for `ip netns exec`.
	NS string

	net *Net
}

// Run runs fn on a goroutine locked to an OS thread that has entered the
// pod's network namespace, and returns fn's error (a panic in fn is
// re-raised here). Sockets fn creates belong to the pod's namespace for their
// whole life, whichever thread uses them later. Goroutines fn starts do not
// run in the pod. The thread is not returned to the pool: it exits with the
// goroutine.
func (p *Pod) Run(fn func() error) error {
	f, err := os.Open(filepath.Join(netnsDir, p.NS))
	if err != nil {
		return fmt.Errorf("podnet: pod %s: %w", p.Name, err)
	}
	defer f.Close()
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		// No UnlockOSThread, on purpose: the thread's namespace differs from
		// the rest of the process, so Go must destroy it with this goroutine.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- result{err: fmt.Errorf("podnet: pod %s: %w", p.Name, err)}
			return
		}
		defer home.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("podnet: pod %s: setns: %w", p.Name, err)}
			return
		}
		// Go cannot destroy the main thread; it parks it for good instead.
		// Going home first keeps a parked thread from pinning the pod's
		// namespace after its teardown.
		defer unix.Setns(int(home.Fd()), unix.CLONE_NEWNET)
		returned := false
		defer func() {
			if returned {
				return
			}
			if v := recover(); v != nil {
				done <- result{panicked: true, value: v}
				return
			}
			done <- result{err: fmt.Errorf("podnet: pod %s: fn called runtime.Goexit (t.FailNow?) inside Run", p.Name)}
		}()
		err = fn()
		returned = true
		done <- result{err: err}
	}()
	r := <-done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// DialContext dials from inside the pod. The host in addr must be an IP
// literal: a name would be resolved outside the pod, and Go may dial the
// addresses of a name from other goroutines.
func (p *Pod) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := checkLiteral(network, addr); err != nil {
		return nil, err
	}
	var c net.Conn
	err := p.Run(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the pod; the host in addr is empty or an IP literal.
// The listener is closed at the Net's teardown if the test has not closed it.
func (p *Pod) Listen(network, addr string) (net.Listener, error) {
	if err := checkLiteral(network, addr); err != nil {
		return nil, err
	}
	var l net.Listener
	err := p.Run(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	p.net.onClose(func() { l.Close() })
	return l, nil
}

// HTTPClient returns a client whose connections are dialed from inside the
// pod, for pod-to-pod HTTP: URLs name IP literals (http://10.x.y.z:port/).
// It ignores proxy environment variables and has no timeout of its own; use
// request contexts. Its idle connections are closed at the Net's teardown.
func (p *Pod) HTTPClient() *http.Client {
	tr := &http.Transport{
		DialContext:     p.DialContext,
		IdleConnTimeout: 30 * time.Second,
	}
	p.net.onClose(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func checkLiteral(network, addr string) error {
	host := addr
	switch {
	case strings.HasPrefix(network, "unix"):
		return nil
	case strings.HasPrefix(network, "tcp"), strings.HasPrefix(network, "udp"):
		h, _, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("podnet: %w", err)
		}
		host = h
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("podnet: %q: want an IP literal, not a name, inside a pod", addr)
	}
	return nil
}

// Command returns a command that runs name as root inside the pod's network
// namespace (`ip netns exec`). Standard streams are the caller's to set.
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return p.CommandAs(ctx, nil, name, args...)
}

// CommandAs is Command running name with cred's uid, gid and groups (cred.
// Groups empty clears supplementary groups unless cred.NoSetGroups), which
// drops root's capabilities. A nil cred means root. Setting the returned
// command's SysProcAttr.Credential instead would not work: `ip netns exec`
// itself needs root, so the switch happens after it, through setpriv.
func (p *Pod) CommandAs(ctx context.Context, cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	argv := []string{"netns", "exec", p.NS}
	if cred != nil {
		argv = append(argv, "setpriv",
			"--reuid="+strconv.FormatUint(uint64(cred.Uid), 10),
			"--regid="+strconv.FormatUint(uint64(cred.Gid), 10))
		switch {
		case cred.NoSetGroups:
			argv = append(argv, "--keep-groups")
		case len(cred.Groups) == 0:
			argv = append(argv, "--clear-groups")
		default:
			gs := make([]string, len(cred.Groups))
			for i, g := range cred.Groups {
				gs[i] = strconv.FormatUint(uint64(g), 10)
			}
			argv = append(argv, "--groups="+strings.Join(gs, ","))
		}
		argv = append(argv, "--")
	}
	argv = append(argv, name)
	argv = append(argv, args...)
	return exec.CommandContext(ctx, "ip", argv...)
}

// Start starts a long-running command as root in the pod (see StartAs).
func (p *Pod) Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	return p.StartAs(t, nil, name, args...)
}

// StartAs starts a long-running command in the pod, as cred (nil: root), in
// a process group of its own. Its stdout and stderr go to one buffer (see
// Process.Output), logged if the test fails. At cleanup it is stopped with
// Process.Stop. It fails the test if the command cannot start.
func (p *Pod) StartAs(t testing.TB, cred *syscall.Credential, name string, args ...string) *Process {
	t.Helper()
	// Not CommandContext(t.Context()): that would SIGKILL before Stop's
	// SIGTERM. Not Pdeathsig either: it fires when the starting *thread*
	// exits, and threads that ran Pod.Run do exit.
	cmd := p.CommandAs(context.Background(), cred, name, args...)
	pr := &Process{Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &pr.out, &pr.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = StopGrace // if a grandchild escapes the group holding the pipe
	if err := cmd.Start(); err != nil {
		t.Fatalf("podnet: pod %s: start %s: %v", p.Name, name, err)
	}
	go func() {
		pr.err = cmd.Wait()
		close(pr.done)
	}()
	what := strings.Join(append([]string{name}, args...), " ")
	t.Cleanup(func() {
		pr.Stop()
		if t.Failed() {
			t.Logf("podnet: pod %s: %q (%v), output:\n%s", p.Name, what, pr.err, pr.Output())
		}
	})
	return pr
}

// Process is a command started with Pod.Start.
type Process struct {
	// Cmd is the running command; do not call Wait on it.
	Cmd *exec.Cmd

	out      syncBuffer
	done     chan struct{}
	err      error // Cmd.Wait's, set before done is closed
	stopOnce sync.Once
}

// Output returns what the process has written to stdout and stderr so far.
func (pr *Process) Output() string { return pr.out.String() }

// Done is closed when the process has exited.
func (pr *Process) Done() <-chan struct{} { return pr.done }

// Wait waits for the process to exit and returns Cmd.Wait's error.
func (pr *Process) Wait() error {
	<-pr.done
	return pr.err
}

// Stop sends SIGTERM to the process group, SIGKILL after StopGrace, and waits
// for the exit. It is idempotent; Wait has the exit status.
func (pr *Process) Stop() {
	pr.stopOnce.Do(func() {
		select {
		case <-pr.done:
			return
		default:
		}
		pgid := pr.Cmd.Process.Pid
		_ = unix.Kill(-pgid, unix.SIGTERM)
		timer := time.NewTimer(StopGrace)
		defer timer.Stop()
		select {
		case <-pr.done:
		case <-timer.C:
			_ = unix.Kill(-pgid, unix.SIGKILL)
			<-pr.done
		}
	})
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
