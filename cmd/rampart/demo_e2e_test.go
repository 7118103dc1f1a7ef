package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/demo"
)

// envBinDir names the directory holding the real rampart-controller and
// rampart-proxy for TestDemoEndToEnd.
const envBinDir = "RAMPART_BIN_DIR"

// TestDemoEndToEnd runs `rampart demo` as a user does, against the real
// controller and proxy: it waits until every hop carries traffic with
// verified identities and no failure, then presses Ctrl-C and checks that
// the demo exits cleanly and leaves nothing listening. The test binary
// stands in for the rampart executable (see TestMain).
//
//	make build && RAMPART_BIN_DIR=$PWD/bin go test -race -run TestDemoEndToEnd -v ./cmd/rampart
func TestDemoEndToEnd(t *testing.T) {
	binDir := os.Getenv(envBinDir)
	if binDir == "" {
		t.Skipf("set %s to a directory holding %s and %s (make build puts them in ./bin) to run the demo end to end",
			envBinDir, demo.ControllerBinary, demo.ProxyBinary)
	}
	for _, b := range []string{demo.ControllerBinary, demo.ProxyBinary} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			t.Skipf("%s=%s: %v; build the binaries first (make build)", envBinDir, binDir, err)
		}
	}
	stateDir := t.TempDir()
	cmd := exec.Command(os.Args[0], "demo", "--bin-dir", binDir, "--state-dir", stateDir, "--interval", "1s", "--rate", "10")
	cmd.Env = append(os.Environ(), envRunCLI+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// One goroutine, owned by the test, reads the demo's output and then
	// waits for it: lines is closed when the demo closes its stdout, and
	// exited then receives how it exited.
	lines := make(chan string, 1024)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	var (
		out    strings.Builder
		closed bool // lines is closed
		done   bool // exited was received
	)
	defer func() {
		if !done {
			cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck // its children go with it (Pdeathsig)
			for !closed {
				_, ok := <-lines
				closed = !ok
			}
			<-exited
		}
		if t.Failed() {
			t.Logf("demo stdout:\n%s\ndemo stderr:\n%s", out.String(), stderr.String())
			logs, _ := filepath.Glob(filepath.Join(stateDir, "logs", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", l, lastLines(string(b), 30))
			}
		}
	}()

	// Read until one table shows traffic without failure on every hop.
	row := regexp.MustCompile(`^  (loadgen -> web|web -> orders|orders -> payments) +(\d+) +\S+ +(\S+) `)
	healthy := map[string]bool{}
	deadline := time.After(2 * time.Minute)
	for len(healthy) < 3 {
		select {
		case line, ok := <-lines:
			if !ok {
				closed, done = true, true
				t.Fatalf("the demo ended early: %v", <-exited)
			}
			out.WriteString(line + "\n")
			if strings.Contains(line, "traffic in the last") {
				clear(healthy)
			}
			if m := row.FindStringSubmatch(line); m != nil {
				if n, _ := strconv.Atoi(m[2]); n > 0 && m[3] == "100.0%" {
					healthy[m[1]] = true
				}
			}
		case <-deadline:
			t.Fatal("no table with traffic and no failure on every hop within 2 minutes")
		}
	}
	s := out.String()
	for _, want := range []string{
		`(?m)^  web +was called by +spiffe://rampart\.local/ns/demo/sa/loadgen `,
		`(?m)^  orders +was called by +spiffe://rampart\.local/ns/demo/sa/web `,
		`(?m)^  payments +was called by +spiffe://rampart\.local/ns/demo/sa/orders `,
	} {
		if !regexp.MustCompile(want).MatchString(s) {
			t.Errorf("the traced request does not match %s", want)
		}
	}

	// Ctrl-C.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(time.Minute)
	for !closed {
		select {
		case line, ok := <-lines:
			if !ok {
				closed = true
				break
			}
			out.WriteString(line + "\n")
		case <-timeout:
			t.Fatal("the demo did not exit within a minute of Ctrl-C")
		}
	}
	err = <-exited
	done = true
	if err != nil {
		t.Fatalf("the demo exited with %v after Ctrl-C", err)
	}
	for _, addr := range regexp.MustCompile(`127\.0\.0\.1:\d+`).FindAllString(out.String(), -1) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the demo exited", addr)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestDemoApp runs one app through the CLI until interrupted.
func TestDemoApp(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	root := newRootCommand(&bytes.Buffer{}, &bytes.Buffer{})
	root.SetArgs([]string{"demo-app", "--role", "payments", "--listen", "127.0.0.1:0"})
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("demo-app: %v", err)
	}
}
