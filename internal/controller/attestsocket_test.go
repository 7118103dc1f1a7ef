//go:build linux

package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/codedigest"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// socketDir is a directory with a short path: socket paths hold at most
// 107 bytes, which t.TempDir can exceed.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func selfDigest(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/exe")
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

func TestAttestSocket(t *testing.T) {
	state, sock := t.TempDir(), filepath.Join(socketDir(t), "attest.sock")
	t.Cleanup(func() {
		// Runs after the controller stopped.
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			t.Errorf("socket %s left behind after shutdown: %v", sock, err)
		}
	})
	c := start(t, Config{StateDir: state, Listen: "127.0.0.1:0", AdminListen: "off", TrustDomain: "example.org", AttestSocket: sock})
	td := spiffeid.RequireTrustDomainFromString("example.org")

	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != AttestSocketMode {
		t.Errorf("%s is %v, want a socket with mode %o", sock, fi.Mode(), AttestSocketMode)
	}
	if entries, _ := os.ReadDir(filepath.Dir(sock)); len(entries) != 1 {
		t.Errorf("the socket directory holds %d entries, want only the socket", len(entries))
	}

	self := selfDigest(t)
	web := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "web")
	policy := v1alpha1.WorkloadAttestationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: v1alpha1.WorkloadAttestationPolicySpec{
			ServiceAccount: "web",
			Code:           &v1alpha1.CodePolicy{Digests: []string{self}},
			Unix:           &v1alpha1.UnixAttestation{UIDs: []int64{int64(os.Geteuid())}},
		},
	}

	bundle := &meshtls.Bundle{}
	bundle.SetRoots(td, readBundle(t, c.BundlePath()))
	tlsCfg := meshtls.Config{SVID: &meshtls.SVID{}, Bundle: bundle}.Client(ControllerID(td))
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	certify := func() (*meshv1.CertifyResponse, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{web.URL()}}, key)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return meshv1.NewIdentityClient(cc).Certify(ctx, &meshv1.CertifyRequest{Csr: csr})
	}

	// No policy yet: refused.
	if _, err := certify(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Certify before any policy = %v, want PermissionDenied", err)
	}
	if err := c.SetAttestationPolicies([]v1alpha1.WorkloadAttestationPolicy{policy}); err != nil {
		t.Fatal(err)
	}
	resp, err := certify()
	if err != nil {
		t.Fatalf("Certify over the attestation socket: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.GetCertChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := codedigest.FromCertificate(leaf); !ok || got != self {
		t.Errorf("certificate records digest %q, want %q", got, self)
	}

	// An invalid policy set is refused whole; the one in force stays.
	bad := policy
	bad.Name = "broken"
	bad.Spec.Code = &v1alpha1.CodePolicy{Digests: []string{"sha256:nope"}}
	if err := c.SetAttestationPolicies([]v1alpha1.WorkloadAttestationPolicy{bad}); err == nil || !strings.Contains(err.Error(), "shop/broken") {
		t.Errorf("SetAttestationPolicies(invalid) = %v, want an error naming shop/broken", err)
	}
	if _, err := certify(); err != nil {
		t.Errorf("Certify after a refused policy change: %v", err)
	}
}

func TestAttestSocketReplacesStaleSocket(t *testing.T) {
	sock := filepath.Join(socketDir(t), "attest.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	start(t, Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "off", AttestSocket: sock})
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial the replaced socket: %v", err)
	}
	conn.Close()
}

func TestAttestSocketRefusals(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, sock string)
		wantErr string
	}{
		{"a regular file", func(t *testing.T, sock string) {
			if err := os.WriteFile(sock, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is not a socket"},
		{"a socket in use", func(t *testing.T, sock string) {
			lis, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lis.Close() })
			go func() {
				for {
					conn, err := lis.Accept()
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, conn)
					conn.Close()
				}
			}()
		}, "in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(socketDir(t), "attest.sock")
			tt.prepare(t, sock)
			c, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "off", AttestSocket: sock})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Run = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
	if err := (Config{StateDir: t.TempDir(), AttestSocket: "/" + strings.Repeat("d", 100) + "/s"}).Validate(); err == nil {
		t.Error("Validate accepted a socket directory too long to bind in")
	}
}

// TestAttestSocketMeasuresTheApp: a proxy that names the app it runs as its
// child (app_pid) gets a certificate recording the app's digest; a PID
// that is not its child, and an app PID over TCP, are refused.
func TestAttestSocketMeasuresTheApp(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep command")
	}
	child := exec.Command(sleep, "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	})
	appDigest := fileDigest(t, "/proc/"+strconv.Itoa(child.Process.Pid)+"/exe")

	sock := filepath.Join(socketDir(t), "attest.sock")
	c := start(t, Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "off", TrustDomain: "example.org", AttestSocket: sock})
	td := spiffeid.RequireTrustDomainFromString("example.org")
	web := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "web")
	err = c.SetAttestationPolicies([]v1alpha1.WorkloadAttestationPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: v1alpha1.WorkloadAttestationPolicySpec{
			ServiceAccount: "web",
			Code:           &v1alpha1.CodePolicy{Digests: []string{appDigest}},
			ProxyCode:      &v1alpha1.CodePolicy{Digests: []string{selfDigest(t)}},
			Unix:           &v1alpha1.UnixAttestation{UIDs: []int64{int64(os.Geteuid())}},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	bundle := &meshtls.Bundle{}
	bundle.SetRoots(td, readBundle(t, c.BundlePath()))
	tlsCfg := meshtls.Config{SVID: &meshtls.SVID{}, Bundle: bundle}.Client(ControllerID(td))
	certify := func(target string, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, error) {
		cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		req.Csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{web.URL()}}, key)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return meshv1.NewIdentityClient(cc).Certify(ctx, req)
	}

	// Without the app, this process's own code is the workload's: refused.
	if _, err := certify("unix://"+sock, &meshv1.CertifyRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Certify without the app = %v, want PermissionDenied", err)
	}
	resp, err := certify("unix://"+sock, &meshv1.CertifyRequest{AppPid: uint32(child.Process.Pid)})
	if err != nil {
		t.Fatalf("Certify with the app: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.GetCertChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := codedigest.FromCertificate(leaf); !ok || got != appDigest {
		t.Errorf("certificate records digest %q, want the app's %q", got, appDigest)
	}
	_, err = certify("unix://"+sock, &meshv1.CertifyRequest{AppPid: 1})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "not a child") {
		t.Errorf("Certify naming PID 1 = %v, want PermissionDenied: not a child", err)
	}
	_, err = certify(c.Addr(), &meshv1.CertifyRequest{JoinToken: "unused", AppPid: uint32(child.Process.Pid)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "Unix attestation socket") {
		t.Errorf("Certify with an app PID over TCP = %v, want InvalidArgument naming the socket", err)
	}
	for reason, want := range map[string]float64{"app_not_child": 1, "app_needs_unix": 1, "code_not_allowed": 1} {
		if got := refusedCount(t, c, reason); got != want {
			t.Errorf("refusals counted with reason %s: %v, want %v", reason, got, want)
		}
	}
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

// refusedCount reads rampart_controller_certify_total{result="refused"}
// for reason.
func refusedCount(t *testing.T, c *Controller, reason string) float64 {
	t.Helper()
	mfs, err := c.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rampart_controller_certify_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["result"] == "refused" && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
