package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDashboardURL(t *testing.T) {
	tests := []struct {
		admin, want, err string
	}{
		{admin: "127.0.0.1:15014", want: "http://127.0.0.1:15014/dashboard/"},
		{admin: "http://[::1]:15014/", want: "http://[::1]:15014/dashboard/"},
		{admin: "https://ctl.example:443", want: "https://ctl.example:443/dashboard/"},
		{admin: "127.0.0.1", err: "want host:port"},
		{admin: "ftp://127.0.0.1:21", err: "want host:port"},
		{admin: "127.0.0.1:15014/other", err: "want host:port"},
		{admin: "u:p@127.0.0.1:15014", err: "want host:port"},
		{admin: "", err: "want host:port"},
	}
	for _, tt := range tests {
		got, err := dashboardURL(tt.admin)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("dashboardURL(%q) = %q, %v; want an error with %q", tt.admin, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("dashboardURL(%q) = %q, %v; want %q", tt.admin, got, err, tt.want)
		}
	}
}

func TestDashboardCommand(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/dashboard/" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("<!doctype html>"))
	}))
	t.Cleanup(ok.Close)
	old := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(old.Close)
	// Neither a display nor an opener: the command still succeeds.
	t.Setenv("DISPLAY", "")
	t.Setenv("WAYLAND_DISPLAY", "")

	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		root := newRootCommand(&out, &errOut)
		root.SetArgs(append([]string{"dashboard"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	out, err := run("--controller-admin", ok.Listener.Addr().String(), "--no-browser")
	if err != nil || out != "Rampart dashboard: "+ok.URL+"/dashboard/\n" {
		t.Errorf("--no-browser: %q, %v", out, err)
	}
	out, err = run("--controller-admin", ok.Listener.Addr().String())
	if err != nil || !strings.Contains(out, "open the address in a browser") {
		t.Errorf("without a display: %q, %v", out, err)
	}
	if _, err := run("--controller-admin", old.Listener.Addr().String()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a listener without the dashboard: %v", err)
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	addr := closed.Listener.Addr().String()
	closed.Close()
	if _, err := run("--controller-admin", addr); err == nil || !strings.Contains(err.Error(), "is the controller running") {
		t.Errorf("nothing listening: %v", err)
	}
}
