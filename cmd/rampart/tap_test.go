package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/controller"
)

// tapStream is what the controller sends for the example of
// docs/observability.md.
const tapStream = `{"type":"start","instances":1}
{"type":"request","instance":"server@127.0.0.1:40112","time":"2026-01-02T10:04:05.123Z","direction":"inbound","method":"GET","authority":"web","path":"/tapped/0","source":"spiffe://e2e.rampart.test/ns/e2e/sa/client","destination":"spiffe://e2e.rampart.test/ns/e2e/sa/server","status":200,"duration_seconds":0.000412,"request_headers":[{"name":"Authorization"},{"name":"User-Agent","value":"tap-e2e/1"}]}
{"type":"end","events":1,"reason":"max events"}
`

func TestTapPrintsATable(t *testing.T) {
	// The table shows local times: 10:04:05.123 in UTC.
	at := time.Date(2026, 1, 2, 10, 4, 5, 123e6, time.UTC).Local().Format("15:04:05.000")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, controller.TapTokenFile), []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var gotQuery, gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery, gotAuth = r.URL.RawQuery, r.Header.Get("Authorization")
		fmt.Fprint(w, tapStream)
	}))
	defer srv.Close()

	for _, tc := range []struct {
		output, want string
	}{
		{"table", `Tapping 1 proxy instance(s).
TIME          DIR  METHOD   STATUS   DURATION  AUTHORITY PATH                  SOURCE -> DESTINATION
` + at + `  in   GET         200     0.41ms  web /tapped/0                   spiffe://e2e.rampart.test/ns/e2e/sa/client -> spiffe://e2e.rampart.test/ns/e2e/sa/server
Tap ended (max events): 1 request(s), 0 dropped.
`},
		{"json", tapStream},
	} {
		t.Run(tc.output, func(t *testing.T) {
			var out, errOut bytes.Buffer
			cmd := newRootCommand(&out, &errOut)
			cmd.SetArgs([]string{"tap", "e2e/server", "--controller-admin", srv.URL, "--state-dir", dir,
				"--path", "/tapped/", "--max", "1", "-o", tc.output})
			if err := cmd.Execute(); err != nil {
				t.Fatalf("rampart tap: %v", err)
			}
			if out.String() != tc.want {
				t.Fatalf("printed:\n%s\nwant:\n%s", out.String(), tc.want)
			}
			if gotAuth != "Bearer t0ken" || !strings.Contains(gotQuery, "path=%2Ftapped%2F") || !strings.Contains(gotQuery, "workload=server") {
				t.Fatalf("asked %q with %q", gotQuery, gotAuth)
			}
		})
	}
}

func TestTapRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tap", "server"}, "want namespace/workload"},
		{[]string{"tap", "e2e/server", "-o", "yaml"}, "-o"},
		{[]string{"tap", "e2e/server", "--path", "x"}, "--path"},
		{[]string{"tap", "e2e/server", "--from", "x"}, "--from"},
		{[]string{"tap", "e2e/server", "--status", "9"}, "--status"},
		{[]string{"tap", "e2e/server", "--max", "100000"}, "--max"},
		{[]string{"tap", "e2e/server", "--state-dir", dir}, "no tap token"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			cmd := newRootCommand(&out, &out)
			cmd.SetArgs(append(tc.args, "--controller-admin", "127.0.0.1:1"))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

func TestTapSaysWhatTheControllerRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, controller.TapTokenFile), []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":"the bearer token is not the controller's tap-token"}`)
	}))
	defer srv.Close()
	var out bytes.Buffer
	cmd := newRootCommand(&out, &out)
	cmd.SetArgs([]string{"tap", "e2e/server", "--controller-admin", srv.URL, "--state-dir", dir})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "not the controller's tap-token") {
		t.Fatalf("error %v", err)
	}
}

func TestTapEscapesControlCharacters(t *testing.T) {
	var out bytes.Buffer
	printTapLine(&out, controller.TapLine{Type: "request", Direction: "inbound", Method: "GET", Status: 200,
		Authority: "a\x1b]0;owned\x07", Path: "/p\u009b31m\\\x7f\xff", Source: "spiffe://t/\r", Destination: "d"})
	got := out.String()
	if strings.ContainsFunc(strings.TrimSuffix(got, "\n"), isControl) {
		t.Fatalf("control characters reach the terminal: %q", got)
	}
	for _, want := range []string{`a\x1b]0;owned\a`, `/p\u009b31m\\\x7f\xff`, `spiffe://t/\r -> d`} {
		if !strings.Contains(got, want) {
			t.Errorf("row %q lacks %q", got, want)
		}
	}
	if got := escapeControls(`/plain\path é`); got != `/plain\path é` {
		t.Errorf("escapeControls changed a printable string to %q", got)
	}
}
