package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// envRunCLI makes the test binary behave as the rampart CLI, so that tests
// can run it as a subprocess and the demo can start it as its apps.
const envRunCLI = "RAMPART_TEST_RUN_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(envRunCLI) == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// execute runs the CLI in process with args.
func execute(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand(&out, &errOut)
	root.SetArgs(args)
	err = root.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := execute(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "rampart dev go") {
		t.Errorf("version printed %q", out)
	}
}

func TestDemoAppIsHidden(t *testing.T) {
	out, _, err := execute(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "demo-app") || !strings.Contains(out, "demo ") || !strings.Contains(out, "token") {
		t.Errorf("help:\n%s", out)
	}
}

func TestTokenCreate(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantID  string // the token admits this identity
		wantErr string
	}{
		{
			name:   "defaults",
			args:   []string{"--namespace", "shop", "--service-account", "orders"},
			wantID: "spiffe://rampart.local/ns/shop/sa/orders",
		},
		{
			name:   "other trust domain and ttl",
			args:   []string{"--namespace", "demo", "--service-account", "web", "--trust-domain", "example.org", "--ttl", "5m"},
			wantID: "spiffe://example.org/ns/demo/sa/web",
		},
		{
			name:    "service account missing",
			args:    []string{"--namespace", "shop"},
			wantErr: `required flag(s) "service-account" not set`,
		},
		{
			name:    "bad namespace",
			args:    []string{"--namespace", "Shop", "--service-account", "orders"},
			wantErr: "token: identity: namespace",
		},
		{
			name:    "bad trust domain",
			args:    []string{"--namespace", "shop", "--service-account", "orders", "--trust-domain", "Not A Domain"},
			wantErr: `token: --trust-domain "Not A Domain"`,
		},
		{
			name:    "bad ttl",
			args:    []string{"--namespace", "shop", "--service-account", "orders", "--ttl", "0s"},
			wantErr: "ttl 0s is out of range",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out, stderr, err := execute(t, append([]string{"token", "create", "--state-dir", dir}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stderr, tt.wantID) {
				t.Errorf("stderr %q does not name %s", stderr, tt.wantID)
			}
			// The printed token is what the controller will consume.
			store, err := identity.OpenTokenStore(filepath.Join(dir, tokensFile), nil)
			if err != nil {
				t.Fatal(err)
			}
			id, err := store.Consume(strings.TrimSpace(out))
			if err != nil {
				t.Fatalf("consuming the printed token %q: %v", out, err)
			}
			if id != spiffeid.RequireFromString(tt.wantID) {
				t.Errorf("token admits %s, want %s", id, tt.wantID)
			}
		})
	}
}

func TestDemoErrors(t *testing.T) {
	empty := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"binaries missing", []string{"demo", "--bin-dir", empty}, "rampart-controller and " + filepath.Join(empty, "rampart-proxy") + " not found"},
		{"interval too short", []string{"demo", "--bin-dir", empty, "--interval", "1ms"}, "interval 1ms is shorter than 100ms"},
		{"extra argument", []string{"demo", "now"}, `unknown command "now"`},
		{"demo-app role unknown", []string{"demo-app", "--role", "db", "--listen", "127.0.0.1:0"}, `unknown role "db"`},
		{"demo-app without role", []string{"demo-app"}, `required flag(s) "role" not set`},
		{"demo-app web without orders", []string{"demo-app", "--role", "web", "--listen", "127.0.0.1:0"}, "web needs the orders URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := execute(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
