package app

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func needSh(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
}

// waitDone fails the test if the app has not exited within a minute.
func waitDone(t *testing.T, a *App) {
	t.Helper()
	select {
	case <-a.Done():
	case <-time.After(time.Minute):
		t.Fatalf("%v did not exit", a)
	}
}

func start(t *testing.T, cfg Config) *App {
	t.Helper()
	a, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		_ = a.Signal(syscall.SIGKILL)
		<-a.Done()
	})
	return a
}

func TestExitCode(t *testing.T) {
	needSh(t)
	var out bytes.Buffer
	a := start(t, Config{Argv: []string{"sh", "-c", "echo hello; exit 3"}, Stdout: &out})
	waitDone(t, a)
	if got := a.ExitCode(); got != 3 {
		t.Errorf("ExitCode = %d, want 3", got)
	}
	if out.String() != "hello\n" {
		t.Errorf("stdout %q, want hello", out.String())
	}
	if !strings.Contains(a.String(), "exit status 3") {
		t.Errorf("String = %q", a.String())
	}
}

func TestSignalIsForwarded(t *testing.T) {
	needSh(t)
	// The app says when its trap is set, then exits 7 on SIGTERM.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := start(t, Config{Argv: []string{"sh", "-c", `trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done`}, Stdout: w})
	w.Close()
	line := make([]byte, 6)
	if _, err := r.Read(line); err != nil || string(line) != "ready\n" {
		t.Fatalf("app did not start: %q %v", line, err)
	}
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDone(t, a)
	if got := a.ExitCode(); got != 7 {
		t.Errorf("ExitCode = %d, want 7 (the trap's)", got)
	}
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("Signal after exit: %v", err)
	}
}

func TestStop(t *testing.T) {
	needSh(t)
	a := start(t, Config{Argv: []string{"sleep", "60"}})
	a.Stop()
	if got := a.ExitCode(); got != 128+int(syscall.SIGTERM) {
		t.Errorf("ExitCode = %d, want %d", got, 128+int(syscall.SIGTERM))
	}
	a.Stop() // idempotent
}

func TestStopKillsAnAppThatIgnoresSIGTERM(t *testing.T) {
	needSh(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := start(t, Config{Argv: []string{"sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.05; done`}, Stdout: w, StopTimeout: 100 * time.Millisecond})
	w.Close()
	line := make([]byte, 6)
	if _, err := r.Read(line); err != nil {
		t.Fatal(err)
	}
	a.Stop()
	if got := a.ExitCode(); got != 128+int(syscall.SIGKILL) {
		t.Errorf("ExitCode = %d, want %d", got, 128+int(syscall.SIGKILL))
	}
}

func TestOwnProcessGroup(t *testing.T) {
	a := start(t, Config{Argv: []string{"sleep", "60"}})
	pgid, err := syscall.Getpgid(a.PID())
	if err != nil {
		t.Fatal(err)
	}
	if pgid != a.PID() || pgid == syscall.Getpgrp() {
		t.Errorf("app's process group %d, want its own (%d)", pgid, a.PID())
	}
	if got := os.Getpid(); parentOf(t, a.PID()) != got {
		t.Errorf("app's parent is not this process %d", got)
	}
}

func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{{}, {Argv: []string{""}}, {Argv: []string{"true"}, StopTimeout: -1}} {
		if _, err := Start(cfg); err == nil {
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
	if _, err := Start(Config{Argv: []string{"/nonexistent/app"}}); err == nil {
		t.Error("Start of a missing command succeeded")
	}
}
