package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is one long-running process the benchmark started: a backend, a
// proxy, a controller.
type child struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once waited for
	err     error         // set before done is closed
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// exitErr describes an unexpected exit of c with the end of its log.
func (c *child) exitErr() error {
	how := "exit status 0"
	if c.err != nil {
		how = c.err.Error()
	}
	return fmt.Errorf("%s exited unexpectedly (%s); the end of its log %s:\n%s", c.name, how, c.logPath, tailFile(c.logPath, 15))
}

// supervisor starts the benchmark's processes and stops them all. Each
// child runs in its own process group, so that a Ctrl-C reaches only the
// benchmark, which then stops them; Pdeathsig kills a child if the
// benchmark dies without stopping it.
type supervisor struct {
	mu       sync.Mutex
	children []*child
	stopping bool
}

// start runs argv, with extra environment variables env, its output going
// to a new file at logPath.
func (s *supervisor) start(name string, argv, env []string, logPath string) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c := &child{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, errors.New("stopping")
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s.children = append(s.children, c)
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// dead returns an error for the first child that has exited, if any.
func (s *supervisor) dead() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.children {
		if c.exited() {
			return c.exitErr()
		}
	}
	return nil
}

// stop ends the children in the reverse order of their start, so that the
// proxies go before their controller and the backends last: SIGTERM to
// each process group, SIGKILL when it is still there after a grace period.
// It returns once every child has been waited for. It is idempotent.
func (s *supervisor) stop() {
	s.mu.Lock()
	s.stopping = true
	children := slices.Clone(s.children)
	s.mu.Unlock()
	slices.Reverse(children)
	for _, c := range children {
		if !c.exited() {
			_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
			select {
			case <-c.done:
			case <-time.After(stopGrace):
			}
		}
		// Also whatever the child left in its group (nginx workers).
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
}

// stopGrace is how long a child may take to exit after SIGTERM.
const stopGrace = 3 * time.Second

// tailFile returns the last n lines of a file, indented, or a note that it
// is empty or unreadable.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "    (unreadable: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "    (empty)"
	}
	return "    " + strings.Join(lines, "\n    ")
}

// portAllocator hands out consecutive loopback ports from a base, each
// checked free when handed out, or ports the kernel picks when base is 0.
type portAllocator struct {
	next int
}

func (a *portAllocator) take(what string) (int, error) {
	if a.next == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free loopback port for %s: %w", what, err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	for a.next <= 65535 {
		p := a.next
		a.next++
		if err := portFree(p); err != nil {
			return 0, fmt.Errorf("port %d (for %s) is taken: %w; stop what holds it or pick other ports with -base-port (0 lets the kernel choose)", p, what, err)
		}
		return p, nil
	}
	return 0, fmt.Errorf("no port left for %s below 65536: lower -base-port", what)
}

// portFree reports whether 127.0.0.1:p can be listened on now.
func portFree(p int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return err
	}
	return l.Close()
}

// The Linux clock tick of /proc/<pid>/stat's utime and stime (USER_HZ),
// fixed at 100 by the kernel's ABI on every architecture Rampart supports.
const clockTicksPerSecond = 100

// procStat is what the benchmark reads from /proc/<pid>/stat.
type procStat struct {
	pid          int
	comm         string
	ppid         int
	utime, stime uint64 // clock ticks
}

// parseProcStat parses the text of /proc/<pid>/stat. The command name, in
// parentheses, may itself hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseProcStat(text string) (procStat, error) {
	lp, rp := strings.IndexByte(text, '('), strings.LastIndexByte(text, ')')
	if lp < 0 || rp < lp {
		return procStat{}, fmt.Errorf("proc stat: no (comm) in %q", truncate(text, 80))
	}
	var st procStat
	var err error
	if st.pid, err = strconv.Atoi(strings.TrimSpace(text[:lp])); err != nil {
		return procStat{}, fmt.Errorf("proc stat: pid: %w", err)
	}
	st.comm = text[lp+1 : rp]
	// After ") ": state(3) ppid(4) pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime(14) stime(15) ...
	f := strings.Fields(text[rp+1:])
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(f))
	}
	if st.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("proc stat: ppid: %w", err)
	}
	if st.utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("proc stat: utime: %w", err)
	}
	if st.stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("proc stat: stime: %w", err)
	}
	return st, nil
}

// cpuSeconds is the CPU time of a process, user and system, in seconds.
func (s procStat) cpuSeconds() float64 {
	return float64(s.utime+s.stime) / clockTicksPerSecond
}

// parseVmRSS returns VmRSS from the text of /proc/<pid>/status, in bytes.
func parseVmRSS(text string) (uint64, error) {
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("proc status: VmRSS line %q: want <n> kB", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc status: VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("proc status: no VmRSS line (a kernel thread, or a process that exited?)")
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(string(b))
}

func readVmRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// processTree returns root and all its descendants: an nginx master and its
// workers. It scans /proc once.
func processTree(root int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	parent := make(map[int]int)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		parent[pid] = st.ppid
	}
	return descendants(root, parent), nil
}

// descendants returns root followed by every pid whose chain of parents
// leads to root, in increasing pid order.
func descendants(root int, parent map[int]int) []int {
	in := map[int]bool{root: true}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if !in[pid] && in[pp] {
				in[pid], changed = true, true
			}
		}
	}
	out := []int{root}
	for pid := range in {
		if pid != root {
			out = append(out, pid)
		}
	}
	slices.Sort(out[1:])
	return out
}

// usage is the CPU time and memory of one proxy (a process and its
// children) at one moment.
type usage struct {
	cpuSeconds float64
	rssBytes   uint64
}

func readUsage(root int) (usage, error) {
	pids, err := processTree(root)
	if err != nil {
		return usage{}, err
	}
	var u usage
	for _, pid := range pids {
		st, err := readProcStat(pid)
		if err != nil {
			return usage{}, fmt.Errorf("reading /proc/%d/stat: %w", pid, err)
		}
		rss, err := readVmRSS(pid)
		if err != nil {
			return usage{}, fmt.Errorf("reading /proc/%d/status: %w", pid, err)
		}
		u.cpuSeconds += st.cpuSeconds()
		u.rssBytes += rss
	}
	return u, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// firstLine returns the first non-empty line of b, for version strings.
func firstLine(b []byte) string {
	for line := range bytes.Lines(b) {
		if l := strings.TrimSpace(string(line)); l != "" {
			return l
		}
	}
	return ""
}
