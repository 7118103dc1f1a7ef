// Package browser drives a headless Chromium for the tests of Rampart's
// dashboard: it finds the browser, starts it with chromedp on a profile of
// its own, collects the page's console errors and uncaught exceptions, and
// evaluates, waits for and screenshots what the page shows.
//
// Only tests import it, so that no binary links chromedp.
package browser

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// findChromium finds Debian's chromium (scripts/test-deps.sh installs it).
// When required, a missing browser fails the test; otherwise it skips it.
func findChromium(t *testing.T, required bool) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if required {
		t.Fatal("chromium not found: run scripts/test-deps.sh to install it")
	}
	t.Skip("chromium not found: run scripts/test-deps.sh to install it for the dashboard's browser test")
	return ""
}

// artifactsDir is where a test saves screenshots: a directory named after
// the test in RAMPART_ARTIFACTS_DIR when that is set (CI keeps it), else a
// directory of the test's own.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RAMPART_ARTIFACTS_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// Browser is a headless Chromium on its own temporary profile, with the
// console errors and uncaught exceptions of its page collected.
type Browser struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots, set by the first

	mu       sync.Mutex
	problems []string
}

// New starts a headless Chromium for the test, stopped when it ends. When
// chromium is not installed the test fails if required, else it is
// skipped.
func New(t *testing.T, required bool) *Browser {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(findChromium(t, required)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1100),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses to run as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancel)
	b := &Browser{t: t, ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				p = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
			}
		case *runtime.EventExceptionThrown:
			p = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				p += " " + ev.ExceptionDetails.Exception.Description
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError {
				p = "log: " + ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if p != "" {
			b.mu.Lock()
			b.problems = append(b.problems, p)
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

// TakeProblems returns the console errors and exceptions seen so far and
// forgets them.
func (b *Browser) TakeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// Do runs actions on the page within 30 s, failing the test on an error.
func (b *Browser) Do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// Eval evaluates a JavaScript expression on the page into v.
func (b *Browser) Eval(expr string, v any) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// WaitFor evaluates expr until check accepts its value, for at most
// within, and returns the value accepted. It fails the test with the last
// error when within passes.
func WaitFor[T any](b *Browser, within time.Duration, expr string, check func(T) error) T {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got T
		err := b.Eval(expr, &got)
		if err == nil {
			err = check(got)
		}
		if err == nil {
			return got
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PNG is a screenshot of the whole page.
func (b *Browser) PNG() ([]byte, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.FullScreenshot(100))
}

// Screenshot saves a screenshot of the whole page as name.png in the
// test's artifacts directory (see artifactsDir), failing the test on an error.
func (b *Browser) Screenshot(name string) {
	b.t.Helper()
	png, err := b.PNG()
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if b.dir == "" {
		b.dir = artifactsDir(b.t)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
