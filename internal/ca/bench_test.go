package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/codedigest"
)

// BenchmarkIssue measures certificate issuance as Certify does it: one
// workload SVID for a P-256 CSR (parsed, checked, signed by the
// intermediate, with the attested code digest), per operation. The
// reported certs/s is per core.
//
//	go test -run '^$' -bench BenchmarkIssue -benchtime 3s ./internal/ca
func BenchmarkIssue(b *testing.B) {
	c, err := Open(Config{Dir: b.TempDir(), TrustDomain: testTD})
	if err != nil {
		b.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		b.Fatal(err)
	}
	attested := Attested{CodeDigest: codedigest.Format(sha256.Sum256([]byte("a build")))}
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		chain, err := c.SignCSRWith(csr, id, time.Hour, attested)
		if err != nil {
			b.Fatal(err)
		}
		if len(chain) == 0 {
			b.Fatal("no chain")
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
}
