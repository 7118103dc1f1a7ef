package ca

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRotateIssuerKeepsOldLeavesValid(t *testing.T) {
	clk := newClock(t0)
	c := mustOpen(t, testConfig(t.TempDir(), clk))
	old, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	before := c.Intermediate()
	inter, err := c.RotateIssuer()
	if err != nil {
		t.Fatalf("RotateIssuer: %v", err)
	}
	if inter.Equal(before) || !c.Intermediate().Equal(inter) {
		t.Fatal("issuer not replaced")
	}
	if err := inter.CheckSignatureFrom(c.Roots()[0]); err != nil {
		t.Errorf("new issuer not under the active root: %v", err)
	}
	fresh, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !fresh[1].Equal(inter) {
		t.Error("leaf not signed by the new issuer")
	}
	verifySVID(t, old, c.Roots(), clk.Now())
	verifySVID(t, fresh, c.Roots(), clk.Now())
}

// TestRootRotation walks a root rotation through its stages, with a second
// CA on the same directory standing for the running controller.
func TestRootRotation(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	ctrl := mustOpen(t, testConfig(dir, clk)) // the controller
	cli := mustOpen(t, testConfig(dir, clk))  // the rampart CLI
	oldRoot := ctrl.Roots()[0]
	oldLeaf, err := ctrl.SignCSR(newCSR(t, csrOpts{}), workloadID, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v0 := ctrl.Version()

	// Out of order.
	if _, err := cli.ActivateRoot(); !errors.Is(err, ErrStage) {
		t.Errorf("activate before prepare: %v, want ErrStage", err)
	}
	if _, err := cli.RetireRoot(false); !errors.Is(err, ErrStage) {
		t.Errorf("retire before prepare: %v, want ErrStage", err)
	}

	// Prepare: a second root in the bundle, issuing unchanged.
	newRoot, err := cli.PrepareRoot()
	if err != nil {
		t.Fatalf("PrepareRoot: %v", err)
	}
	if _, err := cli.PrepareRoot(); !errors.Is(err, ErrStage) {
		t.Errorf("second prepare: %v, want ErrStage", err)
	}
	if err := ctrl.Reload(); err != nil {
		t.Fatal(err)
	}
	if ctrl.Version() == v0 {
		t.Error("Version unchanged by prepare")
	}
	wantAnchors(t, ctrl, []string{RoleActive, RoleNext}, oldRoot, newRoot)
	if err := ctrl.Intermediate().CheckSignatureFrom(oldRoot); err != nil {
		t.Error("prepare changed the issuer")
	}

	// Activate: issuing under the new root, both trusted.
	inter, err := cli.ActivateRoot()
	if err != nil {
		t.Fatalf("ActivateRoot: %v", err)
	}
	if err := inter.CheckSignatureFrom(newRoot); err != nil {
		t.Fatalf("new issuer not under the new root: %v", err)
	}
	if err := ctrl.Reload(); err != nil {
		t.Fatal(err)
	}
	wantAnchors(t, ctrl, []string{RoleActive, RolePrevious}, newRoot, oldRoot)
	newLeaf, err := ctrl.SignCSR(newCSR(t, csrOpts{}), workloadID, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !newLeaf[1].Equal(inter) {
		t.Error("controller does not issue from the new issuer")
	}
	verifySVID(t, oldLeaf, ctrl.Roots(), clk.Now())
	verifySVID(t, newLeaf, ctrl.Roots(), clk.Now())

	// Retire: refused without a record, with a stale one, and while a
	// leaf in use chains to the old root.
	if _, err := cli.RetireRoot(false); !errors.Is(err, ErrLeavesInUse) {
		t.Errorf("retire without a record: %v, want ErrLeavesInUse", err)
	}
	leaves := []Leaf{ctrl.LeafOf(oldLeaf, ""), ctrl.LeafOf(newLeaf, "")}
	if leaves[0].Root != SerialOf(oldRoot) || leaves[1].Root != SerialOf(newRoot) {
		t.Fatalf("LeafOf roots %q %q", leaves[0].Root, leaves[1].Root)
	}
	if err := ctrl.PublishLeaves(leaves); err != nil {
		t.Fatal(err)
	}
	_, err = cli.RetireRoot(false)
	var inUse *LeavesInUseError
	if !errors.As(err, &inUse) || len(inUse.Leaves) != 1 || inUse.Leaves[0].Serial != SerialOf(oldLeaf[0]) {
		t.Fatalf("retire with a live leaf under the old root: %v", err)
	}
	wantErr(t, err, workloadID.String(), "--force")
	// The holder renewed: its old leaf is no longer in use.
	if err := ctrl.PublishLeaves(leaves[1:]); err != nil {
		t.Fatal(err)
	}
	retired, err := cli.RetireRoot(false)
	if err != nil {
		t.Fatalf("RetireRoot: %v", err)
	}
	if !retired.Equal(oldRoot) {
		t.Error("retired another root")
	}
	if err := ctrl.Reload(); err != nil {
		t.Fatal(err)
	}
	wantAnchors(t, ctrl, []string{RoleActive}, newRoot)
	if _, err := os.Stat(filepath.Join(dir, rootKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old root key left behind: %v", err)
	}
	// A fresh process opens the rotated directory.
	wantAnchors(t, mustOpen(t, testConfig(dir, clk)), []string{RoleActive}, newRoot)
	verifySVID(t, newLeaf, ctrl.Roots(), clk.Now())

	// A second rotation works the same way.
	if _, err := cli.PrepareRoot(); err != nil {
		t.Fatalf("second rotation: %v", err)
	}
}

func TestRetireRootStaleRecordAndForce(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	c := mustOpen(t, testConfig(dir, clk))
	leaf, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Written before activation: it cannot speak for the new issuer.
	if err := c.PublishLeaves(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PrepareRoot(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ActivateRoot(); err != nil {
		t.Fatal(err)
	}
	_, err = c.RetireRoot(false)
	wantErr(t, err, "has not taken the new issuer into use")

	// A leaf under the old root that has expired does not hold it up.
	if err := c.PublishLeaves([]Leaf{c.LeafOf(leaf, "")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RetireRoot(false); !errors.Is(err, ErrLeavesInUse) {
		t.Fatalf("retire with live leaf: %v", err)
	}
	clk.Advance(time.Hour + time.Second)
	if _, err := c.RetireRoot(false); err != nil {
		t.Fatalf("retire after the leaf expired: %v", err)
	}

	// --force skips the check.
	if _, err := c.PrepareRoot(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ActivateRoot(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RetireRoot(true); err != nil {
		t.Fatalf("forced retire: %v", err)
	}
	if n := len(c.Roots()); n != 1 {
		t.Errorf("%d roots after retire, want 1", n)
	}
}

// TestActivateInterruptedRecovers stands for a crash between the state file
// and the new intermediate: the next Open issues from the active root.
func TestActivateInterruptedRecovers(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	c := mustOpen(t, testConfig(dir, clk))
	oldInter, err := os.ReadFile(filepath.Join(dir, intermediateCertFile))
	if err != nil {
		t.Fatal(err)
	}
	oldKey, err := os.ReadFile(filepath.Join(dir, intermediateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := c.PrepareRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ActivateRoot(); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{intermediateCertFile: oldInter, intermediateKeyFile: oldKey} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	again := mustOpen(t, testConfig(dir, clk))
	if err := again.Intermediate().CheckSignatureFrom(newRoot); err != nil {
		t.Errorf("issuer after recovery not under the active root: %v", err)
	}
}

func wantAnchors(t *testing.T, c *CA, roles []string, roots ...*x509.Certificate) {
	t.Helper()
	got := c.Anchors()
	if len(got) != len(roles) {
		t.Fatalf("%d anchors, want %d", len(got), len(roles))
	}
	for i, a := range got {
		if a.Role != roles[i] || !a.Cert.Equal(roots[i]) {
			t.Errorf("anchor %d: role %s serial %s, want %s %s", i, a.Role, SerialOf(a.Cert), roles[i], SerialOf(roots[i]))
		}
	}
	if n := len(c.Roots()); n != len(roles) {
		t.Errorf("Roots() has %d certificates, want %d", n, len(roles))
	}
}

// externalFiles makes an "external" CA out of a Rampart one in another
// directory: its root as the bundle, its intermediate and key.
func externalFiles(t *testing.T) (*CA, External) {
	t.Helper()
	dir := t.TempDir()
	other := mustOpen(t, testConfig(dir, newClock(t0)))
	return other, External{
		BundleFile: filepath.Join(dir, rootCertFile),
		CertFile:   filepath.Join(dir, intermediateCertFile),
		KeyFile:    filepath.Join(dir, intermediateKeyFile),
	}
}

func TestExternalCA(t *testing.T) {
	other, ext := externalFiles(t)
	dir := t.TempDir()
	clk := newClock(t0)
	cfg := testConfig(dir, clk)
	cfg.External = &ext
	c := mustOpen(t, cfg)
	if !c.External() {
		t.Fatal("External() = false")
	}
	wantAnchors(t, c, []string{RoleActive}, other.Roots()[0])
	chain, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verifySVID(t, chain, other.Roots(), clk.Now())
	if _, err := os.Stat(filepath.Join(dir, rootKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a root key exists in the state directory: %v", err)
	}

	// The CLI opens the directory without flags and finds the external CA.
	cli := mustOpen(t, testConfig(dir, clk))
	if !cli.External() {
		t.Fatal("reopened CA is not external")
	}
	for name, f := range map[string]func() error{
		"prepare":  func() error { _, err := cli.PrepareRoot(); return err },
		"activate": func() error { _, err := cli.ActivateRoot(); return err },
		"retire":   func() error { _, err := cli.RetireRoot(true); return err },
		"issuer":   func() error { _, err := cli.RotateIssuer(); return err },
	} {
		err := f()
		if !errors.Is(err, ErrExternal) {
			t.Errorf("%s: %v, want ErrExternal", name, err)
		}
	}
	_, err = cli.PrepareRoot()
	wantErr(t, err, "external CA's job")

	// A new intermediate from the external CA is imported.
	newInter, err := other.RotateIssuer()
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	for _, name := range []string{intermediateCertFile, intermediateKeyFile} {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(ext.CertFile), name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.ImportIssuer(filepath.Join(dst, intermediateKeyFile), filepath.Join(dst, intermediateKeyFile)); err == nil {
		t.Error("imported a key as a certificate")
	}
	if _, err := cli.ImportIssuer(filepath.Join(dst, intermediateCertFile), filepath.Join(dst, intermediateKeyFile)); err != nil {
		t.Fatalf("ImportIssuer: %v", err)
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if !c.Intermediate().Equal(newInter) {
		t.Error("controller did not adopt the imported intermediate")
	}
	// An intermediate of another CA is refused.
	_, foreign := externalFiles(t)
	_, err = cli.ImportIssuer(foreign.CertFile, foreign.KeyFile)
	wantErr(t, err, "not signed by any root")
}

func TestExternalCARefusals(t *testing.T) {
	_, ext := externalFiles(t)
	clk := newClock(t0)

	// A directory that holds Rampart's own CA.
	dir := t.TempDir()
	mustOpen(t, testConfig(dir, clk))
	cfg := testConfig(dir, clk)
	cfg.External = &ext
	_, err := Open(cfg)
	wantErr(t, err, "holds a CA that Rampart created")

	// Key of another certificate.
	_, foreign := externalFiles(t)
	bad := ext
	bad.KeyFile = foreign.KeyFile
	cfg = testConfig(t.TempDir(), clk)
	cfg.External = &bad
	_, err = Open(cfg)
	wantErr(t, err, "does not hold the key of")

	// Rampart's own CA refuses to import an intermediate.
	own := mustOpen(t, testConfig(t.TempDir(), clk))
	_, err = own.ImportIssuer(ext.CertFile, ext.KeyFile)
	wantErr(t, err, "creates its own intermediates")
}
