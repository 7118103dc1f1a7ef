package dashboard

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, err := New(Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// A second handler on the same registry shares the counter.
	if _, err := New(Config{Registerer: reg}); err != nil {
		t.Fatalf("second handler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	tests := []struct {
		method, path string
		code         int
		contentType  string
		body         string // in the body
	}{
		{"GET", "/dashboard/", 200, "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"GET", "/dashboard/index.html", 200, "text/html; charset=utf-8", "Golden signals"},
		{"GET", "/dashboard/app.js", 200, "text/javascript; charset=utf-8", "'use strict'"},
		{"GET", "/dashboard/style.css", 200, "text/css; charset=utf-8", "--ok"},
		{"GET", "/dashboard/icon.svg", 200, "image/svg+xml", "<svg"},
		{"HEAD", "/dashboard/app.js", 200, "text/javascript; charset=utf-8", ""},
		{"GET", "/dashboard/nope.js", 404, "text/plain; charset=utf-8", "no such file of the dashboard"},
		{"GET", "/dashboard/static/", 404, "text/plain; charset=utf-8", "no such file"},
		{"GET", "/dashboard/static/app.js", 404, "text/plain; charset=utf-8", "no such file"},
		{"GET", "/dashboard/..%2fdashboard.go", 404, "text/plain; charset=utf-8", "no such file"},
		{"GET", "/dashboard/.hidden", 404, "text/plain; charset=utf-8", "no such file"},
		{"GET", "/elsewhere", 404, "text/plain; charset=utf-8", "no such file"},
		{"POST", "/dashboard/", 405, "text/plain; charset=utf-8", "GET and HEAD only"},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code || !strings.Contains(string(body), tt.body) {
			t.Errorf("%s %s = %d %.80q; want %d with %q", tt.method, tt.path, resp.StatusCode, body, tt.code, tt.body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != tt.contentType {
			t.Errorf("%s %s: Content-Type %q, want %q", tt.method, tt.path, ct, tt.contentType)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); csp != CSP {
			t.Errorf("%s %s: Content-Security-Policy %q", tt.method, tt.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s %s: no nosniff", tt.method, tt.path)
		}
	}
	for result, want := range map[string]float64{ResultOK: 6, ResultNotFound: 6, ResultMethod: 1} {
		if got := testutil.ToFloat64(h.requests.WithLabelValues(result)); got != want {
			t.Errorf("requests{result=%q} = %v, want %v", result, got, want)
		}
	}
}

// TestFilesKeepThePolicy checks what the Content-Security-Policy would
// refuse in the browser: every file is of a type served, and the HTML has
// no inline script, style or event handler, and loads nothing from
// elsewhere.
func TestFilesKeepThePolicy(t *testing.T) {
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|<style|\sstyle=|\son[a-z]+=|javascript:|https?://`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if _, ok := contentTypes[path.Ext(p)]; !ok {
			t.Errorf("%s: extension %q is not served", p, path.Ext(p))
		}
		b, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		switch path.Ext(p) {
		case ".html":
			if m := inline.FindString(string(b)); m != "" {
				t.Errorf("%s: %q breaks the Content-Security-Policy", p, m)
			}
		case ".js":
			// Inline styles and HTML parsing are refused or unsafe: the
			// script builds elements and sets textContent only.
			for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", ".style."} {
				if strings.Contains(string(b), bad) {
					t.Errorf("%s uses %s", p, bad)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzHandler sends arbitrary paths: the handler answers 200 only for the
// page's own files, 404 otherwise, always under the policy, and never
// panics.
func FuzzHandler(f *testing.F) {
	for _, p := range []string{"/dashboard/", "/dashboard/app.js", "/dashboard/../go.mod", "/dashboard//app.js", "/dashboard/static/index.html", "/dashboard/%2e%2e/x", "/dashboard/\x00"} {
		f.Add(p)
	}
	h, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	files := map[string]bool{"": true}
	entries, err := fs.ReadDir(static, "static")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		files[e.Name()] = true
	}
	f.Fuzz(func(t *testing.T, p string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path = p
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		name, under := strings.CutPrefix(p, Prefix)
		switch {
		case w.Code == http.StatusOK && !(under && files[name]):
			t.Errorf("%q served, not a file of the dashboard", p)
		case w.Code != http.StatusOK && under && files[name]:
			t.Errorf("%q = %d, want the file", p, w.Code)
		case w.Code != http.StatusOK && w.Code != http.StatusNotFound:
			t.Errorf("%q = %d", p, w.Code)
		}
		if w.Header().Get("Content-Security-Policy") != CSP {
			t.Errorf("%q: no policy", p)
		}
	})
}
