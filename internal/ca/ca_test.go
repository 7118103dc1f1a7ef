package ca

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// t0 is the time tests start at. Certificates carry whole seconds.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a settable clock for Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *clock { return &clock{now: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

func testConfig(dir string, clk *clock) Config {
	return Config{Dir: dir, TrustDomain: testTD, Now: clk.Now}
}

func mustOpen(t *testing.T, cfg Config) *CA {
	t.Helper()
	c, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}

// wantErr fails t unless err is non-nil and its message contains every one
// of subs.
func wantErr(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{name: "minimal", cfg: Config{Dir: "/x", TrustDomain: testTD}},
		{name: "all set", cfg: Config{Dir: "/x", TrustDomain: testTD, RootTTL: time.Hour, IntermediateTTL: time.Minute, Now: time.Now}},
		{name: "no dir", cfg: Config{TrustDomain: testTD}, wantErr: []string{"Dir is required"}},
		{name: "no trust domain", cfg: Config{Dir: "/x"}, wantErr: []string{"TrustDomain is required"}},
		{name: "negative root ttl", cfg: Config{Dir: "/x", TrustDomain: testTD, RootTTL: -time.Second}, wantErr: []string{"RootTTL"}},
		{name: "negative intermediate ttl", cfg: Config{Dir: "/x", TrustDomain: testTD, IntermediateTTL: -time.Second}, wantErr: []string{"IntermediateTTL"}},
		{name: "everything wrong", cfg: Config{RootTTL: -1, IntermediateTTL: -1}, wantErr: []string{"Dir", "TrustDomain", "RootTTL", "IntermediateTTL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantErr(t, err, tt.wantErr...)
			if !strings.HasPrefix(err.Error(), "ca: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestOpenRefusesInvalidConfig(t *testing.T) {
	_, err := Open(Config{Dir: t.TempDir()})
	wantErr(t, err, "TrustDomain is required")
}

func TestOpenCreatesState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "ca")
	clk := newClock(t0)
	c := mustOpen(t, testConfig(dir, clk))

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("state directory mode %04o, want 0700", got)
	}
	for _, name := range []string{rootKeyFile, intermediateKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode %04o, want 0600", name, got)
		}
	}
	for _, name := range []string{rootCertFile, intermediateCertFile} {
		if _, err := readCert(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	td, err := os.ReadFile(filepath.Join(dir, trustDomainFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(td)); got != "example.org" {
		t.Errorf("trust-domain file holds %q", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}

	if c.TrustDomain() != testTD {
		t.Errorf("TrustDomain() = %v", c.TrustDomain())
	}
	roots := c.Roots()
	if len(roots) != 1 {
		t.Fatalf("Roots() has %d certificates, want 1", len(roots))
	}
	root, inter := roots[0], c.Intermediate()

	checkCA := func(name string, cert *x509.Certificate) {
		t.Helper()
		if !cert.IsCA || !cert.BasicConstraintsValid {
			t.Errorf("%s: not a CA", name)
		}
		if cert.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
			t.Errorf("%s: KeyUsage %v", name, cert.KeyUsage)
		}
		if cert.PublicKeyAlgorithm != x509.ECDSA {
			t.Errorf("%s: key algorithm %v, want ECDSA", name, cert.PublicKeyAlgorithm)
		}
		if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://example.org" {
			t.Errorf("%s: URIs %v, want [spiffe://example.org]", name, cert.URIs)
		}
		if len(cert.SubjectKeyId) == 0 {
			t.Errorf("%s: no SubjectKeyId", name)
		}
		if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 128 {
			t.Errorf("%s: serial %v is not a positive 128-bit number", name, cert.SerialNumber)
		}
		if got := cert.Subject.Organization; len(got) != 1 || got[0] != "Rampart" {
			t.Errorf("%s: Subject O %v", name, got)
		}
	}
	checkCA("root", root)
	checkCA("intermediate", inter)

	if got, want := root.Subject.CommonName, "Rampart root CA example.org"; got != want {
		t.Errorf("root CN %q, want %q", got, want)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if got, want := root.NotAfter, t0.Add(DefaultRootTTL); !got.Equal(want) {
		t.Errorf("root NotAfter %v, want %v", got, want)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate is not signed by root: %v", err)
	}
	if inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate MaxPathLen %d (zero %v), want 0", inter.MaxPathLen, inter.MaxPathLenZero)
	}
	if got, want := inter.NotAfter, t0.Add(DefaultIntermediateTTL); !got.Equal(want) {
		t.Errorf("intermediate NotAfter %v, want %v", got, want)
	}
	if string(inter.AuthorityKeyId) != string(root.SubjectKeyId) {
		t.Errorf("intermediate AuthorityKeyId does not name the root")
	}
	if root.SerialNumber.Cmp(inter.SerialNumber) == 0 {
		t.Errorf("root and intermediate share serial %v", root.SerialNumber)
	}
}

func TestReopenLoadsSameState(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	first := mustOpen(t, testConfig(dir, clk))
	clk.Advance(24 * time.Hour)
	second := mustOpen(t, testConfig(dir, clk))
	if !first.Roots()[0].Equal(second.Roots()[0]) {
		t.Error("reopening created a new root")
	}
	if !first.Intermediate().Equal(second.Intermediate()) {
		t.Error("reopening replaced an intermediate that was not due")
	}
	// The reopened CA signs with the loaded key.
	csr := newCSR(t, csrOpts{})
	chain, err := second.SignCSR(csr, workloadID, time.Hour)
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	verifySVID(t, chain, first.Roots(), clk.Now())
}

func TestOpenRefusesLooseKeyMode(t *testing.T) {
	for _, file := range []string{rootKeyFile, intermediateKeyFile} {
		for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644, 0o610, 0o601} {
			t.Run(file+"/"+mode.String(), func(t *testing.T) {
				dir := t.TempDir()
				clk := newClock(t0)
				mustOpen(t, testConfig(dir, clk))
				path := filepath.Join(dir, file)
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				_, err := Open(testConfig(dir, clk))
				wantErr(t, err, path, "chmod 600 "+path)
			})
		}
	}
}

