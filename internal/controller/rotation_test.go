package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/rampart-mesh/rampart/internal/ca"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// startStoppable runs a controller like start, and returns a function that
// stops it and waits for Run to return.
func startStoppable(t *testing.T, cfg Config) (*Controller, func()) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready in 10s")
	}
	return c, stop
}

func waitFor(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not in %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openCLI opens the controller's CA as `rampart identity` does.
func openCLI(t *testing.T, stateDir string, td spiffeid.TrustDomain) *ca.CA {
	t.Helper()
	cli, err := ca.Open(ca.Config{Dir: filepath.Join(stateDir, CADir), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// recorded waits until the published record of leaves in use holds serial.
func recorded(t *testing.T, cli *ca.CA, serial func() string) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		leaves, err := cli.RecordedLeaves()
		if err != nil {
			return err
		}
		want := serial()
		if !slices.ContainsFunc(leaves, func(l ca.Leaf) bool { return l.Serial == want }) {
			return fmt.Errorf("serial %s not in the record %+v", want, leaves)
		}
		return nil
	})
}

func workloadSerial(t *testing.T, c *Controller, id spiffeid.ID) string {
	t.Helper()
	for _, l := range c.IdentityStatus().Workloads {
		if l.SPIFFEID == id.String() {
			return l.Serial
		}
	}
	t.Fatalf("no certificate of %s in use", id)
	return ""
}

// TestRestartKeepsRecordOfLeavesInUse: a controller restarted between
// activate and retire still knows the certificates under the old root, and
// retire stays refused while they are unexpired.
func TestRestartKeepsRecordOfLeavesInUse(t *testing.T) {
	stateDir := t.TempDir()
	cfg := Config{StateDir: stateDir, Listen: "127.0.0.1:0", AdminListen: "off", CAPollInterval: 50 * time.Millisecond}
	c1, stop1 := startStoppable(t, cfg)
	td := c1.TrustDomain()
	id := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "web")
	newProxy(t, c1, id)
	serial := workloadSerial(t, c1, id)
	cli := openCLI(t, stateDir, td)
	recorded(t, cli, func() string { return serial })

	if _, err := cli.PrepareRoot(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ActivateRoot(); err != nil {
		t.Fatal(err)
	}
	stop1()

	c2, _ := startStoppable(t, cfg)
	// The new run has published its record (with its serving certificate).
	recorded(t, cli, func() string { return ca.SerialOf(c2.svid.Get().Certificates[0]) })
	_, err := cli.RetireRoot(false)
	var inUse *ca.LeavesInUseError
	if !errors.As(err, &inUse) || len(inUse.Leaves) != 1 || inUse.Leaves[0].Serial != serial {
		t.Fatalf("retire after a restart with a live leaf under the old root: %v, want it refused naming %s", err, serial)
	}
	if got := workloadSerial(t, c2, id); got != serial {
		t.Errorf("status after restart lists %s, want %s", got, serial)
	}
	// The earlier run's serving certificate is not carried over.
	for _, l := range c2.IdentityStatus().Workloads {
		if l.SPIFFEID == ControllerID(td).String() && l.Serial != ca.SerialOf(c2.svid.Get().Certificates[0]) {
			t.Errorf("the earlier run's serving certificate %s is still listed", l.Serial)
		}
	}
}

// dialController handshakes with the controller trusting roots only.
func dialController(c *Controller, roots []*x509.Certificate) (*tls.ConnectionState, error) {
	bundle := &meshtls.Bundle{}
	bundle.SetRoots(c.TrustDomain(), roots)
	conn, err := tls.Dial("tcp", c.Addr(), meshtls.Config{SVID: &meshtls.SVID{}, Bundle: bundle, NextProtos: []string{"h2"}}.Client(ControllerID(c.TrustDomain())))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	return &cs, nil
}

// TestProxyWithOldRootOnlyReachesControllerAfterActivate: a proxy offline
// during prepare (it never received the new root) still verifies the
// controller after activate and receives the new bundle from it. After
// retire the serving certificate moves to the new root.
func TestProxyWithOldRootOnlyReachesControllerAfterActivate(t *testing.T) {
	stateDir := t.TempDir()
	c := start(t, Config{StateDir: stateDir, Listen: "127.0.0.1:0", AdminListen: "off", CAPollInterval: 50 * time.Millisecond})
	td := c.TrustDomain()
	oldRoots := readBundle(t, c.BundlePath())
	p := newProxy(t, c, spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "web"))
	cli := openCLI(t, stateDir, td)

	newRoot, err := cli.PrepareRoot()
	if err != nil {
		t.Fatal(err)
	}
	newInter, err := cli.ActivateRoot()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		if got := c.IdentityStatus().Issuer.Serial; got != ca.SerialOf(newInter) {
			return fmt.Errorf("controller issues from %s, not the new issuer", got)
		}
		if n := len(readBundle(t, c.BundlePath())); n != 2 {
			return fmt.Errorf("bundle file holds %d roots", n)
		}
		return nil
	})
	// Let a few polls pass: nothing may move the serving certificate.
	time.Sleep(200 * time.Millisecond)

	// A fresh connection, trusting the old root only.
	if _, err := dialController(c, oldRoots); err != nil {
		t.Fatalf("a proxy that trusts only the old root cannot verify the controller after activate: %v", err)
	}
	cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(p.tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := meshv1.NewDiscoveryClient(cc).Watch(ctx, &meshv1.WatchRequest{
		Workload: &meshv1.Workload{Name: "web-1", TunnelAddress: "127.0.0.1:15008"},
	})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := stream.Recv()
	if err != nil {
		t.Fatalf("Watch from a proxy that trusts only the old root: %v", err)
	}
	if !slices.ContainsFunc(pc.GetTrustBundle(), func(der []byte) bool { return bytes.Equal(der, newRoot.Raw) }) {
		t.Error("the pushed bundle does not hold the new root")
	}

	// Retire: the serving certificate moves to the new root.
	if _, err := cli.RetireRoot(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		_, err := dialController(c, []*x509.Certificate{newRoot})
		return err
	})
}

