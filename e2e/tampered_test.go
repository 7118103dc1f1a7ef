package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/codedigest"
	"github.com/rampart-mesh/rampart/internal/controller"
	demoapps "github.com/rampart-mesh/rampart/internal/demo/apps"
)

// envBinDir names the directory holding the real rampart-proxy.
const envBinDir = "RAMPART_BIN_DIR"

// TestTamperedBuildGetsNoIdentity builds one demo service, orders, twice
// from the same source: the release build and a build with a one-line
// change (its version string, set with -ldflags -X). The release build is
// signed with `rampart code sign`; the changed build carries a copy of
// that signature file. A WorkloadAttestationPolicy admits only code signed
// by the release key, run by the pinned rampart-proxy build. Each build
// runs as the app of a real rampart-proxy (rampart-proxy -- <orders>) that
// obtains its identity over the controller's Unix attestation socket,
// where the controller measures the app.
//
// The signed build gets spiffe://.../sa/orders and its calls to payments
// succeed, payments seeing that identity; the changed build's proxy is
// refused (the reason names the changed build's digest), stops its app
// and exits non-zero, so nothing of it reaches payments.
//
//	go build -o /tmp/bin/ ./cmd/... && RAMPART_BIN_DIR=/tmp/bin go test ./e2e -run TestTamperedBuildGetsNoIdentity -v
func TestTamperedBuildGetsNoIdentity(t *testing.T) {
	binDir := os.Getenv(envBinDir)
	if binDir == "" {
		t.Skipf("set %s to a directory holding rampart-proxy (make build puts it in ./bin)", envBinDir)
	}
	proxyBin := filepath.Join(binDir, "rampart-proxy")
	if _, err := os.Stat(proxyBin); err != nil {
		t.Skipf("%s=%s: %v", envBinDir, binDir, err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("building the demo service needs the go command: %v", err)
	}
	if testing.Short() {
		t.Skip("end-to-end test")
	}

	// Two builds of the same service, one line apart.
	work := t.TempDir()
	release, tampered := filepath.Join(work, "orders"), filepath.Join(work, "orders-tampered")
	for bin, version := range map[string]string{release: "1.4.2", tampered: "1.4.2-patched"} {
		build := exec.Command(goTool, "build", "-ldflags", "-X main.version="+version, "-o", bin, "./cmd/rampart")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", bin, err, out)
		}
	}

	// The release key signs the release build, with the CLI.
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(work, "release.key")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(release, "code", "sign", "--key", keyPath, release).CombinedOutput(); err != nil {
		t.Fatalf("rampart code sign: %v\n%s", err, out)
	}
	sig, err := os.ReadFile(release + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tampered+".sig", sig, 0o644); err != nil {
		t.Fatal(err)
	}
	releaseDigest, tamperedDigest, proxyDigest := fileDigest(t, release), fileDigest(t, tampered), fileDigest(t, proxyBin)
	if releaseDigest == tamperedDigest {
		t.Fatal("the two builds are identical")
	}

	// payments, in this process, behind an in-process proxy.
	paymentsAddr := freeAddr(t)
	runApp(t, demoapps.Config{Role: demoapps.RolePayments, Listen: paymentsAddr})
	_, paymentsPort, _ := net.SplitHostPort(paymentsAddr)

	sock := filepath.Join(shortTempDir(t), "attest.sock")
	pubPEM := strings.ReplaceAll(strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))), "\n", "\n        ")
	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: payments, namespace: %[1]s}
spec:
  selector: {app: payments}
  ports: [{name: grpc, port: 50051, targetPort: %[2]s, protocol: GRPC}]
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: payments-from-orders, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: payments}}
  action: ALLOW
  rules:
  - from:
    - principals: ["spiffe://%[3]s/ns/%[1]s/sa/orders"]
---
apiVersion: rampart.dev/v1alpha1
kind: WorkloadAttestationPolicy
metadata: {name: orders, namespace: %[1]s}
spec:
  serviceAccount: orders
  code:
    signers:
    - name: release
      publicKey: |
        %[4]s
  proxyCode:
    digests: ["%[5]s"]
  unix: {uids: [%[6]d]}
