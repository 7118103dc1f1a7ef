package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/localconfig"
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
		{"negative ttl", Config{StateDir: "x", SVIDTTL: -time.Second}, "negative"},
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

const ordersService = `apiVersion: rampart.dev/v1alpha1
kind: Service
metadata:
  name: orders
  namespace: shop
spec:
  selector:
    app: orders
  ports:
  - port: 80
    targetPort: 8080
    protocol: HTTP
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBadConfigDirRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "orders.yaml"), strings.Replace(ordersService, "port: 80", "port: 0", 1))
	writeFile(t, filepath.Join(dir, "typo.yaml"), "apiVersion: rampart.dev/v1alpha1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selectr: {app: x}\n")
	_, err := New(Config{StateDir: t.TempDir(), ConfigDir: dir})
	if err == nil {
		t.Fatal("New accepted a broken config directory")
	}
	var le *localconfig.LoadError
	if !errors.As(err, &le) {
		t.Errorf("error %v does not wrap a *localconfig.LoadError", err)
	}
	msg := err.Error()
	for _, want := range []string{filepath.Join(dir, "orders.yaml") + ":", filepath.Join(dir, "typo.yaml") + ":"} {
		i := strings.Index(msg, want)
		if i < 0 {
			t.Errorf("error does not name %q:\n%s", want, msg)
			continue
		}
		// file:line: the path is followed by a line number.
		if rest := msg[i+len(want):]; rest == "" || rest[0] < '1' || rest[0] > '9' {
			t.Errorf("no line number after %q:\n%s", want, msg)
		}
	}
}

// proxy is a test client standing in for rampart-proxy.
type proxy struct {
	cc *grpc.ClientConn
	// tlsCfg presents the proxy's SVID and trusts the bundle it was
	// started with.
	tlsCfg *tls.Config
}

func newProxy(t *testing.T, c *Controller, id spiffeid.ID) *proxy {
	t.Helper()
	td := c.TrustDomain()
	bundle := &meshtls.Bundle{}
	bundle.SetRoots(td, readBundle(t, c.BundlePath()))
	svid := &meshtls.SVID{}
	tlsCfg := meshtls.Config{SVID: svid, Bundle: bundle}.Client(ControllerID(td))
	bootstrap, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer bootstrap.Close()
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
	resp, err := meshv1.NewIdentityClient(bootstrap).Certify(context.Background(), &meshv1.CertifyRequest{Csr: csr, JoinToken: token})
	if err != nil {
		t.Fatalf("Certify: %v", err)
	}
	var chain []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	if err := svid.Set(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	// A fresh connection presents the new SVID.
	cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &proxy{cc: cc, tlsCfg: tlsCfg}
}

func TestConfigDirReloadAndWatch(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "orders.yaml"), ordersService)
	c := start(t, Config{StateDir: t.TempDir(), ConfigDir: dir, Listen: "127.0.0.1:0", AdminListen: "off", TrustDomain: "example.org"})
	if c.AdminAddr() != "" {
		t.Errorf("AdminAddr = %q with the admin listener off", c.AdminAddr())
	}
	td := c.TrustDomain()

	// An orders proxy sees its inbound port from the config directory.
	p := newProxy(t, c, spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "orders"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := meshv1.NewDiscoveryClient(p.cc).Watch(ctx, &meshv1.WatchRequest{
		Workload:  &meshv1.Workload{Name: "orders-1", Labels: map[string]string{"app": "orders"}, TunnelAddress: "127.0.0.1:15008"},
		Upstreams: []string{"orders"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if in := cfg.GetInbound(); len(in) != 1 || in[0].GetPort() != 8080 {
		t.Errorf("inbound = %v, want port 8080", in)
	}
	if eps := cfg.GetServices()[0].GetEndpoints(); len(eps) != 1 || eps[0].GetWorkload() != "orders-1" {
		t.Errorf("orders endpoints = %v, want itself", eps)
	}

	reloads := func(result string) float64 {
		return counterValue(t, c, "rampart_controller_config_reloads_total", result)
	}

	// An edit is pushed.
	writeFile(t, filepath.Join(dir, "orders.yaml"), strings.Replace(ordersService, "targetPort: 8080", "targetPort: 9090", 1))
	cfg, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if in := cfg.GetInbound(); len(in) != 1 || in[0].GetPort() != 9090 {
		t.Errorf("inbound after edit = %v, want port 9090", in)
	}
	if got := reloads("ok"); got < 1 {
		t.Errorf("reloads{ok} = %v after an edit", got)
	}

	// A broken edit is counted and the last good config stays.
	writeFile(t, filepath.Join(dir, "orders.yaml"), "kind: [broken\n")
	deadline := time.Now().Add(10 * time.Second)
	for reloads("error") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("broken edit not counted in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	again := c.Model().ConfigFor(spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "orders"), "orders-1", nil)
	if in := again.GetInbound(); len(in) != 1 || in[0].GetPort() != 9090 {
		t.Errorf("inbound after a broken edit = %v, want the last good 9090", in)
	}
}

func counterValue(t *testing.T, c *Controller, name, result string) float64 {
	t.Helper()
	mfs, err := c.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{result=%q}", name, result)
	return 0
}

func TestShutdownEndsWatchStreams(t *testing.T) {
	c, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", ShutdownTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Ready()

	p := newProxy(t, c, spiffeid.RequireFromSegments(c.TrustDomain(), "ns", "default", "sa", "web"))
	stream, err := meshv1.NewDiscoveryClient(p.cc).Watch(context.Background(), &meshv1.WatchRequest{
		Workload: &meshv1.Workload{Name: "web-1", TunnelAddress: "127.0.0.1:15008"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	admin := "http://" + c.AdminAddr()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s with a Watch stream open")
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream ended with %v, want Unavailable", err)
	}
	if _, err := http.Get(admin + "/ready"); err == nil {
		t.Error("admin listener still serving after Run returned")
	}
}

func TestServingCertificateRenewal(t *testing.T) {
	c := start(t, Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "off", ServingTTL: 5 * time.Second})
	bundle := &meshtls.Bundle{}
	bundle.SetRoots(c.TrustDomain(), readBundle(t, c.BundlePath()))
	serving := func() *x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", c.Addr(), meshtls.Config{SVID: &meshtls.SVID{}, Bundle: bundle, NextProtos: []string{"h2"}}.Client(ControllerID(c.TrustDomain())))
		if err != nil {
			t.Fatalf("handshake with the controller: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	first := serving()
	deadline := time.Now().Add(10 * time.Second)
	for {
		next := serving()
		if next.SerialNumber.Cmp(first.SerialNumber) != 0 {
			if !next.NotAfter.After(first.NotAfter) {
				t.Errorf("renewed certificate expires at %v, not after %v", next.NotAfter, first.NotAfter)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("serving certificate not renewed in 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
