package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampart-mesh/rampart/internal/codedigest"
)

var workloadID = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/checkout")

// testKeys caches generated keys: RSA generation is slow.
type testKeys struct {
	mu   sync.Mutex
	keys map[string]crypto.Signer
}

var keyCache = &testKeys{keys: map[string]crypto.Signer{}}

func (k *testKeys) get(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if key, ok := k.keys[kind]; ok {
		return key
	}
	var (
		key crypto.Signer
		err error
	)
	switch kind {
	case "p256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p521":
		key, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "p224":
		key, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "rsa1024":
		key, err = rsa.GenerateKey(rand.Reader, 1024)
	case "rsa2048":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatalf("generate %s key: %v", kind, err)
	}
	k.keys[kind] = key
	return key
}

// csrOpts describes a CSR. The zero value is a valid P-256 CSR for
// workloadID.
type csrOpts struct {
	key    string // key kind for keyCache; "" means p256
	uris   []string
	noURI  bool
	dns    []string
	ips    []net.IP
	emails []string
	cn     string
}

func newCSR(t testing.TB, o csrOpts) []byte {
	t.Helper()
	if o.key == "" {
		o.key = "p256"
	}
	if o.uris == nil && !o.noURI {
		o.uris = []string{workloadID.String()}
	}
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: o.cn, Organization: []string{"Evil Corp"}},
		DNSNames:       o.dns,
		IPAddresses:    o.ips,
		EmailAddresses: o.emails,
	}
	for _, s := range o.uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, keyCache.get(t, o.key))
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func verifySVID(t testing.TB, chain []*x509.Certificate, roots []*x509.Certificate, now time.Time) spiffeid.ID {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(testTD, roots)
	id, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now))
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	return id
}

func newTestCA(t testing.TB) (*CA, *clock) {
	t.Helper()
	clk := newClock(t0)
	c, err := Open(testConfig(t.TempDir(), clk))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c, clk
}

func TestSignCSR(t *testing.T) {
	c, clk := newTestCA(t)
	for _, kind := range []string{"p256", "p384", "ed25519", "rsa2048"} {
		t.Run(kind, func(t *testing.T) {
			chain, err := c.SignCSR(newCSR(t, csrOpts{key: kind, cn: "ignored"}), workloadID, time.Hour)
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			if len(chain) != 2 {
				t.Fatalf("chain has %d certificates, want leaf and intermediate", len(chain))
			}
			if !chain[1].Equal(c.Intermediate()) {
				t.Error("chain[1] is not the intermediate")
			}
			if got := verifySVID(t, chain, c.Roots(), clk.Now()); got != workloadID {
				t.Errorf("verified ID %v, want %v", got, workloadID)
			}

			leaf := chain[0]
			if leaf.IsCA {
				t.Error("leaf is a CA")
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage %v, want DigitalSignature", leaf.KeyUsage)
			}
			wantEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
			if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != wantEKU[0] || leaf.ExtKeyUsage[1] != wantEKU[1] {
				t.Errorf("ExtKeyUsage %v, want %v", leaf.ExtKeyUsage, wantEKU)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != workloadID.String() {
				t.Errorf("URIs %v", leaf.URIs)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("leaf has extra SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if got := leaf.Subject.Organization; len(got) != 1 || got[0] != "Rampart" {
				t.Errorf("Subject O %v, want [Rampart]: the CSR's subject must be ignored", got)
			}
			if got := leaf.Subject.CommonName; got != workloadID.String() {
				t.Errorf("Subject CN %q, want %q", got, workloadID)
			}
			if got, want := leaf.NotBefore, t0.Add(-time.Minute); !got.Equal(want) {
				t.Errorf("NotBefore %v, want %v", got, want)
			}
			if got, want := leaf.NotAfter, t0.Add(time.Hour); !got.Equal(want) {
				t.Errorf("NotAfter %v, want %v", got, want)
			}
			if len(leaf.SubjectKeyId) == 0 {
				t.Error("no SubjectKeyId")
			}
			if string(leaf.AuthorityKeyId) != string(c.Intermediate().SubjectKeyId) {
				t.Error("AuthorityKeyId does not name the intermediate")
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", leaf.SerialNumber)
			}
			if !publicKeysEqual(leaf.PublicKey, keyCache.get(t, kind).Public()) {
				t.Error("leaf does not certify the CSR's key")
			}

			// Past NotAfter the chain no longer verifies.
			bundle := x509bundle.FromX509Authorities(testTD, c.Roots())
			if _, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(t0.Add(time.Hour+time.Second))); err == nil {
				t.Error("chain verifies after the leaf expired")
			}
		})
	}
}

func TestSignCSRLongIDHasNoCommonName(t *testing.T) {
	c, _ := newTestCA(t)
	long := spiffeid.RequireFromString("spiffe://example.org/ns/" + strings.Repeat("n", 40) + "/sa/" + strings.Repeat("s", 40))
	chain, err := c.SignCSR(newCSR(t, csrOpts{uris: []string{long.String()}}), long, time.Hour)
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	if cn := chain[0].Subject.CommonName; cn != "" {
		t.Errorf("CN %q, want none for an ID longer than 64 bytes", cn)
	}
}

func TestSignCSRNotAfterCappedByIntermediate(t *testing.T) {
	clk := newClock(t0)
	cfg := testConfig(t.TempDir(), clk)
	cfg.IntermediateTTL = 10 * time.Hour
	c := mustOpen(t, cfg)
	clk.Advance(5 * time.Hour)
	chain, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, 24*time.Hour)
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	if got, want := chain[0].NotAfter, c.Intermediate().NotAfter; !got.Equal(want) {
		t.Errorf("leaf NotAfter %v, want the intermediate's %v", got, want)
	}
	verifySVID(t, chain, c.Roots(), clk.Now())
}

