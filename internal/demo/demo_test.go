package demo

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is an io.Writer the test reads while Run writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestNew(t *testing.T) {
	bin := fakeBinDir(t)
	empty := t.TempDir()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{BinDir: bin}, ""},
		{"no bin dir", Config{}, "no binary directory"},
		{"binaries missing", Config{BinDir: empty}, filepath.Join(empty, "rampart-controller") + " and " + filepath.Join(empty, "rampart-proxy") + " not found or not executable: build the binaries first"},
		{"interval too short", Config{BinDir: bin, Interval: time.Millisecond}, "interval 1ms is shorter than 100ms"},
		{"negative rate", Config{BinDir: bin, Rate: -1}, "must not be negative"},
		{"empty app command", Config{BinDir: bin, AppCommand: []string{}}, "app command is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("New: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("New: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// fakeConfig runs the demo on the fake binaries.
func fakeConfig(t *testing.T, out *syncBuffer) Config {
	bin := fakeBinDir(t)
	return Config{
		BinDir:       bin,
		AppCommand:   []string{filepath.Join(bin, "rampart"), "demo-app"},
		Out:          out,
		Logger:       testLogger(t),
		Interval:     200 * time.Millisecond,
		ReadyTimeout: 20 * time.Second,
		StopTimeout:  5 * time.Second,
	}
}

// runDemo starts Run and returns a func that waits for its result.
func runDemo(t *testing.T, ctx context.Context, cfg Config) func() error {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	return func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
}

func waitOutput(t *testing.T, out *syncBuffer, done func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !done(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out; output so far:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var addrRE = regexp.MustCompile(`127\.0\.0\.1:\d+`)

// TestRun runs the whole demo on fakes of the binaries: ports, Service
// files, join tokens (the fake proxy consumes them), readiness, the traced
// request, the traffic table, and a clean stop that leaves nothing behind.
func TestRun(t *testing.T) {
	var out syncBuffer
	cfg := fakeConfig(t, &out)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wait := runDemo(t, ctx, cfg)

	waitOutput(t, &out, func(s string) bool { return strings.Count(s, "traffic in the last") >= 2 })
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("Run: %v\noutput:\n%s", err, out.String())
	}
	s := out.String()
	t.Logf("output:\n%s", s)

	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`Starting the controller \.\.\. ready in`),
		regexp.MustCompile(`Controller: gRPC 127\.0\.0\.1:\d+, admin http://127\.0\.0\.1:\d+, trust domain rampart\.local`),
		regexp.MustCompile(`(?m)^loadgen +spiffe://rampart\.local/ns/demo/sa/loadgen +- +127\.0\.0\.1:\d+ +http://127\.0\.0\.1:\d+ +web via 127\.0\.0\.1:\d+$`),
		regexp.MustCompile(`(?m)^web +spiffe://rampart\.local/ns/demo/sa/web +127\.0\.0\.1:\d+ \(HTTP\) .* orders via 127\.0\.0\.1:\d+$`),
		regexp.MustCompile(`(?m)^payments +spiffe://rampart\.local/ns/demo/sa/payments +127\.0\.0\.1:\d+ \(GRPC\) .* -$`),
		regexp.MustCompile(`(?m)^  orders-proxy +/.*/logs/orders-proxy\.log$`),
		regexp.MustCompile(`(?m)^  web +was called by +spiffe://rampart\.local/ns/demo/sa/loadgen`),
		regexp.MustCompile(`(?m)^  payments +was called by +spiffe://rampart\.local/ns/demo/sa/orders +approved as auth-000001$`),
		// 10 requests a scrape, one a 503 from the proxy.
		regexp.MustCompile(`(?m)^  orders -> payments +10 +[\d.]+ +90\.0% +[\d.]+ms +[\d.]+ms +spiffe://rampart\.local/ns/demo/sa/payments$`),
		regexp.MustCompile(`Stopping every process \.\.\. done\.`),
	} {
		if !want.MatchString(s) {
			t.Errorf("output does not match %s", want)
		}
	}

	// Everything is stopped: nothing listens any more.
	for _, addr := range addrRE.FindAllString(s, -1) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Run returned", addr)
		}
	}
	// The temporary state directory is gone after a clean exit.
	m := regexp.MustCompile(`State and logs: (\S+) \(removed`).FindStringSubmatch(s)
	if m == nil {
		t.Fatal("no state directory in the output")
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("state directory %s: %v, want it removed", m[1], err)
	}
}

func TestRunFailures(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		ready time.Duration
		want  []string
	}{
		{
			name: "controller fails",
			env:  map[string]string{envController: "fail"},
			want: []string{"demo: while waiting for the controller: controller exited unexpectedly (exit status 2)", "controller.log:\n    fake controller: failing as asked"},
		},
		{
			name: "controller never ready",
			env:  map[string]string{envController: "unready"},
			// Long enough for the fake controller to start serving on a
			// busy machine: the test is about its 503, not the timeout.
			ready: 5 * time.Second,
			want:  []string{"demo: the controller is not ready after 5s (last check: GET http://", "503 Service Unavailable not ready)", "    fake controller: not ready, on purpose"},
		},
		{
			name: "proxy dies while serving",
			env:  map[string]string{envCrash: "orders"},
			want: []string{"demo: orders-proxy exited unexpectedly (exit status 3)", "orders-proxy.log:\n", "    fake proxy: crashing, as asked"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out syncBuffer
			cfg := fakeConfig(t, &out)
			cfg.StateDir = filepath.Join(t.TempDir(), "state")
			if tt.ready > 0 {
				cfg.ReadyTimeout = tt.ready
			}
			err := runDemo(t, t.Context(), cfg)()
			if err == nil {
				t.Fatalf("Run succeeded; output:\n%s", out.String())
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not contain %q:\n%v", want, err)
				}
			}
			s := out.String()
			if !strings.Contains(s, "State and logs are kept in "+cfg.StateDir) || !strings.Contains(s, "Stopping every process ... done.") {
				t.Errorf("output:\n%s", s)
			}
		})
	}
}

// TestRunInterrupted cancels the demo while it waits for the controller:
// Run returns nil once every process has stopped.
func TestRunInterrupted(t *testing.T) {
	t.Setenv(envController, "unready")
	var out syncBuffer
	cfg := fakeConfig(t, &out)
	ctx, cancel := context.WithCancel(t.Context())
	wait := runDemo(t, ctx, cfg)
	waitOutput(t, &out, func(s string) bool { return strings.Contains(s, "Starting the controller") })
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s := out.String(); !strings.Contains(s, "Stopping every process ... done.") {
		t.Errorf("output:\n%s", s)
	}
}