func copyFile(t *testing.T, dst string, srcs ...string) {
	t.Helper()
	var data []byte
	for _, src := range srcs {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, b...)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestExternalBundleDroppingRootInUseRefused: a rewritten external bundle
// that drops the root a proxy's certificate chains to is not adopted; the
// refusal is logged and counted and the last good bundle stays.
func TestExternalBundleDroppingRootInUseRefused(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	dirA, dirB, extDir := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{dirA, dirB} {
		if _, err := ca.Open(ca.Config{Dir: d, TrustDomain: td}); err != nil {
			t.Fatal(err)
		}
	}
	ext := &ca.External{
		BundleFile: filepath.Join(extDir, "bundle.pem"),
		CertFile:   filepath.Join(extDir, "tls.crt"),
		KeyFile:    filepath.Join(extDir, "tls.key"),
	}
	copyFile(t, ext.BundleFile, filepath.Join(dirA, "root.crt"), filepath.Join(dirB, "root.crt"))
	copyFile(t, ext.CertFile, filepath.Join(dirA, "intermediate.crt"))
	copyFile(t, ext.KeyFile, filepath.Join(dirA, "intermediate.key"))
	c := start(t, Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "off", ExternalCA: ext, CAPollInterval: 50 * time.Millisecond})
	id := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "web")
	newProxy(t, c, id)
	serial := workloadSerial(t, c, id)
	recorded(t, openCLI(t, c.cfg.StateDir, td), func() string { return serial })

	// The external CA moves to root B and drops root A in one step.
	copyFile(t, ext.CertFile, filepath.Join(dirB, "intermediate.crt"))
	copyFile(t, ext.KeyFile, filepath.Join(dirB, "intermediate.key"))
	copyFile(t, ext.BundleFile, filepath.Join(dirB, "root.crt"))
	waitFor(t, 10*time.Second, func() error {
		if n := counterValue(t, c, "rampart_controller_ca_reloads_total", "error"); n < 1 {
			return fmt.Errorf("ca_reloads_total{error} = %v", n)
		}
		return nil
	})
	if n := len(c.IdentityStatus().TrustAnchors); n != 2 {
		t.Errorf("%d trust anchors after a refused bundle, want the last good 2", n)
	}
	if n := len(readBundle(t, c.BundlePath())); n != 2 {
		t.Errorf("bundle file holds %d roots after a refused bundle, want 2", n)
	}
}
