package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
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
	// servingCertFile and servingKeyFile hold, between a root's activation
	// and its retirement, an intermediate under the previous root that
	// signs the controller's serving certificate only (see
	// ServingIntermediate).
	servingCertFile = "serving-intermediate.crt"
	servingKeyFile  = "serving-intermediate.key"
	trustDomainFile = "trust-domain"
	// stateFile names the roots and their roles once a rotation has
	// happened, or the files of an external CA; without it the directory
	// holds one root, rootName.
	stateFile = "state.json"
	// leavesFile is the controller's record of the leaves in use.
	leavesFile = "leaves.json"
	// rootName is the name of the first root's files.
	rootName = "root"

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
	// External, when set, makes the CA use an existing root bundle and
	// intermediate from files instead of creating its own: Rampart then
	// never holds a root key. Open records the paths in Dir, so that later
	// Opens without External (the rampart CLI) find them. Nil means the
	// directory's own CA, or the external one it records.
	External *External
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

// Roles of the roots a CA trusts; see Anchor.
const (
	// RoleActive is the root under which the issuer was signed.
	RoleActive = "active"
	// RoleNext is a root made by PrepareRoot: trusted, not yet issuing.
	RoleNext = "next"
	// RolePrevious is the root ActivateRoot replaced: still trusted, so
	// that leaves issued under it stay valid until RetireRoot.
	RolePrevious = "previous"
	// RoleTrusted is a root of an external CA's bundle other than the one
	// that signed the issuer.
	RoleTrusted = "trusted"
)

// Anchor is a root certificate the CA's trust bundle holds, with its role.
type Anchor struct {
	Cert *x509.Certificate
	Role string
}

// CA issues X.509-SVIDs for one trust domain. It is safe for concurrent use.
type CA struct {
	dir      string
	td       spiffeid.TrustDomain
	rootTTL  time.Duration
	interTTL time.Duration
	now      func() time.Time
	ext      *External // from Config, applied by Open only

	mu sync.Mutex // guards st, which rotation and renewal replace
	st *state
}

// state is one consistent view of the directory: the roots and the
// issuer. It is replaced, never modified, once published in CA.st.
type state struct {
	ext      *External // nil: Rampart holds the root keys
	roots    []rootCA
	inter    *x509.Certificate
	interKey crypto.Signer
	// servingInter signs the controller's serving certificate while a
	// previous root is trusted: it chains to that root, which every proxy
	// has held the longest. Nil: inter signs it.
	servingInter *x509.Certificate
	servingKey   crypto.Signer
}

// rootCA is a root certificate with, unless external, its key and the name
// of its files (<name>.crt, <name>.key).
type rootCA struct {
	name string
	role string
	cert *x509.Certificate
	key  crypto.Signer // nil for an external root
}

func (s *state) withRole(role string) *rootCA {
	for i := range s.roots {
		if s.roots[i].role == role {
			return &s.roots[i]
		}
	}
	return nil
}

func (s *state) active() *rootCA { return s.withRole(RoleActive) }

func (s *state) clone() *state {
	n := *s
	n.roots = slices.Clone(s.roots)
	return &n
}

// doc is what the state file records of s.
func (s *state) doc() stateDoc {
	var d stateDoc
	if s.ext != nil {
		e := *s.ext
		d.External = &e
		return d
	}
	for _, r := range s.roots {
		d.Roots = append(d.Roots, stateRoot{Name: r.name, Role: r.role})
	}
	return d
}

// Open loads the CA kept in cfg.Dir, creating a new root and intermediate if
// the directory holds none. It re-issues the intermediate if that has
// expired or is within a tenth of its lifetime of expiry, and refuses to
// start if the active root has expired or the files are inconsistent. With
// cfg.External, it uses the external CA's files instead and records their
// paths in the directory.
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
		ext:      cfg.External,
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
	st, err := c.openLocked(c.now(), true)
	if err != nil {
		return nil, err
	}
	c.st = st
	return c, nil
}