func TestOpenAcceptsOwnerOnlyKeyModes(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	mustOpen(t, testConfig(dir, clk))
	for _, file := range []string{rootKeyFile, intermediateKeyFile} {
		if err := os.Chmod(filepath.Join(dir, file), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	mustOpen(t, testConfig(dir, clk))
}

func TestOpenRefusesTrustDomainMismatch(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	mustOpen(t, testConfig(dir, clk))
	cfg := testConfig(dir, clk)
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("other.example")
	_, err := Open(cfg)
	wantErr(t, err, `trust domain "example.org"`, `not "other.example"`)
}

func TestOpenRefusesExpiredRoot(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	cfg := testConfig(dir, clk)
	cfg.RootTTL = 48 * time.Hour
	cfg.IntermediateTTL = time.Hour
	mustOpen(t, cfg)
	clk.Set(t0.Add(48 * time.Hour))
	_, err := Open(cfg)
	wantErr(t, err, filepath.Join(dir, rootCertFile), "expired at 2030-01-04T03:04:05Z", "create a new CA")
}

func TestOpenRefusesRootFromTheFuture(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	mustOpen(t, testConfig(dir, clk))
	clk.Set(t0.Add(-time.Hour))
	_, err := Open(testConfig(dir, clk))
	wantErr(t, err, "not valid until", "check the system clock")
}

// TestOpenRefusesInconsistentState damages a CA directory in the ways a
// bad restore or tampering would and checks that Open refuses each.
func TestOpenRefusesInconsistentState(t *testing.T) {
	// other is a second CA of the same trust domain to take files from.
	otherDir := t.TempDir()
	mustOpen(t, testConfig(otherDir, newClock(t0)))
	copyFrom := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(otherDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	write := func(name, content string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	remove := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr []string
	}{
		{name: "intermediate from another root", damage: func(t *testing.T, dir string) {
			copyFrom(intermediateCertFile)(t, dir)
			copyFrom(intermediateKeyFile)(t, dir)
		}, wantErr: []string{intermediateCertFile, "not signed by the root"}},
		{name: "intermediate key of another CA", damage: copyFrom(intermediateKeyFile), wantErr: []string{intermediateKeyFile, "does not hold the key of"}},
		{name: "root key of another CA", damage: copyFrom(rootKeyFile), wantErr: []string{rootKeyFile, "does not hold the key of"}},
		{name: "root of another CA", damage: copyFrom(rootCertFile), wantErr: []string{rootKeyFile, "does not hold the key of"}},
		{name: "root certificate is the intermediate", damage: func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(dir, intermediateCertFile))
			if err != nil {
				t.Fatal(err)
			}
			write(rootCertFile, string(data))(t, dir)
		}, wantErr: []string{"not a self-signed root"}},
		{name: "garbage root certificate", damage: write(rootCertFile, "not PEM"), wantErr: []string{rootCertFile, "no PEM CERTIFICATE"}},
		{name: "garbage intermediate key", damage: write(intermediateKeyFile, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), wantErr: []string{intermediateKeyFile, "parse"}},
		{name: "EC key instead of PKCS#8", damage: write(rootKeyFile, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), wantErr: []string{rootKeyFile, "PKCS#8"}},
		{name: "two certificates in one file", damage: func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(dir, rootCertFile))
			if err != nil {
				t.Fatal(err)
			}
			write(rootCertFile, string(data)+string(data))(t, dir)
		}, wantErr: []string{rootCertFile, "more than one PEM block"}},
		{name: "bad trust domain file", damage: write(trustDomainFile, "Not A Domain!"), wantErr: []string{trustDomainFile}},
		{name: "root key missing", damage: remove(rootKeyFile), wantErr: []string{"incomplete CA", rootKeyFile, "backup"}},
		{name: "trust domain missing", damage: remove(trustDomainFile), wantErr: []string{"incomplete CA", trustDomainFile}},
		{name: "intermediate key missing", damage: remove(intermediateKeyFile), wantErr: []string{intermediateKeyFile + " is missing", "remove"}},
		{name: "intermediate certificate missing", damage: remove(intermediateCertFile), wantErr: []string{intermediateCertFile + " is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newClock(t0)
			mustOpen(t, testConfig(dir, clk))
			tt.damage(t, dir)
			_, err := Open(testConfig(dir, clk))
			wantErr(t, err, tt.wantErr...)
		})
	}
}

