package demo

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newTestSupervisor(t *testing.T, stopTimeout time.Duration) *supervisor {
	t.Helper()
	s := newSupervisor(testLogger(t), stopTimeout)
	t.Cleanup(s.stop)
	return s
}

// testLogger logs at debug level through t.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter logs through t.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func startFake(t *testing.T, s *supervisor, name string, stage int, mode string) *child {
	t.Helper()
	c, err := s.start(name, stage, []string{os.Args[0], "fake-child", mode}, filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitLog waits until c's log contains want.
func waitLog(t *testing.T, c *child, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(c.logPath)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged %q; its log:\n%s", c.name, want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	// A zombie nobody reaped yet is gone too.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}

func TestSupervisorStop(t *testing.T) {
	// A generous timeout: SIGTERM must be enough, even on a busy machine.
	s := newTestSupervisor(t, 30*time.Second)
	cs := []*child{startFake(t, s, "first", 0, "serve"), startFake(t, s, "last", 2, "serve")}
	for _, c := range cs {
		waitLog(t, c, "serving")
	}
	s.stop()
	for _, c := range cs {
		if !c.exited() {
			t.Errorf("%s still running after stop", c.name)
		}
		if c.err != nil {
			t.Errorf("%s: %v, want a clean exit on SIGTERM", c.name, c.err)
		}
		waitLog(t, c, "bye")
	}
	select {
	case c := <-s.exited:
		t.Errorf("%s reported as an unexpected exit during stop", c.name)
	default:
	}
	s.stop() // idempotent
	if _, err := s.start("late", 0, []string{os.Args[0], "fake-child", "serve"}, filepath.Join(t.TempDir(), "late.log")); !errors.Is(err, errStopping) {
		t.Errorf("start after stop: %v, want errStopping", err)
	}
}

func TestSupervisorKillsStubborn(t *testing.T) {
	s := newTestSupervisor(t, 500*time.Millisecond)
	c := startFake(t, s, "stubborn", 1, "stubborn")
	waitLog(t, c, "ignoring SIGTERM")
	start := time.Now()
	s.stop()
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("stop took %v", d)
	}
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("stubborn: %v, want killed by SIGKILL", c.err)
	}
}

func TestSupervisorStopsInStages(t *testing.T) {
	s := newTestSupervisor(t, 5*time.Second)
	// The controller stage must outlive the load stage: record exit order.
	var order []string
	cs := []*child{
		startFake(t, s, "controller", stageController, "serve"),
		startFake(t, s, "proxy", stageMesh, "serve"),
		startFake(t, s, "loadgen", stageLoad, "serve"),
	}
	for _, c := range cs {
		waitLog(t, c, "serving")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.stop()
	}()
	for len(order) < len(cs) {
		for _, c := range cs {
			if c.exited() && !contains(order, c.name) {
				order = append(order, c.name)
			}
		}
		time.Sleep(time.Millisecond)
	}
	<-done
	if want := []string{"loadgen", "proxy", "controller"}; strings.Join(order, ",") != strings.Join(want, ",") {
		t.Errorf("exit order %q, want %q", order, want)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func TestSupervisorUnexpectedExit(t *testing.T) {
	s := newTestSupervisor(t, time.Second)
	startFake(t, s, "crasher", 0, "crash")
	var c *child
	select {
	case c = <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("no exit reported")
	}
	err := s.exitErr(c)
	msg := err.Error()
	for _, want := range []string{"crasher exited unexpectedly (exit status 3)", "crasher.log:\n", "    line 11\n", "    line 30"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "line 10\n") {
		t.Errorf("error %q quotes more than %d lines", msg, tailLines)
	}
}

func TestSupervisorKillsLeftovers(t *testing.T) {
	s := newTestSupervisor(t, 5*time.Second)
	c := startFake(t, s, "spawner", 0, "spawn")
	log := waitLog(t, c, "grandchild ")
	m := regexp.MustCompile(`grandchild (\d+)`).FindStringSubmatch(log)
	pid, _ := strconv.Atoi(m[1])
	s.stop()
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("grandchild %d survived stop", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTail(t *testing.T) {
	var long strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&long, "l%d\n", i)
	}
	tests := []struct {
		name, content string
		n             int
		want          string
	}{
		{"empty", "", 3, ""},
		{"only newlines", "\n\n", 3, ""},
		{"fewer lines", "a\nb\n", 3, "a\nb"},
		{"no final newline", "a\nb\nc\nd", 3, "b\nc\nd"},
		{"more lines", long.String(), 2, "l99\nl100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := tail(path, tt.n); got != tt.want {
				t.Errorf("tail = %q, want %q", got, tt.want)
			}
		})
	}
	if got := tail(filepath.Join(t.TempDir(), "missing"), 3); !strings.HasPrefix(got, "(cannot read") {
		t.Errorf("tail of a missing file = %q", got)
	}
}