`, ns, paymentsPort, trustDomain, pubPEM, proxyDigest, os.Getuid()), func(c *controller.Config) { c.AttestSocket = sock })
	m.startProxy(proxyOpts{name: "payments", labels: map[string]string{"app": "payments"}}, true)

	// The release build: identity issued, its calls reach payments.
	signed := m.startBinaryProxy(t, proxyBin, sock, "orders-release", release)
	var order demoapps.OrderResponse
	eventually(t, 20*time.Second, func() error {
		if err := signed.exited(); err != nil {
			return fmt.Errorf("%w; its log:\n%s", err, signed.log())
		}
		return getJSON("http://"+signed.appAddr+"/orders/1", &order)
	})
	wantID := fmt.Sprintf("spiffe://%s/ns/%s/sa/orders", trustDomain, ns)
	if order.Payment.Caller != wantID {
		t.Errorf("payments saw the signed build's calls as %q, want %q", order.Payment.Caller, wantID)
	}

	// The changed build: refused, its app stopped, its proxy gone.
	before := certifyRefusals(t, m, "code_not_allowed")
	bad := m.startBinaryProxy(t, proxyBin, sock, "orders-tampered", tampered)
	var exitErr error
	select {
	case <-bad.done:
		exitErr = bad.err
	case <-time.After(30 * time.Second):
		t.Fatalf("the proxy of the changed build is still running; its log:\n%s", bad.log())
	}
	var ee *exec.ExitError
	if !errors.As(exitErr, &ee) || ee.ExitCode() == 0 {
		t.Errorf("the proxy of the changed build exited with %v, want a non-zero status", exitErr)
	}
	log := bad.log()
	for _, want := range []string{"controller refused the certificate request", "code " + tamperedDigest, "app process", "the app was stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("the refused proxy's output does not say %q:\n%s", want, log)
		}
	}
	if got := certifyRefusals(t, m, "code_not_allowed"); got <= before {
		t.Errorf("rampart_controller_certify_total{reason=code_not_allowed} = %v, was %v: the refusal was not counted", got, before)
	}
	// Nothing of the changed build is left to call payments.
	for _, addr := range []string{bad.appAddr, bad.upstreamAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the refused proxy exited", addr)
		}
	}

	// The release build keeps working; on SIGTERM its proxy stops the app
	// and exits with the app's status.
	if err := getJSON("http://"+signed.appAddr+"/orders/2", &order); err != nil || order.Payment.Caller != wantID {
		t.Errorf("the signed build after the refusal: %v, caller %q", err, order.Payment.Caller)
	}
	if err := signed.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-signed.done:
		if signed.err != nil {
			t.Errorf("the signed build's proxy exited with %v after SIGTERM, want the app's status 0; its log:\n%s", signed.err, signed.log())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the signed build's proxy did not exit within 30s of SIGTERM")
	}
	if c, err := net.DialTimeout("tcp", signed.appAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("the signed build's app still listens at %s after its proxy exited", signed.appAddr)
	}
	if releaseDigest == proxyDigest {
		t.Error("the app's digest is the proxy's")
	}
}

// binaryProxy is a real rampart-proxy process running a demo orders app.
type binaryProxy struct {
	cmd                   *exec.Cmd
	appAddr, upstreamAddr string
	out                   *syncBuffer
	done                  chan struct{}
	err                   error // how it exited; set before done is closed
}

func (b *binaryProxy) log() string { return b.out.String() }

// exited returns an error if the process has exited.
func (b *binaryProxy) exited() error {
	select {
	case <-b.done:
		return fmt.Errorf("the proxy exited: %v", b.err)
	default:
		return nil
	}
}

// startBinaryProxy runs proxyBin as the orders workload, over the
// attestation socket, with orders (a build of the rampart CLI) as its app.
func (m *mesh) startBinaryProxy(t *testing.T, proxyBin, sock, name, orders string) *binaryProxy {
	t.Helper()
	b := &binaryProxy{appAddr: freeAddr(t), upstreamAddr: freeAddr(t), out: &syncBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(proxyBin,
		"--controller", "unix://"+sock,
		"--trust-bundle", m.bundlePath,
		"--namespace", ns, "--service-account", "orders", "--workload", name,
		"--labels", "app=orders",
		"--tunnel-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--upstream", "payments="+b.upstreamAddr,
		"--drain-timeout", "2s",
		"--",
		orders, "demo-app", "--role", "orders", "--listen", b.appAddr, "--payments", b.upstreamAddr,
	)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = b.cmd.Process.Kill()
			<-b.done
		}
		if t.Failed() {
			t.Logf("%s:\n%s", name, b.log())
		}
	})
	return b
}

// syncBuffer is a bytes.Buffer safe for a process's two output streams
// and the test reading them.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := codedigest.Sum(f, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l := listen(t)
	addr := l.Addr().String()
	l.Close()
	return addr
}

// shortTempDir is a directory with a short path: socket paths hold at
// most 107 bytes, which t.TempDir can exceed.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runApp runs a demo app in this process until the test ends, and waits
// until it accepts connections.
func runApp(t *testing.T, cfg demoapps.Config) {
	t.Helper()
	a, err := demoapps.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s app: %v", cfg.Role, err)
		}
	})
	eventually(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", cfg.Listen, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s %s", url, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

// certifyRefusals reads rampart_controller_certify_total for refusals
// with reason.
func certifyRefusals(t *testing.T, m *mesh, reason string) float64 {
	t.Helper()
	mfs, err := m.ctrl.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "rampart_controller_certify_total" {
			continue
		}
		for _, metric := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["result"] == "refused" && labels["reason"] == reason {
				n += metric.GetCounter().GetValue()
			}
		}
	}
	return n
}
