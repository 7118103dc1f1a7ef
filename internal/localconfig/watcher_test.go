package localconfig

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait for the watcher; waits end as soon as what
// they wait for happens.
const waitTimeout = 10 * time.Second

const testDebounce = 20 * time.Millisecond

func service(name string, port int) string {
	return "apiVersion: rampart.dev/v1alpha1\nkind: Service\nmetadata:\n  name: " + name +
		"\nspec:\n  selector: {app: " + name + "}\n  ports:\n  - port: " + itoa(port) + "\n"
}

// watch is a Watcher running on a directory, recording what it reports.
type watch struct {
	w       *Watcher
	dir     string
	changes chan *Resources
	errs    chan error
	done    chan error // Run's result
	cancel  context.CancelFunc
	logs    *syncBuffer
}

// startWatch makes a Watcher on dir and runs it until the test ends.
func startWatch(t *testing.T, dir string) *watch {
	t.Helper()
	tw := &watch{
		dir:     dir,
		changes: make(chan *Resources, 100),
		errs:    make(chan error, 100),
		done:    make(chan error, 1),
		logs:    &syncBuffer{},
	}
	w, err := NewWatcher(WatcherConfig{
		Dir:      dir,
		Logger:   slog.New(slog.NewJSONHandler(tw.logs, nil)),
		Debounce: testDebounce,
		OnChange: func(r *Resources) { tw.changes <- r },
		OnError:  func(err error) { tw.errs <- err },
	})
	if err != nil {
		t.Fatalf("NewWatcher() error: %v", err)
	}
	tw.w = w
	ctx, cancel := context.WithCancel(context.Background())
	tw.cancel = cancel
	go func() { tw.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-tw.done:
			if err != nil {
				t.Errorf("Run() = %v, want nil after cancel", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run() did not return after cancel")
		}
	})
	return tw
}

// nextChange waits for OnChange calls until one gets Resources for which
// ok is true, skipping those of intermediate states (a file read while
// being written, say).
func (tw *watch) nextChange(t *testing.T, what string, ok func(*Resources) bool) *Resources {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case r := <-tw.changes:
			if ok(r) {
				return r
			}
		case <-deadline:
			t.Fatalf("no OnChange with %s within %v", what, waitTimeout)
		}
	}
}

func (tw *watch) nextError(t *testing.T) error {
	t.Helper()
	select {
	case err := <-tw.errs:
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("no OnError within %v", waitTimeout)
		return nil
	}
}

// ports returns the ports of the services in r, by service name.
func ports(r *Resources) map[string]int32 {
	m := make(map[string]int32)
	for _, s := range r.Services {
		m[s.Name] = s.Spec.Ports[0].Port
	}
	return m
}

func hasPorts(want map[string]int32) func(*Resources) bool {
	return func(r *Resources) bool {
		got := ports(r)
		if len(got) != len(want) {
			return false
		}
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return true
	}
}

// replaceFile writes content to a hidden file and renames it over name, as
// many editors save.
func replaceFile(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "orders.yaml", service("orders", 80))
	tw := startWatch(t, dir)
	loaded := tw.w.Current()

	// Initial load: OnChange once Run starts, with what NewWatcher loaded.
	initial := tw.nextChange(t, "orders:80", hasPorts(map[string]int32{"orders": 80}))
	if initial != loaded {
		t.Errorf("OnChange(%p) when Run started, want what NewWatcher loaded, %p", initial, loaded)
	}
	if got := tw.w.Current(); got != initial {
		t.Errorf("Current() = %p, want the Resources passed to OnChange %p", got, initial)
	}

	// Break the config: OnError, and the last good config stays in force.
	replaceFile(t, dir, "orders.yaml", service("orders", 0))
	err := tw.nextError(t)
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("OnError(%v), want a *LoadError", err)
	}
	want := "orders.yaml:8: spec.ports[0].port: must be between 1 and 65535"
	if got := le.Error(); got != want {
		t.Errorf("OnError(%q), want %q", got, want)
	}
	if got := tw.w.Current(); got != initial {
		t.Errorf("Current() changed after a failed reload")
	}
	select {
	case r := <-tw.changes:
		t.Errorf("OnChange(%v) after a failed reload", ports(r))
	default:
	}
	// Each problem is logged with its file and line.
	if !tw.logs.has(map[string]any{"file": "orders.yaml", "line": 8.0, "problem": "spec.ports[0].port: must be between 1 and 65535"}) {
		t.Errorf("problem not logged with its file and line; logs:\n%s", tw.logs)
	}

	// Fix it, writing in place.
	if err := os.WriteFile(filepath.Join(dir, "orders.yaml"), []byte(service("orders", 81)), 0o644); err != nil {
		t.Fatal(err)
	}
	fixed := tw.nextChange(t, "orders:81", hasPorts(map[string]int32{"orders": 81}))
	if got := tw.w.Current(); got != fixed {
		t.Errorf("Current() is not the fixed config")
	}

	// A new file.
	writeFile(t, dir, "web.yml", service("web", 8080))
	tw.nextChange(t, "orders:81 and web:8080", hasPorts(map[string]int32{"orders": 81, "web": 8080}))

	// A file removed.
	if err := os.Remove(filepath.Join(dir, "web.yml")); err != nil {
		t.Fatal(err)
	}
	tw.nextChange(t, "orders:81 alone", hasPorts(map[string]int32{"orders": 81}))

	// A file renamed away.
	if err := os.Rename(filepath.Join(dir, "orders.yaml"), filepath.Join(dir, "orders.yaml.disabled")); err != nil {
		t.Fatal(err)
	}
	tw.nextChange(t, "no services", hasPorts(map[string]int32{}))
}

