package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var servingID = spiffeid.RequireFromString("spiffe://example.org/rampart/controller")

// TestServingIntermediateStaysUnderPreviousRoot: from activate to retire,
// the serving certificate chains to the previous root, which a proxy that
// missed prepare still trusts; retire moves it to the active issuer and is
// not held up by the serving certificate itself.
func TestServingIntermediateStaysUnderPreviousRoot(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	ctrl := mustOpen(t, testConfig(dir, clk))
	cli := mustOpen(t, testConfig(dir, clk))
	oldRoot := ctrl.Roots()[0]
	if !ctrl.ServingIntermediate().Equal(ctrl.Intermediate()) {
		t.Fatal("before a rotation the serving intermediate is not the issuer")
	}
	if _, err := cli.PrepareRoot(); err != nil {
		t.Fatal(err)
	}
	inter, err := cli.ActivateRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := ctrl.Reload(); err != nil {
		t.Fatal(err)
	}
	if !ctrl.Intermediate().Equal(inter) {
		t.Fatal("controller does not issue from the new issuer")
	}
	serving := ctrl.ServingIntermediate()
	if serving.CheckSignatureFrom(oldRoot) != nil {
		t.Fatal("serving intermediate is not under the previous root after activate")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ctrl.IssueServing(key.Public(), servingID, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A proxy that trusts the old root only verifies it.
	verifySVID(t, chain, []*x509.Certificate{oldRoot}, clk.Now())
	// Workloads are issued under the new root.
	leaf, err := ctrl.SignCSR(newCSR(t, csrOpts{}), workloadID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf[1].Equal(inter) {
		t.Error("workload not issued by the new issuer")
	}

	// The serving certificate alone does not hold retire up.
	l := ctrl.LeafOf(chain, "")
	l.Kind = KindServing
	if l.Root != SerialOf(oldRoot) {
		t.Fatalf("serving leaf root %q, want the old root", l.Root)
	}
	if err := ctrl.PublishLeaves([]Leaf{l, ctrl.LeafOf(leaf, "")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.RetireRoot(false); err != nil {
		t.Fatalf("retire with only the serving certificate under the old root: %v", err)
	}
	if err := ctrl.Reload(); err != nil {
		t.Fatal(err)
	}
	if !ctrl.ServingIntermediate().Equal(ctrl.Intermediate()) {
		t.Error("after retire the serving intermediate is not the issuer")
	}
	for _, name := range []string{servingCertFile, servingKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after retire: %v", name, err)
		}
	}
}

// certPair is a test certificate with its key.
type certPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// makeCert signs tmpl with parent (self-signed if nil).
func makeCert(t *testing.T, tmpl *x509.Certificate, parent *certPair) certPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return certPair{cert: cert, key: key}
}

func caTemplate(cn string, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{testTD.ID().URL()},
	}
}

// writeExternal writes an external CA's files into a new directory.
func writeExternal(t *testing.T, roots []*x509.Certificate, inter certPair) External {
	t.Helper()
	dir := t.TempDir()
	ext := External{
		BundleFile: filepath.Join(dir, "bundle.pem"),
		CertFile:   filepath.Join(dir, "tls.crt"),
		KeyFile:    filepath.Join(dir, "tls.key"),
	}
	writeBundleFile(t, ext.BundleFile, roots...)
	if err := writeCert(ext.CertFile, inter.cert); err != nil {
		t.Fatal(err)
	}
	if err := writeKey(ext.KeyFile, inter.key); err != nil {
		t.Fatal(err)
	}
	return ext
}

func writeBundleFile(t *testing.T, path string, roots ...*x509.Certificate) {
	t.Helper()
	var data []byte
	for _, r := range roots {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestExternalIntermediateChecks(t *testing.T) {
	from, to := t0.Add(-time.Hour), t0.Add(365*24*time.Hour)
	root := makeCert(t, caTemplate("root", from, to), nil)
	openExt := func(ext External) error {
		cfg := testConfig(t.TempDir(), newClock(t0))
		cfg.External = &ext
		_, err := Open(cfg)
		return err
	}

	good := makeCert(t, caTemplate("inter", from, t0.Add(30*24*time.Hour)), &root)
	if err := openExt(writeExternal(t, []*x509.Certificate{root.cert}, good)); err != nil {
		t.Fatalf("a good external CA: %v", err)
	}

	t.Run("no cert sign", func(t *testing.T) {
		tmpl := caTemplate("inter", from, t0.Add(30*24*time.Hour))
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		noSign := makeCert(t, tmpl, &root)
		wantErr(t, openExt(writeExternal(t, []*x509.Certificate{root.cert}, noSign)), "does not allow certificate signing")
	})
	t.Run("other trust domain", func(t *testing.T) {
		tmpl := caTemplate("inter", from, t0.Add(30*24*time.Hour))
		tmpl.URIs = []*url.URL{spiffeid.RequireTrustDomainFromString("other.org").ID().URL()}
		foreign := makeCert(t, tmpl, &root)
		wantErr(t, openExt(writeExternal(t, []*x509.Certificate{root.cert}, foreign)), "outside trust domain")
	})
	t.Run("does not verify", func(t *testing.T) {
		// Signed by a root of the bundle, but that root has expired.
		oldRoot := makeCert(t, caTemplate("old root", from, t0.Add(-time.Minute)), nil)
		underExpired := makeCert(t, caTemplate("inter", from, t0.Add(30*24*time.Hour)), &oldRoot)
		wantErr(t, openExt(writeExternal(t, []*x509.Certificate{oldRoot.cert}, underExpired)), "does not verify against the roots")
	})
}

// TestExternalReloadKeepsRootInUse: a rewritten bundle that drops a root a
// live certificate chains to is refused, and the last good state stays.
func TestExternalReloadKeepsRootInUse(t *testing.T) {
	from, to := t0.Add(-time.Hour), t0.Add(365*24*time.Hour)
	rootA := makeCert(t, caTemplate("root A", from, to), nil)
	rootB := makeCert(t, caTemplate("root B", from, to), nil)
	interA := makeCert(t, caTemplate("inter A", from, t0.Add(30*24*time.Hour)), &rootA)
	interB := makeCert(t, caTemplate("inter B", from, t0.Add(30*24*time.Hour)), &rootB)
	ext := writeExternal(t, []*x509.Certificate{rootA.cert, rootB.cert}, interA)
	clk := newClock(t0)
	cfg := testConfig(t.TempDir(), clk)
	cfg.External = &ext
	c := mustOpen(t, cfg)
	leaf, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PublishLeaves([]Leaf{c.LeafOf(leaf, "")}); err != nil {
		t.Fatal(err)
	}

	// The external CA moves to root B and drops root A at once.
	if err := writeCert(ext.CertFile, interB.cert); err != nil {
		t.Fatal(err)
	}
	if err := writeKey(ext.KeyFile, interB.key); err != nil {
		t.Fatal(err)
	}
	writeBundleFile(t, ext.BundleFile, rootB.cert)
	err = c.Reload()
	if !errors.Is(err, ErrLeavesInUse) {
		t.Fatalf("Reload of a bundle without a root in use: %v, want ErrLeavesInUse", err)
	}
	wantErr(t, err, SerialOf(rootA.cert), SerialOf(leaf[0]))
	if len(c.Roots()) != 2 || !c.Intermediate().Equal(interA.cert) {
		t.Error("the last good state was not kept")
	}

	// Staged: root A stays in the bundle while B issues.
	writeBundleFile(t, ext.BundleFile, rootA.cert, rootB.cert)
	if err := c.Reload(); err != nil {
		t.Fatalf("Reload with both roots: %v", err)
	}
	if !c.Intermediate().Equal(interB.cert) {
		t.Fatal("new intermediate not adopted")
	}
	// Once the leaf has expired, root A may go.
	clk.Advance(time.Hour + time.Second)
	writeBundleFile(t, ext.BundleFile, rootB.cert)
	if err := c.Reload(); err != nil {
		t.Fatalf("Reload after the leaf expired: %v", err)
	}
	if len(c.Roots()) != 1 {
		t.Errorf("%d roots, want 1", len(c.Roots()))
	}
}
