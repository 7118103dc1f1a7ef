package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sampleReport is the golden report of internal/report.
func sampleReport(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "internal", "report", "testdata", "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReportCommand(t *testing.T) {
	body := sampleReport(t)
	var gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/report" {
			http.NotFound(w, r)
			return
		}
		gotQuery = r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	htmlPath, jsonPath := filepath.Join(dir, "r.html"), filepath.Join(dir, "r.json")

	_, stderr, err := execute(t, "report", "--controller-admin", srv.URL, "--since", "7d", "-o", htmlPath, "--json", jsonPath)
	if err != nil {
		t.Fatalf("rampart report: %v\n%s", err, stderr)
	}
	if gotQuery != "since=7d" {
		t.Errorf("query %q, want since=7d", gotQuery)
	}
	js, err := os.ReadFile(jsonPath)
	if err != nil || string(js) != string(body) {
		t.Errorf("--json wrote %q (%v), want the controller's answer as is", js, err)
	}
	html, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<!DOCTYPE html>", "90.48%", "shop/web"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	for _, p := range []string{htmlPath, jsonPath} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", p, fi.Mode().Perm(), err)
		}
	}

	stdout, _, err := execute(t, "report", "--controller-admin", srv.URL, "-o", "-")
	if err != nil || !strings.HasPrefix(stdout, "<!DOCTYPE html>") {
		t.Errorf("-o -: %v, output starts %.40q", err, stdout)
	}
}

func TestReportCommandRefuses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"version": 99, "period": {"duration": "1d"}}`))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad period", []string{"--since", "2w"}, "--since"},
		{"too long", []string{"--since", "8d"}, "want 1h to 7d"},
		{"no chromium", []string{"--pdf", filepath.Join(dir, "r.pdf"), "--chromium", filepath.Join(dir, "nothing")}, "--chromium"},
		{"other version", []string{"-o", filepath.Join(dir, "r.html")}, "report version 99"},
		{"no controller", []string{"--controller-admin", "127.0.0.1:1"}, "is the controller running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"report", "--controller-admin", srv.URL}, tc.args...)
			if _, _, err := execute(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("rampart %s: %v; want an error with %q", strings.Join(args, " "), err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "r.html")); !os.IsNotExist(err) {
		t.Errorf("a report of another version was written: %v", err)
	}
}
