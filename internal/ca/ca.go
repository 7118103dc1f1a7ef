package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults for the zero values of Config.
const (
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateTTL = 365 * 24 * time.Hour
)

// clockSkew backdates NotBefore so that peers whose clocks run a little
// behind accept a certificate as soon as it is issued.
const clockSkew = ClockSkew

// ClockSkew is how far before its issue every certificate's NotBefore lies.
const ClockSkew = time.Minute

// Names of the files in the state directory.
const (
	rootCertFile         = "root.crt"
	rootKeyFile          = "root.key"
	intermediateCertFile = "intermediate.crt"
	intermediateKeyFile  = "intermediate.key"
	trustDomainFile      = "trust-domain"

	// lockFile serialises processes that open the same directory, so that
	// two of them never both create a root or renew the intermediate.
	lockFile = ".lock"
)

// organization is the Subject O of every certificate the CA issues.
const organization = "Rampart"

// Config configures Open.
type Config struct {
	// Dir is the state directory. It is created with mode 0700 if missing.
	// Required.
	Dir string
	// TrustDomain is the trust domain the CA issues for. Required; a
	// directory created for one trust domain refuses to open for another.
	TrustDomain spiffeid.TrustDomain
	// RootTTL is the lifetime of a newly created root. Zero means
	// DefaultRootTTL. It does not affect an existing root.
	RootTTL time.Duration
	// IntermediateTTL is the lifetime of a newly issued intermediate,
	// capped by the root's expiry. Zero means DefaultIntermediateTTL.
	IntermediateTTL time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Validate reports what is wrong with c, if anything.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("ca: Dir is required"))
	}
	if c.TrustDomain.IsZero() {
		errs = append(errs, errors.New("ca: TrustDomain is required"))
	}
	if c.RootTTL < 0 {
		errs = append(errs, fmt.Errorf("ca: RootTTL must not be negative, got %s", c.RootTTL))
	}
	if c.IntermediateTTL < 0 {
		errs = append(errs, fmt.Errorf("ca: IntermediateTTL must not be negative, got %s", c.IntermediateTTL))
	}
	return errors.Join(errs...)
}

// CA issues X.509-SVIDs for one trust domain. It is safe for concurrent use.
type CA struct {
	dir      string
	td       spiffeid.TrustDomain
	rootTTL  time.Duration
	interTTL time.Duration
	now      func() time.Time

	// Set by Open, then read-only.
	root    *x509.Certificate
	rootKey crypto.Signer

	mu       sync.Mutex // guards the issuer, which renewal replaces
	inter    *x509.Certificate
	interKey crypto.Signer
}

// Open loads the CA kept in cfg.Dir, creating a new root and intermediate if
// the directory holds none. It re-issues the intermediate if that has
// expired or is within a tenth of its lifetime of expiry, and refuses to
// start if the root has expired or the files are inconsistent.
func Open(cfg Config) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &CA{
		dir:      cfg.Dir,
		td:       cfg.TrustDomain,
		rootTTL:  cfg.RootTTL,
		interTTL: cfg.IntermediateTTL,
		now:      cfg.Now,
	}
	if c.rootTTL == 0 {
		c.rootTTL = DefaultRootTTL
	}
	if c.interTTL == 0 {
		c.interTTL = DefaultIntermediateTTL
	}
	if c.now == nil {
		c.now = time.Now
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: create state directory: %w", err)
	}
	unlock, err := lockPath(c.path(lockFile))
	if err != nil {
		return nil, err
	}
	defer unlock()

	now := c.now()
	rootFiles := []string{trustDomainFile, rootCertFile, rootKeyFile}
	interFiles := []string{intermediateCertFile, intermediateKeyFile}
	present, missing, err := c.inventory(append(rootFiles, interFiles...))
	if err != nil {
		return nil, err
	}
	if len(present) == 0 {
		if err := c.create(now); err != nil {
			return nil, err
		}
		return c, nil
	}
	if slices.ContainsFunc(rootFiles, func(name string) bool { return slices.Contains(missing, name) }) {
		return nil, fmt.Errorf("ca: %s holds an incomplete CA, missing %s; restore the files from a backup, or move the directory away to create a new CA (every workload must then be given the new trust bundle)",
			c.dir, strings.Join(missing, ", "))
	}
	if err := c.loadRoot(now); err != nil {
		return nil, err
	}
	if err := c.syncIntermediateLocked(now); err != nil {
		return nil, err
	}
	return c, nil
}