func TestOpenRefusesRootOfAnotherTrustDomain(t *testing.T) {
	// A directory whose trust-domain file was edited to match the config
	// still holds a root for the old trust domain.
	dir := t.TempDir()
	clk := newClock(t0)
	mustOpen(t, testConfig(dir, clk))
	if err := os.WriteFile(filepath.Join(dir, trustDomainFile), []byte("other.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dir, clk)
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("other.example")
	_, err := Open(cfg)
	wantErr(t, err, "not a root of trust domain")
}

func TestOpenReissuesMissingIntermediate(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	first := mustOpen(t, testConfig(dir, clk))
	for _, name := range []string{intermediateCertFile, intermediateKeyFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	second := mustOpen(t, testConfig(dir, clk))
	if !first.Roots()[0].Equal(second.Roots()[0]) {
		t.Error("root changed")
	}
	if first.Intermediate().Equal(second.Intermediate()) {
		t.Error("intermediate not re-issued")
	}
	if err := second.Intermediate().CheckSignatureFrom(second.Roots()[0]); err != nil {
		t.Error(err)
	}
}

func TestOpenRenewsIntermediate(t *testing.T) {
	const ttl = 100 * time.Hour // lifetime 100h1m with the clock skew
	tests := []struct {
		name      string
		after     time.Duration
		wantRenew bool
	}{
		{name: "fresh", after: 0},
		{name: "half way", after: 50 * time.Hour},
		{name: "just before the last tenth", after: 89 * time.Hour},
		{name: "in the last tenth", after: 91 * time.Hour, wantRenew: true},
		{name: "at expiry", after: ttl, wantRenew: true},
		{name: "long expired", after: 30 * ttl, wantRenew: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newClock(t0)
			cfg := testConfig(dir, clk)
			cfg.IntermediateTTL = ttl
			first := mustOpen(t, cfg)

			clk.Advance(tt.after)
			second := mustOpen(t, cfg)
			renewed := !first.Intermediate().Equal(second.Intermediate())
			if renewed != tt.wantRenew {
				t.Fatalf("renewed = %v, want %v", renewed, tt.wantRenew)
			}
			inter := second.Intermediate()
			if !first.Roots()[0].Equal(second.Roots()[0]) {
				t.Error("root changed")
			}
			if err := inter.CheckSignatureFrom(second.Roots()[0]); err != nil {
				t.Errorf("intermediate not signed by root: %v", err)
			}
			if !tt.wantRenew {
				return
			}
			if got, want := inter.NotAfter, clk.Now().Add(ttl); !got.Equal(want) {
				t.Errorf("renewed NotAfter %v, want %v", got, want)
			}
			// The renewal was written: a third Open loads it.
			third := mustOpen(t, cfg)
			if !third.Intermediate().Equal(inter) {
				t.Error("renewed intermediate was not persisted")
			}
			fi, err := os.Stat(filepath.Join(dir, intermediateKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("renewed key mode %04o", fi.Mode().Perm())
			}
		})
	}
}

func TestIntermediateCappedByRoot(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	cfg := testConfig(dir, clk)
	cfg.RootTTL = 10 * time.Hour
	cfg.IntermediateTTL = 20 * time.Hour
	c := mustOpen(t, cfg)
	if got, want := c.Intermediate().NotAfter, c.Roots()[0].NotAfter; !got.Equal(want) {
		t.Errorf("intermediate NotAfter %v, want the root's %v", got, want)
	}
}

// TestConcurrentOpen opens one empty directory from several goroutines at
// once, as several processes starting together would: they must all end
// up with the same root.
func TestConcurrentOpen(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	const n = 8
	cas := make([]*CA, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { cas[i], errs[i] = Open(testConfig(dir, clk)) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Open %d: %v", i, errs[i])
		}
		if !cas[i].Roots()[0].Equal(cas[0].Roots()[0]) {
			t.Errorf("Open %d has another root", i)
		}
	}
}