// TestWatcherConfigMap swaps files the way a Kubernetes ConfigMap volume
// does: every file is a link through the hidden "..data" link, which is
// replaced, by rename, to point at a new hidden directory.
func TestWatcherConfigMap(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "..v1/orders.yaml", service("orders", 80))
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Skip("cannot make symbolic links:", err)
	}
	if err := os.Symlink(filepath.Join("..data", "orders.yaml"), filepath.Join(dir, "orders.yaml")); err != nil {
		t.Fatal(err)
	}
	tw := startWatch(t, dir)
	tw.nextChange(t, "orders:80", hasPorts(map[string]int32{"orders": 80}))

	writeFile(t, dir, "..v2/orders.yaml", service("orders", 81))
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	tw.nextChange(t, "orders:81", hasPorts(map[string]int32{"orders": 81}))
}

func TestWatcherDirRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config")
	writeFile(t, dir, "orders.yaml", service("orders", 80))
	tw := startWatch(t, dir)
	tw.nextChange(t, "orders:80", hasPorts(map[string]int32{"orders": 80}))

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-tw.done:
		if err == nil || !strings.Contains(err.Error(), "was removed") {
			t.Errorf("Run() = %v, want an error saying the directory was removed", err)
		}
		tw.done <- nil // for the cleanup
	case <-time.After(waitTimeout):
		t.Fatal("Run() did not return after the directory was removed")
	}
}

// TestWatcherRunReloads checks that Run picks up changes made between
// NewWatcher and Run.
func TestWatcherRunReloads(t *testing.T) {
	tests := []struct {
		name string
		// port is what orders.yaml says when Run starts.
		port int
		// wantPort is the port of the Resources OnChange gets; wantErr,
		// if set, what OnError gets next.
		wantPort int32
		wantErr  string
	}{
		{name: "unchanged", port: 80, wantPort: 80},
		{name: "changed", port: 81, wantPort: 81},
		{name: "broken", port: 0, wantPort: 80, wantErr: "orders.yaml:8: spec.ports[0].port: must be between 1 and 65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "orders.yaml", service("orders", 80))
			changes := make(chan *Resources, 10)
			errs := make(chan error, 10)
			w, err := NewWatcher(WatcherConfig{
				Dir:      dir,
				OnChange: func(r *Resources) { changes <- r },
				OnError:  func(err error) { errs <- err },
			})
			if err != nil {
				t.Fatal(err)
			}
			initial := w.Current()
			writeFile(t, dir, "orders.yaml", service("orders", tt.port))

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run() = %v", err)
				}
			}()
			select {
			case r := <-changes:
				if got := ports(r)["orders"]; got != tt.wantPort {
					t.Errorf("OnChange(orders:%d), want orders:%d", got, tt.wantPort)
				}
				if unchanged := tt.port == 80 || tt.wantErr != ""; unchanged != (r == initial) {
					t.Errorf("OnChange got the initial Resources: %t, want %t", r == initial, unchanged)
				}
				if w.Current() != r {
					t.Errorf("Current() is not what OnChange got")
				}
			case <-time.After(waitTimeout):
				t.Fatal("no OnChange when Run started")
			}
			if tt.wantErr == "" {
				return
			}
			select {
			case err := <-errs:
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("OnError(%v), want %q", err, tt.wantErr)
				}
			case <-time.After(waitTimeout):
				t.Fatal("no OnError when Run started on a broken config")
			}
		})
	}
}

