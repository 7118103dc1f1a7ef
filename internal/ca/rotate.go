package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Errors callers branch on.
var (
	// ErrExternal wraps the refusal of an operation that needs a root key
	// (or, for RotateIssuer, a new intermediate) from a CA run outside
	// Rampart.
	ErrExternal = errors.New("ca: the CA is external")
	// ErrStage wraps the refusal of a rotation step out of order.
	ErrStage = errors.New("ca: rotation step out of order")
	// ErrLeavesInUse wraps the refusal to retire a root that leaves in use
	// still chain to, or when it cannot be told which leaves are in use.
	ErrLeavesInUse = errors.New("ca: certificates in use chain to the root")
)

// External names the files of a CA run outside Rampart (by cert-manager,
// say): Rampart reads them and never holds a root key.
type External struct {
	// BundleFile holds the PEM root certificates to trust; one of them
	// must have signed CertFile.
	BundleFile string `json:"bundle_file"`
	// CertFile holds the PEM intermediate certificate that signs leaves.
	CertFile string `json:"cert_file"`
	// KeyFile holds its PKCS#8 PEM private key, readable by its owner
	// only.
	KeyFile string `json:"key_file"`
}

func (e External) absolute() (External, error) {
	if e.BundleFile == "" || e.CertFile == "" || e.KeyFile == "" {
		return e, errors.New("ca: an external CA needs a bundle, a certificate and a key file")
	}
	var err error
	for _, p := range []*string{&e.BundleFile, &e.CertFile, &e.KeyFile} {
		if *p, err = filepath.Abs(*p); err != nil {
			return e, fmt.Errorf("ca: %w", err)
		}
	}
	return e, nil
}

// stateDoc is the state file.
type stateDoc struct {
	Roots    []stateRoot `json:"roots,omitempty"`
	External *External   `json:"external,omitempty"`
}

type stateRoot struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

func (c *CA) readStateDoc() (stateDoc, bool, error) {
	var doc stateDoc
	ok, err := exists(c.path(stateFile))
	if err != nil || !ok {
		return doc, false, err
	}
	data, err := readFile(c.path(stateFile), false)
	if err != nil {
		return doc, false, err
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return doc, false, fmt.Errorf("ca: %s: %w; restore it from a backup", c.path(stateFile), err)
	}
	return doc, true, nil
}

func (c *CA) writeStateDoc(doc stateDoc) error {
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode state: %w", err)
	}
	return writeFileAtomic(c.path(stateFile), append(data, '\n'), 0o644)
}

func validRootName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// loadExternalLocked reads an external CA's files. With first, the
// trust-domain file is written; otherwise it must match.
func (c *CA) loadExternalLocked(ext External, now time.Time, first bool) (*state, error) {
	if first {
		if err := writeFileAtomic(c.path(trustDomainFile), []byte(c.td.Name()+"\n"), 0o644); err != nil {
			return nil, err
		}
	} else if err := c.checkTrustDomain(); err != nil {
		return nil, err
	}
	roots, err := readCerts(ext.BundleFile)
	if err != nil {
		return nil, err
	}
	inter, err := readCert(ext.CertFile)
	if err != nil {
		return nil, err
	}
	key, err := readKey(ext.KeyFile)
	if err != nil {
		return nil, err
	}
	switch {
	case !inter.BasicConstraintsValid || !inter.IsCA:
		return nil, fmt.Errorf("ca: %s is not a CA certificate; give the intermediate that signs workload certificates", ext.CertFile)
	case inter.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("ca: %s does not allow certificate signing (key usage cert sign); give the intermediate that signs workload certificates", ext.CertFile)
	case !spiffeURIsOf(inter, c.td):
		return nil, fmt.Errorf("ca: %s names a SPIFFE ID outside trust domain %q; give an intermediate of this trust domain", ext.CertFile, c.td.Name())
	case !publicKeysEqual(inter.PublicKey, key.Public()):
		return nil, fmt.Errorf("ca: %s does not hold the key of %s", ext.KeyFile, ext.CertFile)
	case now.Before(inter.NotBefore):
		return nil, fmt.Errorf("ca: %s is not valid until %s; check the system clock", ext.CertFile, inter.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(inter.NotAfter):
		return nil, fmt.Errorf("ca: %s expired at %s; have the external CA issue a new intermediate", ext.CertFile, inter.NotAfter.UTC().Format(time.RFC3339))
	}
	st := &state{ext: &ext, inter: inter, interKey: key}
	signer := -1
	for i, r := range roots {
		if !r.IsCA || r.CheckSignatureFrom(r) != nil {
			return nil, fmt.Errorf("ca: %s: certificate %d (%s) is not a self-signed CA certificate; the bundle holds root certificates only", ext.BundleFile, i+1, r.Subject)
		}
		role := RoleTrusted
		if signer < 0 && bytes.Equal(inter.RawIssuer, r.RawSubject) && inter.CheckSignatureFrom(r) == nil {
			signer, role = i, RoleActive
		}
		st.roots = append(st.roots, rootCA{name: fmt.Sprintf("external-%d", i+1), role: role, cert: r})
	}
	if signer < 0 {
		return nil, fmt.Errorf("ca: %s is not signed by any root in %s; give the intermediate issued directly by one of the bundle's roots", ext.CertFile, ext.BundleFile)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if _, err := inter.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("ca: %s does not verify against the roots of %s: %w", ext.CertFile, ext.BundleFile, err)
	}
	return st, nil
}

// spiffeURIsOf reports whether every SPIFFE URI SAN of cert is the ID of
// trust domain td (a CA certificate names no workload).
func spiffeURIsOf(cert *x509.Certificate, td spiffeid.TrustDomain) bool {
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") && u.String() != td.ID().String() {
			return false
		}
	}
	return true
}