// openLocked reads the directory into a state, creating or renewing what
// Open would. With useConfig, Config.External is applied (Open); otherwise
// the directory's state file decides. The directory lock must be held.
func (c *CA) openLocked(now time.Time, useConfig bool) (*state, error) {
	doc, found, err := c.readStateDoc()
	if err != nil {
		return nil, err
	}
	if useConfig && c.ext != nil {
		if !found || doc.External == nil {
			ok, err := exists(c.path(rootKeyFile))
			if err != nil {
				return nil, err
			}
			if ok || (found && len(doc.Roots) > 0) {
				return nil, fmt.Errorf("ca: %s holds a CA that Rampart created; an external CA needs a state directory of its own, or move %s away", c.dir, c.dir)
			}
		}
		ext, err := c.ext.absolute()
		if err != nil {
			return nil, err
		}
		st, err := c.loadExternalLocked(ext, now, !found)
		if err != nil {
			return nil, err
		}
		if !found || doc.External == nil || *doc.External != ext {
			if err := c.writeStateDoc(st.doc()); err != nil {
				return nil, err
			}
		}
		return st, nil
	}
	if found && doc.External != nil {
		st, err := c.loadExternalLocked(*doc.External, now, false)
		if err != nil {
			return nil, err
		}
		if err := c.checkExternalRootsKept(st, now); err != nil {
			return nil, err
		}
		return st, nil
	}
	if !found {
		rootFiles := []string{trustDomainFile, rootCertFile, rootKeyFile}
		interFiles := []string{intermediateCertFile, intermediateKeyFile}
		present, missing, err := c.inventory(append(rootFiles, interFiles...))
		if err != nil {
			return nil, err
		}
		if len(present) == 0 {
			return c.create(now)
		}
		if slices.ContainsFunc(rootFiles, func(name string) bool { return slices.Contains(missing, name) }) {
			return nil, fmt.Errorf("ca: %s holds an incomplete CA, missing %s; restore the files from a backup, or move the directory away to create a new CA (every workload must then be given the new trust bundle)",
				c.dir, strings.Join(missing, ", "))
		}
		doc = stateDoc{Roots: []stateRoot{{Name: rootName, Role: RoleActive}}}
	}
	return c.loadInternalLocked(doc, now)
}

// TrustDomain returns the trust domain the CA issues for.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