// TestSignCSRRenewsIntermediate runs a CA past the renewal point of its
// intermediate without reopening it.
func TestSignCSRRenewsIntermediate(t *testing.T) {
	clk := newClock(t0)
	cfg := testConfig(t.TempDir(), clk)
	cfg.IntermediateTTL = 10 * time.Hour
	c := mustOpen(t, cfg)
	old := c.Intermediate()

	clk.Advance(9*time.Hour + 30*time.Minute)
	chain, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, 24*time.Hour)
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	inter := c.Intermediate()
	if inter.Equal(old) {
		t.Fatal("intermediate not renewed")
	}
	if !chain[1].Equal(inter) {
		t.Error("leaf not issued by the renewed intermediate")
	}
	if got, want := chain[0].NotAfter, clk.Now().Add(10*time.Hour); !got.Equal(want) {
		t.Errorf("leaf NotAfter %v, want %v", got, want)
	}
	verifySVID(t, chain, c.Roots(), clk.Now())
	// Another process opening the directory now adopts the renewal.
	if !mustOpen(t, cfg).Intermediate().Equal(inter) {
		t.Error("renewed intermediate not persisted")
	}
}

func TestSignCSRAfterRootExpiry(t *testing.T) {
	clk := newClock(t0)
	cfg := testConfig(t.TempDir(), clk)
	cfg.RootTTL = 10 * time.Hour
	c := mustOpen(t, cfg)
	clk.Advance(11 * time.Hour)
	_, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, time.Hour)
	wantErr(t, err, "root certificate", "expired")
	if errors.Is(err, ErrInvalidCSR) {
		t.Error("an expired root is not the CSR's fault")
	}
}