// checkExternalRootsKept refuses an external CA state whose bundle no longer
// holds a root that a live certificate in the record of leaves in use
// chains to: adopting it would cut those certificates' holders off at once.
// The root must stay in the bundle file until they have renewed under
// another (rampart identity status shows them).
func (c *CA) checkExternalRootsKept(st *state, now time.Time) error {
	rec, ok, err := c.readLeaves()
	if err != nil || !ok {
		return err
	}
	kept := map[string]bool{}
	for _, r := range st.roots {
		kept[SerialOf(r.cert)] = true
	}
	var dropped []*x509.Certificate
	if c.st != nil {
		for _, r := range c.st.roots {
			if !kept[SerialOf(r.cert)] {
				dropped = append(dropped, r.cert)
			}
		}
	}
	for _, r := range dropped {
		if live := liveUnder(rec.Leaves, SerialOf(r), now); len(live) > 0 {
			return fmt.Errorf("%w: %s no longer holds root %s, but %d certificate(s) in use chain to it (%s serial %s, expires %s, ...); keeping the last good CA state: put the root back in the bundle until `rampart identity status` shows no certificate under it",
				ErrLeavesInUse, st.ext.BundleFile, SerialOf(r), len(live), live[0].SPIFFEID, live[0].Serial, live[0].NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// readCerts reads one or more PEM certificates.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := readFile(path, false)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: parse %s: %w", path, err)
		}
		out = append(out, cert)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ca: %s holds no PEM CERTIFICATE block", path)
	}
	return out, nil
}

// StoredTrustDomain returns the trust domain of the CA kept in dir, for
// tools (the rampart CLI) that open it without being told.
func StoredTrustDomain(dir string) (spiffeid.TrustDomain, error) {
	data, err := readFile(filepath.Join(dir, trustDomainFile), false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return spiffeid.TrustDomain{}, fmt.Errorf("ca: %s holds no CA; is it the controller's state directory (its --state-dir, with /ca)?", dir)
		}
		return spiffeid.TrustDomain{}, err
	}
	td, err := spiffeid.TrustDomainFromString(strings.TrimSpace(string(data)))
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("ca: %s: %w", filepath.Join(dir, trustDomainFile), err)
	}
	return td, nil
}

// mutate applies f to the state the directory holds now, under the
// directory lock, and makes the result the CA's state. f writes what it
// changes; on error the CA keeps the state read.
func (c *CA) mutate(f func(st *state, now time.Time) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	unlock, err := lockPath(c.path(lockFile))
	if err != nil {
		return err
	}
	defer unlock()
	now := c.now()
	st, err := c.openLocked(now, false)
	if err != nil {
		return err
	}
	c.st = st
	next := st.clone()
	if err := f(next, now); err != nil {
		return err
	}
	c.st = next
	return nil
}