func (c *CA) state() *state {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Roots returns the trust bundle: every root a workload trusts to verify
// SVIDs from this CA, the active one first. During a root rotation it holds
// the next or the previous root too. The caller may modify the slice but
// not the certificates.
func (c *CA) Roots() []*x509.Certificate {
	var out []*x509.Certificate
	for _, a := range c.Anchors() {
		out = append(out, a.Cert)
	}
	return out
}

// Anchors returns the roots with their roles, the active one first.
func (c *CA) Anchors() []Anchor {
	st := c.state()
	out := make([]Anchor, 0, len(st.roots))
	for _, role := range []string{RoleActive, RoleNext, RolePrevious, RoleTrusted} {
		for _, r := range st.roots {
			if r.role == role {
				out = append(out, Anchor{Cert: r.cert, Role: r.role})
			}
		}
	}
	return out
}

// Intermediate returns the certificate that currently signs leaves.
func (c *CA) Intermediate() *x509.Certificate { return c.state().inter }

// ServingIntermediate returns the certificate that signs the controller's
// serving certificate (IssueServing). Between ActivateRoot and RetireRoot
// it is an intermediate under the previous root, so that a proxy that
// missed the new root (offline during PrepareRoot) still verifies the
// controller and can fetch the new bundle; otherwise it is Intermediate.
func (c *CA) ServingIntermediate() *x509.Certificate {
	st := c.state()
	if st.servingInter != nil {
		return st.servingInter
	}
	return st.inter
}

// External reports whether the CA is an external one, whose root keys
// Rampart does not hold.
func (c *CA) External() bool { return c.state().ext != nil }

// Version identifies the roots (with their roles) and the issuer in use:
// it changes whenever Reload or a rotation changed either.
func (c *CA) Version() string {
	st := c.state()
	h := sha256.New()
	for _, a := range c.Anchors() {
		h.Write([]byte(a.Role))
		h.Write(a.Cert.Raw)
	}
	h.Write(st.inter.Raw)
	if st.servingInter != nil {
		h.Write(st.servingInter.Raw)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Reload re-reads the directory, adopting what another process (the
// rampart CLI) changed: a rotation, or an external CA's new files. It also
// renews the intermediate if due. On error the state in use stays.
func (c *CA) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	unlock, err := lockPath(c.path(lockFile))
	if err != nil {
		return err
	}
	defer unlock()
	st, err := c.openLocked(c.now(), false)
	if err != nil {
		return err
	}
	c.st = st
	return nil
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

// newRoot makes a root key and self-signed certificate valid from now.
func (c *CA) newRoot(now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
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
		return nil, nil, fmt.Errorf("ca: create root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: parse new root certificate: %w", err)
	}
	return root, key, nil
}

// writeRoot writes a root's key, then its certificate, as <name>.key and
// <name>.crt.
func (c *CA) writeRoot(name string, cert *x509.Certificate, key crypto.Signer) error {
	if err := writeKey(c.path(name+".key"), key); err != nil {
		return err
	}
	return writeCert(c.path(name+".crt"), cert)
}

// create makes a new root and intermediate in an empty directory. The trust
// domain file is written last: until it exists the directory is incomplete
// and Open refuses it rather than half-trusting it.
func (c *CA) create(now time.Time) (*state, error) {
	root, key, err := c.newRoot(now)
	if err != nil {
		return nil, err
	}
	if err := c.writeRoot(rootName, root, key); err != nil {
		return nil, err
	}
	st := &state{roots: []rootCA{{name: rootName, role: RoleActive, cert: root, key: key}}}
	if err := c.issueIntermediateLocked(st, now); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(c.path(trustDomainFile), []byte(c.td.Name()+"\n"), 0o644); err != nil {
		return nil, err
	}
	return st, nil
}

// checkTrustDomain reads the trust-domain file and refuses another trust
// domain than the CA's.
func (c *CA) checkTrustDomain() error {
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
	return nil
}

// loadInternalLocked loads the roots doc names and the issuer.
func (c *CA) loadInternalLocked(doc stateDoc, now time.Time) (*state, error) {
	if err := c.checkTrustDomain(); err != nil {
		return nil, err
	}
	st := &state{}
	count := map[string]int{}
	for _, r := range doc.Roots {
		if !validRootName(r.Name) {
			return nil, fmt.Errorf("ca: %s names root %q; root names are lower-case letters, digits and dashes", c.path(stateFile), r.Name)
		}
		switch r.Role {
		case RoleActive, RoleNext, RolePrevious:
		default:
			return nil, fmt.Errorf("ca: %s gives root %q the unknown role %q", c.path(stateFile), r.Name, r.Role)
		}
		count[r.Role]++
		root, err := c.loadRoot(r.Name, r.Role == RoleActive, now)
		if err != nil {
			return nil, err
		}
		root.role = r.Role
		st.roots = append(st.roots, root)
	}
	if count[RoleActive] != 1 || count[RoleNext] > 1 || count[RolePrevious] > 1 {
		return nil, fmt.Errorf("ca: %s must name exactly one active root and at most one next and one previous; restore it from a backup", c.path(stateFile))
	}
	if err := c.syncIntermediateLocked(st, now); err != nil {
		return nil, err
	}
	if err := c.syncServingIssuerLocked(st, now); err != nil {
		return nil, err
	}
	return st, nil
}

// syncServingIssuerLocked loads into st the intermediate under the previous
// root that signs the serving certificate, issuing a new one if it is
// missing, invalid or due for renewal and the previous root can still sign.
// Without a previous root its files are removed. If no such intermediate
// can be had (the previous root has expired), the active issuer signs the
// serving certificate. The directory lock must be held.
func (c *CA) syncServingIssuerLocked(st *state, now time.Time) error {
	st.servingInter, st.servingKey = nil, nil
	prev := st.withRole(RolePrevious)
	if prev == nil {
		return c.removeServingIssuerFiles()
	}
	if inter, key, err := readCertAndKey(c.path(servingCertFile), c.path(servingKeyFile)); err == nil &&
		inter.BasicConstraintsValid && inter.IsCA && bytes.Equal(inter.RawIssuer, prev.cert.RawSubject) &&
		inter.CheckSignatureFrom(prev.cert) == nil && publicKeysEqual(inter.PublicKey, key.Public()) &&
		!now.Before(inter.NotBefore) && !dueForRenewal(inter, now) {
		st.servingInter, st.servingKey = inter, key
		return nil
	}
	if prev.key == nil || !now.Before(prev.cert.NotAfter) {
		return nil
	}
	inter, key, err := c.issueIntermediateUnder(prev, now, servingCertFile, servingKeyFile)
	if err != nil {
		return err
	}
	st.servingInter, st.servingKey = inter, key
	return nil
}

func (c *CA) removeServingIssuerFiles() error {
	for _, name := range []string{servingKeyFile, servingCertFile} {
		if err := os.Remove(c.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ca: %w", err)
		}
	}
	return nil
}

func readCertAndKey(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cert, err := readCert(certPath)
	if err != nil {
		return nil, nil, err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// loadRoot reads and checks a root certificate and its key. Only the
// active root must be unexpired: it signs the issuer.
func (c *CA) loadRoot(name string, active bool, now time.Time) (rootCA, error) {
	certPath, keyPath := c.path(name+".crt"), c.path(name+".key")
	root, err := readCert(certPath)
	if err != nil {
		return rootCA{}, err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return rootCA{}, err
	}
	sigErr := root.CheckSignatureFrom(root)
	switch {
	case !root.BasicConstraintsValid || !root.IsCA:
		return rootCA{}, fmt.Errorf("ca: %s is not a CA certificate", certPath)
	case sigErr != nil:
		return rootCA{}, fmt.Errorf("ca: %s is not a self-signed root: %w", certPath, sigErr)
	case !publicKeysEqual(root.PublicKey, key.Public()):
		return rootCA{}, fmt.Errorf("ca: %s does not hold the key of %s", keyPath, certPath)
	case !hasOnlyURI(root, c.td.ID()):
		return rootCA{}, fmt.Errorf("ca: %s is not a root of trust domain %q", certPath, c.td.Name())
	case now.Before(root.NotBefore):
		return rootCA{}, fmt.Errorf("ca: root certificate %s is not valid until %s; check the system clock", certPath, root.NotBefore.UTC().Format(time.RFC3339))
	case active && !now.Before(root.NotAfter):
		return rootCA{}, fmt.Errorf("ca: root certificate %s expired at %s; the CA cannot issue any more: create a new CA in another directory and give every workload its trust bundle",
			certPath, root.NotAfter.UTC().Format(time.RFC3339))
	}
	return rootCA{name: name, cert: root, key: key}, nil
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

// syncIntermediateLocked loads the intermediate from the directory into st,
// or issues a new one if the files are missing, expired, due for renewal,
// or signed by a root of st that is no longer the active one (a root
// activation that stopped half way). Loading first means that a process
// adopts an intermediate another process has just renewed instead of
// replacing it again. The directory lock must be held.
func (c *CA) syncIntermediateLocked(st *state, now time.Time) error {
	certPath, keyPath := c.path(intermediateCertFile), c.path(intermediateKeyFile)
	present, missing, err := c.inventory([]string{intermediateCertFile, intermediateKeyFile})
	if err != nil {
		return err
	}
	switch {
	case len(present) == 0:
		return c.issueIntermediateLocked(st, now)
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
	active := st.active()
	sigErr := inter.CheckSignatureFrom(active.cert)
	if sigErr != nil || !bytes.Equal(inter.RawIssuer, active.cert.RawSubject) {
		for _, r := range st.roots {
			if r.role != RoleActive && inter.CheckSignatureFrom(r.cert) == nil {
				return c.issueIntermediateLocked(st, now)
			}
		}
	}
	switch {
	case !inter.BasicConstraintsValid || !inter.IsCA:
		return fmt.Errorf("ca: %s is not a CA certificate", certPath)
	case !bytes.Equal(inter.RawIssuer, active.cert.RawSubject):
		return fmt.Errorf("ca: %s was not issued by the root %s", certPath, c.path(active.name+".crt"))
	case sigErr != nil:
		return fmt.Errorf("ca: %s is not signed by the root %s: %w", certPath, c.path(active.name+".crt"), sigErr)
	case !publicKeysEqual(inter.PublicKey, key.Public()):
		return fmt.Errorf("ca: %s does not hold the key of %s; remove both and a new intermediate will be issued from the root", keyPath, certPath)
	}
	if dueForRenewal(inter, now) {
		return c.issueIntermediateLocked(st, now)
	}
	st.inter, st.interKey = inter, key
	return nil
}

// dueForRenewal reports whether cert has expired or is within a tenth of its
// lifetime of expiry.
func dueForRenewal(cert *x509.Certificate, now time.Time) bool {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return !now.Before(cert.NotAfter.Add(-lifetime / 10))
}

// issueIntermediateLocked signs a new intermediate with st's active root,
// writes it and makes it st's issuer. The key is written before the
// certificate: a crash in between leaves a pair that Open reports as
// mismatched.
func (c *CA) issueIntermediateLocked(st *state, now time.Time) error {
	inter, key, err := c.issueIntermediateUnder(st.active(), now, intermediateCertFile, intermediateKeyFile)
	if err != nil {
		return err
	}
	st.inter, st.interKey = inter, key
	return nil
}

// issueIntermediateUnder signs a new intermediate with root and writes it,
// key first, to the files named.
func (c *CA) issueIntermediateUnder(root *rootCA, now time.Time, certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	notAfter := now.Add(c.interTTL)
	if notAfter.After(root.cert.NotAfter) {
		notAfter = root.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, nil, fmt.Errorf("ca: root certificate %s expired at %s; create a new CA", c.path(root.name+".crt"), root.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate intermediate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{organization}, CommonName: "Rampart intermediate CA " + c.td.Name()},
		NotBefore:             laterOf(now.Add(-clockSkew), root.cert.NotBefore),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{c.td.ID().URL()},
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, key.Public(), root.key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create intermediate certificate: %w", err)
	}
	inter, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: parse new intermediate certificate: %w", err)
	}
	if err := writeKey(c.path(keyFile), key); err != nil {
		return nil, nil, err
	}
	if err := writeCert(c.path(certFile), inter); err != nil {
		return nil, nil, err
	}
	return inter, key, nil
}

// issuer returns the intermediate and key to sign with at now, renewing the
// intermediate first if it is due (Rampart's own CA only: an external
// intermediate is used until it expires).
func (c *CA) issuer(now time.Time) (*x509.Certificate, crypto.Signer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	if st.ext != nil {
		if !now.Before(st.inter.NotAfter) {
			return nil, nil, fmt.Errorf("ca: the external intermediate %s expired at %s; have the external CA issue a new one and run `rampart identity rotate-issuer --cert --key`",
				st.ext.CertFile, st.inter.NotAfter.UTC().Format(time.RFC3339))
		}
		return st.inter, st.interKey, nil
	}
	if !dueForRenewal(st.inter, now) {
		return st.inter, st.interKey, nil
	}
	unlock, err := lockPath(c.path(lockFile))
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	// Its errors name the file and what to do.
	next, err := c.openLocked(now, false)
	if err != nil {
		return nil, nil, err
	}
	c.st = next
	return next.inter, next.interKey, nil
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