func TestSignCSRRefusals(t *testing.T) {
	c, _ := newTestCA(t)
	valid := newCSR(t, csrOpts{})
	badSig := append([]byte(nil), valid...)
	badSig[len(badSig)-1] ^= 0xff

	tests := []struct {
		name     string
		csr      []byte
		id       spiffeid.ID // zero means workloadID
		sentinel error
		wantMsg  []string
	}{
		{name: "empty", csr: nil, sentinel: ErrInvalidCSR, wantMsg: []string{"empty"}},
		{name: "not DER", csr: []byte("hello"), sentinel: ErrInvalidCSR, wantMsg: []string{"not a DER PKCS#10 request"}},
		{name: "PEM instead of DER", csr: []byte("-----BEGIN CERTIFICATE REQUEST-----\n"), sentinel: ErrInvalidCSR, wantMsg: []string{"not a DER PKCS#10 request"}},
		{name: "truncated", csr: valid[:len(valid)/2], sentinel: ErrInvalidCSR, wantMsg: []string{"not a DER PKCS#10 request"}},
		{name: "too large", csr: make([]byte, maxCSRSize+1), sentinel: ErrInvalidCSR, wantMsg: []string{"more than the 16384 allowed"}},
		{name: "bad signature", csr: badSig, sentinel: ErrInvalidCSR, wantMsg: []string{"bad self-signature"}},
		{name: "RSA 1024", csr: newCSR(t, csrOpts{key: "rsa1024"}), sentinel: ErrInvalidCSR, wantMsg: []string{"RSA key of 1024 bits is too small"}},
		{name: "P-224", csr: newCSR(t, csrOpts{key: "p224"}), sentinel: ErrInvalidCSR, wantMsg: []string{"ECDSA curve P-224 is not allowed"}},
		{name: "P-521", csr: newCSR(t, csrOpts{key: "p521"}), sentinel: ErrInvalidCSR, wantMsg: []string{"ECDSA curve P-521 is not allowed"}},
		{name: "no URI SAN", csr: newCSR(t, csrOpts{noURI: true}), sentinel: ErrInvalidCSR, wantMsg: []string{"has 0 URI SANs, want exactly 1"}},
		{name: "two URI SANs", csr: newCSR(t, csrOpts{uris: []string{workloadID.String(), "spiffe://example.org/ns/shop/sa/admin"}}), sentinel: ErrInvalidCSR, wantMsg: []string{"has 2 URI SANs"}},
		{name: "URI SAN not SPIFFE", csr: newCSR(t, csrOpts{uris: []string{"https://example.org/ns/shop/sa/checkout"}}), sentinel: ErrInvalidCSR, wantMsg: []string{`"https://example.org/ns/shop/sa/checkout" is not a SPIFFE ID`}},
		{name: "URI SAN with query", csr: newCSR(t, csrOpts{uris: []string{workloadID.String() + "?x=1"}}), sentinel: ErrInvalidCSR, wantMsg: []string{"is not a SPIFFE ID"}},
		{name: "URI SAN with upper case trust domain", csr: newCSR(t, csrOpts{uris: []string{"spiffe://EXAMPLE.org/ns/shop/sa/checkout"}}), sentinel: ErrInvalidCSR, wantMsg: []string{"is not a SPIFFE ID"}},
		{name: "URI SAN with dot segment", csr: newCSR(t, csrOpts{uris: []string{"spiffe://example.org/ns/../sa/checkout"}}), sentinel: ErrInvalidCSR, wantMsg: []string{"is not a SPIFFE ID"}},
		{name: "DNS SAN", csr: newCSR(t, csrOpts{dns: []string{"checkout.shop.svc"}}), sentinel: ErrInvalidCSR, wantMsg: []string{"has 1 DNS SANs"}},
		{name: "IP SAN", csr: newCSR(t, csrOpts{ips: []net.IP{net.IPv4(10, 0, 0, 1)}}), sentinel: ErrInvalidCSR, wantMsg: []string{"has 1 IP SANs"}},
		{name: "email SAN", csr: newCSR(t, csrOpts{emails: []string{"a@example.org"}}), sentinel: ErrInvalidCSR, wantMsg: []string{"has 1 email SANs"}},
		{name: "all extra SANs", csr: newCSR(t, csrOpts{dns: []string{"a", "b"}, ips: []net.IP{net.IPv6loopback}, emails: []string{"a@b"}}), sentinel: ErrInvalidCSR, wantMsg: []string{"has 2 DNS, 1 IP, 1 email SANs"}},
		{
			name:     "other trust domain",
			csr:      newCSR(t, csrOpts{uris: []string{"spiffe://evil.example/ns/shop/sa/checkout"}}),
			id:       spiffeid.RequireFromString("spiffe://evil.example/ns/shop/sa/checkout"),
			sentinel: ErrInvalidCSR,
			wantMsg:  []string{"spiffe://evil.example/ns/shop/sa/checkout, which is not in trust domain example.org"},
		},
		{
			name:     "trust domain ID",
			csr:      newCSR(t, csrOpts{uris: []string{"spiffe://example.org"}}),
			id:       spiffeid.RequireFromString("spiffe://example.org"),
			sentinel: ErrInvalidCSR,
			wantMsg:  []string{"the ID of the trust domain itself"},
		},
		{
			name:     "other workload",
			csr:      newCSR(t, csrOpts{uris: []string{"spiffe://example.org/ns/shop/sa/admin"}}),
			sentinel: ErrIdentityMismatch,
			wantMsg:  []string{"CSR asks for spiffe://example.org/ns/shop/sa/admin, attested identity is spiffe://example.org/ns/shop/sa/checkout"},
		},
		{
			name:     "other trust domain than attested",
			csr:      newCSR(t, csrOpts{uris: []string{"spiffe://evil.example/ns/shop/sa/checkout"}}),
			sentinel: ErrInvalidCSR,
			wantMsg:  []string{"not in trust domain example.org"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.id
			if id.IsZero() {
				id = workloadID
			}
			chain, err := c.SignCSR(tt.csr, id, time.Hour)
			if chain != nil {
				t.Errorf("got a chain with the error")
			}
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("error %v does not wrap %v", err, tt.sentinel)
			}
			other := ErrInvalidCSR
			if tt.sentinel == ErrInvalidCSR {
				other = ErrIdentityMismatch
			}
			if errors.Is(err, other) {
				t.Errorf("error %v also wraps %v", err, other)
			}
			wantErr(t, err, tt.wantMsg...)
			if !strings.HasPrefix(err.Error(), "ca: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestSignCSRBadArguments(t *testing.T) {
	c, _ := newTestCA(t)
	csr := newCSR(t, csrOpts{})
	tests := []struct {
		name    string
		id      spiffeid.ID
		ttl     time.Duration
		wantErr string
	}{
		{name: "zero ttl", id: workloadID, ttl: 0, wantErr: "ttl must be positive"},
		{name: "negative ttl", id: workloadID, ttl: -time.Hour, wantErr: "ttl must be positive"},
		{name: "no id", ttl: time.Hour, wantErr: "no SPIFFE ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.SignCSR(csr, tt.id, tt.ttl)
			wantErr(t, err, tt.wantErr)
			if errors.Is(err, ErrInvalidCSR) || errors.Is(err, ErrIdentityMismatch) {
				t.Errorf("caller error %v blamed on the CSR", err)
			}
		})
	}
}

func TestSignCSRConcurrent(t *testing.T) {
	c, clk := newTestCA(t)
	const n = 16
	csrs := make([][]byte, n)
	for i := range csrs {
		csrs[i] = newCSR(t, csrOpts{})
	}
	chains := make([][]*x509.Certificate, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			chains[i], errs[i] = c.SignCSR(csrs[i], workloadID, time.Hour)
			_ = c.Intermediate()
			_ = c.Roots()
		})
	}
	wg.Wait()
	serials := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("SignCSR %d: %v", i, errs[i])
		}
		verifySVID(t, chains[i], c.Roots(), clk.Now())
		s := chains[i][0].SerialNumber.String()
		if serials[s] {
			t.Errorf("serial %s issued twice", s)
		}
		serials[s] = true
	}
}