// RotateIssuer replaces the intermediate with a new one signed by the
// active root. Leaves signed by the old intermediate stay valid until they
// expire: they carry it in their chain and the root still trusts it. An
// external CA's intermediate is replaced with ImportIssuer instead.
func (c *CA) RotateIssuer() (*x509.Certificate, error) {
	var inter *x509.Certificate
	err := c.mutate(func(st *state, now time.Time) error {
		if st.ext != nil {
			return fmt.Errorf("%w: Rampart holds no root key to sign a new intermediate; have the external CA issue one and give it with --cert and --key", ErrExternal)
		}
		if err := c.issueIntermediateLocked(st, now); err != nil {
			return err
		}
		inter = st.inter
		return nil
	})
	return inter, err
}

// ImportIssuer makes the intermediate in certFile (key in keyFile) the
// issuer of an external CA; it must be signed by a root of the bundle.
func (c *CA) ImportIssuer(certFile, keyFile string) (*x509.Certificate, error) {
	var inter *x509.Certificate
	err := c.mutate(func(st *state, now time.Time) error {
		if st.ext == nil {
			return errors.New("ca: this CA creates its own intermediates; rotate without --cert and --key")
		}
		ext := *st.ext
		ext.CertFile, ext.KeyFile = certFile, keyFile
		ext, err := ext.absolute()
		if err != nil {
			return err
		}
		loaded, err := c.loadExternalLocked(ext, now, false)
		if err != nil {
			return err
		}
		if err := c.writeStateDoc(loaded.doc()); err != nil {
			return err
		}
		*st = *loaded
		inter = st.inter
		return nil
	})
	return inter, err
}

// PrepareRoot is the first step of a root rotation: it creates a new root
// and adds it to the trust bundle as the next root. Issuing is unchanged.
// Every workload must receive the new bundle before ActivateRoot.
func (c *CA) PrepareRoot() (*x509.Certificate, error) {
	var root *x509.Certificate
	err := c.mutate(func(st *state, now time.Time) error {
		if st.ext != nil {
			return externalRootError()
		}
		switch {
		case st.withRole(RoleNext) != nil:
			return fmt.Errorf("%w: a next root is already prepared; activate it (rotate-root --stage activate)", ErrStage)
		case st.withRole(RolePrevious) != nil:
			return fmt.Errorf("%w: the previous root is still trusted; finish that rotation first (rotate-root --stage retire)", ErrStage)
		}
		name := ""
		for n := 2; ; n++ {
			name = fmt.Sprintf("%s-%d", rootName, n)
			ok, err := exists(c.path(name + ".crt"))
			if err != nil {
				return err
			}
			if !ok {
				break
			}
		}
		cert, key, err := c.newRoot(now)
		if err != nil {
			return err
		}
		if err := c.writeRoot(name, cert, key); err != nil {
			return err
		}
		st.roots = append(st.roots, rootCA{name: name, role: RoleNext, cert: cert, key: key})
		root = cert
		return c.writeStateDoc(st.doc())
	})
	return root, err
}

// ActivateRoot is the second step: the next root becomes the active one
// and signs a new intermediate, which issues from now on; the old root
// stays in the bundle as the previous root, so that both verify.
func (c *CA) ActivateRoot() (*x509.Certificate, error) {
	var inter *x509.Certificate
	err := c.mutate(func(st *state, now time.Time) error {
		if st.ext != nil {
			return externalRootError()
		}
		next := st.withRole(RoleNext)
		if next == nil {
			return fmt.Errorf("%w: no next root to activate; prepare one first (rotate-root --stage prepare) and let every workload receive it", ErrStage)
		}
		// The issuer of the old root goes on signing the controller's
		// serving certificate until retire: a proxy that missed the new
		// root still verifies the controller, and receives the new
		// bundle from it.
		if err := writeKey(c.path(servingKeyFile), st.interKey); err != nil {
			return err
		}
		if err := writeCert(c.path(servingCertFile), st.inter); err != nil {
			return err
		}
		st.active().role = RolePrevious
		next.role = RoleActive
		// The state first: a crash before the intermediate is written
		// leaves an intermediate of the previous root, which the next
		// Open replaces.
		if err := c.writeStateDoc(st.doc()); err != nil {
			return err
		}
		if err := c.issueIntermediateLocked(st, now); err != nil {
			return err
		}
		if err := c.syncServingIssuerLocked(st, now); err != nil {
			return err
		}
		inter = st.inter
		return nil
	})
	return inter, err
}

