package controller

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTapQuery(t *testing.T) {
	s, err := ParseTapQuery(url.Values{"namespace": {"shop"}, "workload": {"web"}, "method": {"POST"}, "path": {"/api/"},
		"source": {"spiffe://td/ns/shop/sa/checkout"}, "status": {"5xx"}, "max": {"20"}, "duration": {"1m"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.StatusClass != 5 || s.MaxEvents != 20 || s.Duration != time.Minute || s.PathPrefix != "/api/" {
		t.Fatalf("spec %+v", s)
	}
	base := func(k, v string) url.Values {
		q := url.Values{"namespace": {"shop"}, "workload": {"web"}}
		q[k] = append(q[k], v)
		return q
	}
	for _, tc := range []struct {
		name, want string
		q          url.Values
	}{
		{"unknown parameter", `"query"`, base("query", "x")},
		{"twice", `"namespace" given 2 times`, base("namespace", "other")},
		{"no workload", "workload", url.Values{"namespace": {"shop"}}},
		{"status", "status", base("status", "ok")},
		{"status 0", "status", base("status", "0")},
		{"max", "max", base("max", "lots")},
		{"max 0", "max", base("max", "0")},
		{"duration", "duration", base("duration", "soon")},
		{"long duration", "duration", base("duration", "1h")},
		{"path", "path", base("path", "api")},
		{"source", "source", base("source", "checkout")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseTapQuery(tc.q); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one with %s", err, tc.want)
			}
		})
	}
}

func TestTapTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), TapTokenFile)
	tok, err := loadTapToken(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || len(tok) != 64 {
		t.Fatalf("token file mode %v, token length %d: want 0600 and 64", fi.Mode().Perm(), len(tok))
	}
	again, err := loadTapToken(path)
	if err != nil || string(again) != string(tok) {
		t.Fatalf("a restart changed the token (%v)", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTapToken(path); err == nil {
		t.Fatal("a token file others may read was accepted")
	}
	short := filepath.Join(t.TempDir(), TapTokenFile)
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTapToken(short); err == nil || !strings.Contains(err.Error(), "shorter") {
		t.Fatalf("short token: %v", err)
	}
}