func TestIssueServing(t *testing.T) {
	c, clk := newTestCA(t)
	id := spiffeid.RequireFromString("spiffe://example.org/rampart/controller")
	key := keyCache.get(t, "p256")
	dns := []string{"rampart-controller.rampart-system.svc", "localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	chain, err := c.IssueServing(key.Public(), id, dns, ips, 24*time.Hour)
	if err != nil {
		t.Fatalf("IssueServing: %v", err)
	}
	if got := verifySVID(t, chain, c.Roots(), clk.Now()); got != id {
		t.Errorf("verified ID %v, want %v", got, id)
	}
	leaf := chain[0]
	if strings.Join(leaf.DNSNames, ",") != strings.Join(dns, ",") {
		t.Errorf("DNSNames %v, want %v", leaf.DNSNames, dns)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(ips[0]) || !leaf.IPAddresses[1].Equal(ips[1]) {
		t.Errorf("IPAddresses %v, want %v", leaf.IPAddresses, ips)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.Roots()[0])
	inters := x509.NewCertPool()
	inters.AddCert(chain[1])
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		for _, name := range []string{"localhost", "127.0.0.1", "::1", "rampart-controller.rampart-system.svc"} {
			_, err := leaf.Verify(x509.VerifyOptions{
				DNSName:       name,
				Roots:         roots,
				Intermediates: inters,
				CurrentTime:   clk.Now(),
				KeyUsages:     []x509.ExtKeyUsage{usage},
			})
			if err != nil {
				t.Errorf("verify for %s as %v: %v", name, usage, err)
			}
		}
	}
}

func TestIssueServingRefusals(t *testing.T) {
	c, _ := newTestCA(t)
	id := spiffeid.RequireFromString("spiffe://example.org/rampart/controller")
	pub := keyCache.get(t, "p256").Public()
	tests := []struct {
		name    string
		pub     crypto.PublicKey
		id      spiffeid.ID
		dns     []string
		ips     []net.IP
		ttl     time.Duration
		wantErr string
	}{
		{name: "nil key", id: id, ttl: time.Hour, wantErr: "no public key"},
		{name: "private key", pub: keyCache.get(t, "p256"), id: id, ttl: time.Hour, wantErr: "not allowed"},
		{name: "weak key", pub: keyCache.get(t, "rsa1024").Public(), id: id, ttl: time.Hour, wantErr: "too small"},
		{name: "no id", pub: pub, ttl: time.Hour, wantErr: "no SPIFFE ID"},
		{name: "zero ttl", pub: pub, id: id, wantErr: "ttl must be positive"},
		{name: "foreign id", pub: pub, id: spiffeid.RequireFromString("spiffe://evil.example/x"), ttl: time.Hour, wantErr: "not in trust domain"},
		{name: "trust domain id", pub: pub, id: testTD.ID(), ttl: time.Hour, wantErr: "trust domain itself"},
		{name: "empty DNS name", pub: pub, id: id, dns: []string{""}, ttl: time.Hour, wantErr: "not a host name"},
		{name: "bad IP", pub: pub, id: id, ips: []net.IP{{1, 2, 3}}, ttl: time.Hour, wantErr: "neither IPv4 nor IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := c.IssueServing(tt.pub, tt.id, tt.dns, tt.ips, tt.ttl)
			if chain != nil {
				t.Error("got a chain with the error")
			}
			wantErr(t, err, tt.wantErr)
		})
	}
}