// LeavesInUseError is the refusal to retire a root that leaves in use
// still chain to. It wraps ErrLeavesInUse.
type LeavesInUseError struct {
	Root   *x509.Certificate
	Leaves []Leaf
}

func (e *LeavesInUseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ca: %d certificate(s) in use still chain to root %s:", len(e.Leaves), SerialOf(e.Root))
	for i, l := range e.Leaves {
		if i == 5 {
			fmt.Fprintf(&b, "\n  and %d more", len(e.Leaves)-i)
			break
		}
		fmt.Fprintf(&b, "\n  %s serial %s, expires %s", l.SPIFFEID, l.Serial, l.NotAfter.UTC().Format(time.RFC3339))
	}
	b.WriteString("\nretiring the root now would cut them off: wait until they are renewed (at half their lifetime; `rampart identity status` shows them) or expire, or retire with --force")
	return b.String()
}

func (e *LeavesInUseError) Unwrap() error { return ErrLeavesInUse }

// RetireRoot is the last step: the previous root leaves the trust bundle
// and its files are removed. Unless force, it is refused while the
// controller's record of the leaves in use (PublishLeaves) names one that
// chains to it and has not expired, or when that record predates the
// active issuer (the controller has not yet switched to it).
func (c *CA) RetireRoot(force bool) (*x509.Certificate, error) {
	var retired *x509.Certificate
	err := c.mutate(func(st *state, now time.Time) error {
		if st.ext != nil {
			return externalRootError()
		}
		prev := st.withRole(RolePrevious)
		if prev == nil {
			return fmt.Errorf("%w: no previous root to retire; a root rotation goes prepare, activate, retire", ErrStage)
		}
		if !force {
			// The controller's own serving certificate is under the
			// previous root on purpose (ServingIntermediate): it moves to
			// the new root as soon as the controller reads this change.
			rec, ok, err := c.readLeaves()
			switch {
			case err != nil:
				return err
			case !ok:
				return fmt.Errorf("%w: there is no record of the certificates in use (%s), which the running controller writes; start it, or retire with --force", ErrLeavesInUse, c.path(leavesFile))
			case rec.Issuer != SerialOf(st.inter):
				return fmt.Errorf("%w: the controller has not taken the new issuer into use yet (it reads the state directory every few seconds); retry shortly, or retire with --force if it is not running", ErrLeavesInUse)
			}
			if live := liveUnder(rec.Leaves, SerialOf(prev.cert), now); len(live) > 0 {
				return &LeavesInUseError{Root: prev.cert, Leaves: live}
			}
		}
		st.roots = slicesDeleteRole(st.roots, RolePrevious)
		if err := c.writeStateDoc(st.doc()); err != nil {
			return err
		}
		retired = prev.cert
		if err := c.syncServingIssuerLocked(st, now); err != nil {
			return fmt.Errorf("ca: root retired, but removing the serving intermediate failed: %w", err)
		}
		for _, ext := range []string{".key", ".crt"} {
			if err := os.Remove(c.path(prev.name + ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("ca: root retired, but removing its files failed: %w", err)
			}
		}
		return nil
	})
	return retired, err
}

// liveUnder returns the leaves that chain to the root with serial root and
// have not expired at now, except serving certificates, which the
// controller moves to another root by itself.
func liveUnder(leaves []Leaf, root string, now time.Time) []Leaf {
	var live []Leaf
	for _, l := range leaves {
		if l.Kind != KindServing && l.Root == root && now.Before(l.NotAfter) {
			live = append(live, l)
		}
	}
	return live
}

func slicesDeleteRole(roots []rootCA, role string) []rootCA {
	out := roots[:0:0]
	for _, r := range roots {
		if r.role != role {
			out = append(out, r)
		}
	}
	return out
}

func externalRootError() error {
	return fmt.Errorf("%w: Rampart does not hold the root key; rotating the root is the external CA's job: add its new root to the bundle file, have it issue a new intermediate under that root, then run `rampart identity rotate-issuer --cert --key`", ErrExternal)
}

// SerialOf is the lower-case hexadecimal serial number of cert, as the CA
// names certificates in its records and messages.
func SerialOf(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}

// Leaf is the record of one leaf certificate in use.
type Leaf struct {
	Serial     string    `json:"serial"`
	SPIFFEID   string    `json:"spiffe_id"`
	CodeDigest string    `json:"code_digest,omitempty"`
	NotAfter   time.Time `json:"not_after"`
	// Issuer and Root are the serials of the intermediate that signed it
	// and of the root that signed that; Root is empty if no root of the
	// CA did.
	Issuer string `json:"issuer"`
	Root   string `json:"root"`
	// Kind is KindServing for the controller's serving certificate,
	// empty for a workload's.
	Kind string `json:"kind,omitempty"`
	// RenewedFrom lists the certificates this one was renewed from, the
	// one presented at its renewal first, then the ones that one was
	// renewed from, as long as they may still be valid: a certificate
	// renewed from a revoked one is revoked too. Empty for a certificate
	// issued on attestation, and in records written before it existed.
	RenewedFrom []Renewal `json:"renewed_from,omitempty"`
}

// Renewal names a certificate another was renewed from.
type Renewal struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// MaxRenewedFrom bounds Leaf.RenewedFrom. Workloads renew at half their
// certificate's lifetime, so two or three ancestors are alive at most; a
// longer chain keeps the most recent.
const MaxRenewedFrom = 32

// DescendsFrom reports whether l was renewed, directly or not, from the
// certificate with serial.
func (l Leaf) DescendsFrom(serial string) bool {
	for _, r := range l.RenewedFrom {
		if r.Serial == serial {
			return true
		}
	}
	return false
}

// KindServing marks the controller's serving certificate in a Leaf.
const KindServing = "serving"

// LeafOf describes a chain the CA issued (leaf first, then its
// intermediate), with the code digest it records.
func (c *CA) LeafOf(chain []*x509.Certificate, digest string) Leaf {
	l := Leaf{Serial: SerialOf(chain[0]), NotAfter: chain[0].NotAfter, CodeDigest: digest}
	if len(chain[0].URIs) == 1 {
		l.SPIFFEID = chain[0].URIs[0].String()
	}
	if len(chain) > 1 {
		l.Issuer = SerialOf(chain[1])
		for _, r := range c.state().roots {
			if bytes.Equal(chain[1].RawIssuer, r.cert.RawSubject) && chain[1].CheckSignatureFrom(r.cert) == nil {
				l.Root = SerialOf(r.cert)
				break
			}
		}
	}
	return l
}

// leavesRecord is the leaves file.
type leavesRecord struct {
	// Issuer is the serial of the intermediate in use when written.
	Issuer  string    `json:"issuer"`
	Written time.Time `json:"written"`
	Leaves  []Leaf    `json:"leaves"`
}

// PublishLeaves records the leaves in use (the controller calls it when
// they change), for RetireRoot in another process. The record names the
// issuer in use now: leaves issued later come from it.
func (c *CA) PublishLeaves(leaves []Leaf) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	unlock, err := lockPath(c.path(lockFile))
	if err != nil {
		return err
	}
	defer unlock()
	rec := leavesRecord{Issuer: SerialOf(c.st.inter), Written: c.now().UTC(), Leaves: leaves}
	if rec.Leaves == nil {
		rec.Leaves = []Leaf{}
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode leaves: %w", err)
	}
	return writeFileAtomic(c.path(leavesFile), append(data, '\n'), 0o644)
}

// RecordedLeaves returns the leaves of the record PublishLeaves last wrote
// (by this process or an earlier one), or none if there is no record. A
// restarted controller starts from it, so that RetireRoot still knows the
// certificates issued before the restart.
func (c *CA) RecordedLeaves() ([]Leaf, error) {
	rec, _, err := c.readLeaves()
	if err != nil {
		return nil, fmt.Errorf("%w; it is rewritten by the controller: remove it only if no root rotation is under way", err)
	}
	return rec.Leaves, nil
}

func (c *CA) readLeaves() (leavesRecord, bool, error) {
	var rec leavesRecord
	ok, err := exists(c.path(leavesFile))
	if err != nil || !ok {
		return rec, false, err
	}
	data, err := readFile(c.path(leavesFile), false)
	if err != nil {
		return rec, false, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, false, fmt.Errorf("ca: %s: %w", c.path(leavesFile), err)
	}
	return rec, true, nil
}