func TestNewWatcherErrors(t *testing.T) {
	bad := t.TempDir()
	writeFile(t, bad, "orders.yaml", service("orders", 0))
	tests := []struct {
		name string
		cfg  WatcherConfig
		want string
	}{
		{"no dir", WatcherConfig{}, "localconfig: watcher config: Dir is required"},
		{"negative debounce", WatcherConfig{Dir: bad, Debounce: -time.Second}, "localconfig: watcher config: Debounce -1s is negative"},
		{"bad config", WatcherConfig{Dir: bad}, "localconfig: loading " + bad + ": orders.yaml:8: spec.ports[0].port: must be between 1 and 65535"},
		{"missing dir", WatcherConfig{Dir: filepath.Join(bad, "missing")}, "localconfig: reading config directory: open " + filepath.Join(bad, "missing") + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWatcher(tt.cfg)
			if err == nil {
				t.Fatalf("NewWatcher() = %v, want an error", w)
			}
			if err.Error() != tt.want {
				t.Errorf("NewWatcher() error = %q, want %q", err, tt.want)
			}
		})
	}
	_, err := NewWatcher(WatcherConfig{Dir: bad})
	var le *LoadError
	if !errors.As(err, &le) || len(le.Problems) != 1 {
		t.Errorf("NewWatcher() error = %v, want one wrapping a *LoadError", err)
	}
}

func TestAffectsConfig(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"orders.yaml", true},
		{"orders.yml", true},
		{"..data", true},
		{"..2024_01_02_03_04_05.123", true},
		{".orders.yaml", false},
		{".orders.yaml.swp", false},
		{"orders.yaml~", false},
		{"#orders.yaml#", false},
		{"4913", false}, // vim's write test
		{"notes.txt", false},
	}
	for _, tt := range tests {
		if got := affectsConfig(tt.name); got != tt.want {
			t.Errorf("affectsConfig(%q) = %t, want %t", tt.name, got, tt.want)
		}
	}
}

// syncBuffer is a bytes.Buffer that the watcher's goroutine can log to
// while the test reads it.
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

// has reports whether a JSON log record has all the given fields.
func (b *syncBuffer) has(fields map[string]any) bool {
	for line := range strings.SplitSeq(b.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		match := true
		for k, v := range fields {
			if rec[k] != v {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

// A change of a route's weights is a reload like any other: OnChange gets
// the new weights, and a broken route file keeps the last good ones.
func TestWatcherRouteWeights(t *testing.T) {
	dir := t.TempDir()
	example := filepath.Join("testdata", "load", "routing")
	for _, name := range []string{"services.yaml", "web-route.yaml"} {
		data, err := os.ReadFile(filepath.Join(example, name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir, name, string(data))
	}
	route, err := os.ReadFile(filepath.Join(example, "web-route.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tw := startWatch(t, dir)
	weights := func(v1, v2 int32) func(*Resources) bool {
		return func(r *Resources) bool {
			if len(r.HTTPRoutes) != 1 {
				return false
			}
			b := r.HTTPRoutes[0].Spec.Rules[2].BackendRefs
			return *b[0].Weight == v1 && *b[1].Weight == v2
		}
	}
	tw.nextChange(t, "the initial weights", weights(90, 10))

	flipped := strings.Replace(strings.Replace(string(route), "weight: 90", "weight: 0", 1), "weight: 10", "weight: 100", 1)
	replaceFile(t, dir, "web-route.yaml", flipped)
	tw.nextChange(t, "the flipped weights", weights(0, 100))

	replaceFile(t, dir, "web-route.yaml", strings.Replace(flipped, "weight: 100", "weight: 2000000", 1))
	if err := tw.nextError(t); !strings.Contains(err.Error(), "weight: must be between 0 and 1000000") {
		t.Errorf("reload error = %v, want the weight's problem", err)
	}
	if !weights(0, 100)(tw.w.Current()) {
		t.Errorf("a broken route file changed the weights in force")
	}
}