// TrustDomain returns the trust domain the CA issues for.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Roots returns the trust bundle: the certificates a workload trusts to
// verify SVIDs from this CA. Today it holds one root; it is a slice so that
// roots can rotate. The caller may modify the slice but not the
// certificates.
func (c *CA) Roots() []*x509.Certificate { return []*x509.Certificate{c.root} }

// Intermediate returns the certificate that currently signs leaves.
func (c *CA) Intermediate() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inter
}

func (c *CA) path(name string) string { return filepath.Join(c.dir, name) }

// inventory splits names into the files that exist in the directory and
// those that do not.
func (c *CA) inventory(names []string) (present, missing []string, err error) {
	for _, name := range names {
		ok, err := exists(c.path(name))
		if err != nil {
			return nil, nil, err
		}
		if ok {
			present = append(present, name)
		} else {
			missing = append(missing, name)
		}
	}
	return present, missing, nil
}

// create makes a new root and intermediate in an empty directory. The trust
// domain file is written last: until it exists the directory is incomplete
// and Open refuses it rather than half-trusting it.
func (c *CA) create(now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{organization}, CommonName: "Rampart root CA " + c.td.Name()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(c.rootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		URIs:                  []*url.URL{c.td.ID().URL()},
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("ca: create root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("ca: parse new root certificate: %w", err)
	}
	c.root, c.rootKey = root, key
	if err := writeKey(c.path(rootKeyFile), key); err != nil {
		return err
	}
	if err := writeCert(c.path(rootCertFile), root); err != nil {
		return err
	}
	if err := c.issueIntermediateLocked(now); err != nil {
		return err
	}
	return writeFileAtomic(c.path(trustDomainFile), []byte(c.td.Name()+"\n"), 0o644)
}

// loadRoot reads and checks the trust domain, the root certificate and its
// key.
func (c *CA) loadRoot(now time.Time) error {
	tdPath := c.path(trustDomainFile)
	data, err := readFile(tdPath, false)
	if err != nil {
		return err
	}
	stored, err := spiffeid.TrustDomainFromString(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("ca: %s: %w", tdPath, err)
	}
	if stored != c.td {
		return fmt.Errorf("ca: %s holds the CA of trust domain %q, not %q; configure trust domain %q or use another directory",
			c.dir, stored.Name(), c.td.Name(), stored.Name())
	}

	certPath, keyPath := c.path(rootCertFile), c.path(rootKeyFile)
	root, err := readCert(certPath)
	if err != nil {
		return err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return err
	}
	sigErr := root.CheckSignatureFrom(root)
	switch {
	case !root.BasicConstraintsValid || !root.IsCA:
		return fmt.Errorf("ca: %s is not a CA certificate", certPath)
	case sigErr != nil:
		return fmt.Errorf("ca: %s is not a self-signed root: %w", certPath, sigErr)
	case !publicKeysEqual(root.PublicKey, key.Public()):
		return fmt.Errorf("ca: %s does not hold the key of %s", keyPath, certPath)
	case !hasOnlyURI(root, c.td.ID()):
		return fmt.Errorf("ca: %s is not a root of trust domain %q", certPath, c.td.Name())
	case now.Before(root.NotBefore):
		return fmt.Errorf("ca: root certificate %s is not valid until %s; check the system clock", certPath, root.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(root.NotAfter):
		return fmt.Errorf("ca: root certificate %s expired at %s; the CA cannot issue any more: create a new CA in another directory and give every workload its trust bundle",
			certPath, root.NotAfter.UTC().Format(time.RFC3339))
	}
	c.root, c.rootKey = root, key
	return nil
}

// hasOnlyURI reports whether cert has no URI SAN or only want.
func hasOnlyURI(cert *x509.Certificate, want spiffeid.ID) bool {
	for _, u := range cert.URIs {
		if u.String() != want.String() {
			return false
		}
	}
	return true
}

// syncIntermediateLocked loads the intermediate from the directory, or
// issues a new one if the files are missing, expired or due for renewal.
// Loading first means that a process adopts an intermediate another process
// has just renewed instead of replacing it again. The directory lock must be
// held, and c.mu if other goroutines may be using c.
func (c *CA) syncIntermediateLocked(now time.Time) error {
	certPath, keyPath := c.path(intermediateCertFile), c.path(intermediateKeyFile)
	present, missing, err := c.inventory([]string{intermediateCertFile, intermediateKeyFile})
	if err != nil {
		return err
	}
	switch {
	case len(present) == 0:
		return c.issueIntermediateLocked(now)
	case len(missing) > 0:
		return fmt.Errorf("ca: %s is missing; remove %s and %s too, and a new intermediate will be issued from the root",
			c.path(missing[0]), certPath, keyPath)
	}
	inter, err := readCert(certPath)
	if err != nil {
		return err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return err
	}
	sigErr := inter.CheckSignatureFrom(c.root)
	switch {
	case !inter.BasicConstraintsValid || !inter.IsCA:
		return fmt.Errorf("ca: %s is not a CA certificate", certPath)
	case !bytes.Equal(inter.RawIssuer, c.root.RawSubject):
		return fmt.Errorf("ca: %s was not issued by the root %s", certPath, c.path(rootCertFile))
	case sigErr != nil:
		return fmt.Errorf("ca: %s is not signed by the root %s: %w", certPath, c.path(rootCertFile), sigErr)
	case !publicKeysEqual(inter.PublicKey, key.Public()):
		return fmt.Errorf("ca: %s does not hold the key of %s; remove both and a new intermediate will be issued from the root", keyPath, certPath)
	}
	if dueForRenewal(inter, now) {
		return c.issueIntermediateLocked(now)
	}
	c.inter, c.interKey = inter, key
	return nil
}

// dueForRenewal reports whether cert has expired or is within a tenth of its
// lifetime of expiry.
func dueForRenewal(cert *x509.Certificate, now time.Time) bool {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return !now.Before(cert.NotAfter.Add(-lifetime / 10))
}

// issueIntermediateLocked signs a new intermediate with the root, writes it
// and makes it the issuer. The key is written before the certificate: a
// crash in between leaves a pair that Open reports as mismatched.
func (c *CA) issueIntermediateLocked(now time.Time) error {
	notAfter := now.Add(c.interTTL)
	if notAfter.After(c.root.NotAfter) {
		notAfter = c.root.NotAfter
	}
	if !notAfter.After(now) {
		return fmt.Errorf("ca: root certificate %s expired at %s; create a new CA", c.path(rootCertFile), c.root.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("ca: generate intermediate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{organization}, CommonName: "Rampart intermediate CA " + c.td.Name()},
		NotBefore:             laterOf(now.Add(-clockSkew), c.root.NotBefore),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{c.td.ID().URL()},
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, key.Public(), c.rootKey)
	if err != nil {
		return fmt.Errorf("ca: create intermediate certificate: %w", err)
	}
	inter, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("ca: parse new intermediate certificate: %w", err)
	}
	if err := writeKey(c.path(intermediateKeyFile), key); err != nil {
		return err
	}
	if err := writeCert(c.path(intermediateCertFile), inter); err != nil {
		return err
	}
	c.inter, c.interKey = inter, key
	return nil
}

// issuer returns the intermediate and key to sign with at now, renewing the
// intermediate first if it is due.
func (c *CA) issuer(now time.Time) (*x509.Certificate, crypto.Signer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !dueForRenewal(c.inter, now) {
		return c.inter, c.interKey, nil
	}
	unlock, err := lockPath(c.path(lockFile))
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	// Its errors name the file and what to do.
	if err := c.syncIntermediateLocked(now); err != nil {
		return nil, nil, err
	}
	return c.inter, c.interKey, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlierOf(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
