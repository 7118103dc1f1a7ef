package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// start runs a controller until the test ends and waits until it listens.
func start(t *testing.T, cfg Config) *Controller {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready in 10s")
	}
	return c
}

func readBundle(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("%s mode = %v, want 0644", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var roots []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		t.Fatalf("%s holds no certificate", path)
	}
	return roots
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestControllerServes(t *testing.T) {
	state := t.TempDir()
	c := start(t, Config{StateDir: state, Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", TrustDomain: "example.org"})
	td := spiffeid.RequireTrustDomainFromString("example.org")

	// A proxy bootstraps from bundle.pem, verifies the controller's
	// identity and certifies with a join token.
	bundle := &meshtls.Bundle{}
	bundle.SetRoots(td, readBundle(t, filepath.Join(state, BundleFile)))
	tlsCfg := meshtls.Config{SVID: &meshtls.SVID{}, Bundle: bundle}.Client(ControllerID(td))
	cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	id := spiffeid.RequireFromSegments(td, "ns", "default", "sa", "web")
	token, err := c.Tokens().Create(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := meshv1.NewIdentityClient(cc).Certify(ctx, &meshv1.CertifyRequest{Csr: csr, JoinToken: token})
	if err != nil {
		t.Fatalf("Certify: %v", err)
	}
	if resp.GetSpiffeId() != id.String() {
		t.Errorf("spiffe_id = %q, want %q", resp.GetSpiffeId(), id)
	}

	// Admin endpoints.
	admin := "http://" + c.AdminAddr()
	if code, _ := httpGet(t, admin+"/ready"); code != http.StatusOK {
		t.Errorf("/ready = %d, want 200", code)
	}
	if code, _ := httpGet(t, admin+"/live"); code != http.StatusOK {
		t.Errorf("/live = %d, want 200", code)
	}
	code, body := httpGet(t, admin+"/metrics")
	if code != http.StatusOK {
		t.Errorf("/metrics = %d, want 200", code)
	}
	for _, want := range []string{
		`rampart_controller_certify_total{reason="",result="issued"} 1`,
		`rampart_controller_config_reloads_total{result="ok"} 0`,
		"rampart_controller_watch_streams 0",
		"go_goroutines",
		"process_",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestControllerReopensState(t *testing.T) {
	state := t.TempDir()
	c1, err := New(Config{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	first := readBundle(t, c1.BundlePath())
	c2, err := New(Config{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	second := readBundle(t, c2.BundlePath())
	if len(first) != len(second) || !first[0].Equal(second[0]) {
		t.Error("reopening the state directory changed the trust bundle")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"defaults", Config{StateDir: "x"}, ""},
		{"admin off", Config{StateDir: "x", AdminListen: "off"}, ""},
		{"no state dir", Config{}, "state directory is required"},
		{"bad trust domain", Config{StateDir: "x", TrustDomain: "Not A Domain"}, "trust domain"},
		{"bad listen", Config{StateDir: "x", Listen: "nope"}, "listen address"},
		{"bad admin listen", Config{StateDir: "x", AdminListen: "nope"}, "admin listen address"},
		{"short ttl", Config{StateDir: "x", SVIDTTL: time.Second}, "too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestControllerID(t *testing.T) {
	got := ControllerID(spiffeid.RequireTrustDomainFromString("rampart.local")).String()
	if want := "spiffe://rampart.local/ns/rampart-system/sa/rampart-controller"; got != want {
		t.Errorf("ControllerID = %q, want %q", got, want)
	}
}