func TestSignCSRWithRecordsCodeDigest(t *testing.T) {
	c, clk := newTestCA(t)
	const digest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	chain, err := c.SignCSRWith(newCSR(t, csrOpts{}), workloadID, time.Hour, Attested{CodeDigest: digest})
	if err != nil {
		t.Fatalf("SignCSRWith: %v", err)
	}
	// Still a valid X.509-SVID to go-spiffe: the extension is not critical.
	if got := verifySVID(t, chain, c.Roots(), clk.Now()); got != workloadID {
		t.Errorf("verified ID %v, want %v", got, workloadID)
	}
	if got, ok := codedigest.FromCertificate(chain[0]); !ok || got != digest {
		t.Errorf("recorded digest %q, %v; want %q", got, ok, digest)
	}

	plain, err := c.SignCSR(newCSR(t, csrOpts{}), workloadID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := codedigest.FromCertificate(plain[0]); ok {
		t.Errorf("SignCSR recorded digest %q; want none", got)
	}

	if _, err := c.SignCSRWith(newCSR(t, csrOpts{}), workloadID, time.Hour, Attested{CodeDigest: "sha256:ABC"}); err == nil || errors.Is(err, ErrInvalidCSR) {
		t.Errorf("malformed digest: err = %v, want an error not wrapping ErrInvalidCSR", err)
	}
}
