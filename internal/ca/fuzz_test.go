package ca

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzSignCSR feeds arbitrary bytes to SignCSR as the DER CSR. It must never
// panic, must refuse anything but a well-formed CSR for the attested ID with
// ErrInvalidCSR or ErrIdentityMismatch, and whatever it signs must be a
// verifiable SVID for exactly that ID.
func FuzzSignCSR(f *testing.F) {
	valid := newCSR(f, csrOpts{})
	f.Add(valid)
	f.Add(newCSR(f, csrOpts{key: "ed25519"}))
	f.Add(newCSR(f, csrOpts{key: "p224"}))
	f.Add(newCSR(f, csrOpts{noURI: true}))
	f.Add(newCSR(f, csrOpts{uris: []string{"spiffe://example.org/ns/shop/sa/admin"}}))
	f.Add(newCSR(f, csrOpts{uris: []string{"spiffe://evil.example/ns/shop/sa/checkout"}}))
	f.Add(newCSR(f, csrOpts{dns: []string{"a.example"}, ips: []net.IP{net.IPv4(1, 2, 3, 4)}}))
	f.Add(valid[:len(valid)-3])
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})

	c, clk := newTestCA(f)
	f.Fuzz(func(t *testing.T, csr []byte) {
		chain, err := c.SignCSR(csr, workloadID, time.Hour)
		if err != nil {
			if chain != nil {
				t.Fatal("chain returned with an error")
			}
			if !errors.Is(err, ErrInvalidCSR) && !errors.Is(err, ErrIdentityMismatch) {
				t.Fatalf("refusal %v wraps neither sentinel", err)
			}
			return
		}
		if got := verifySVID(t, chain, c.Roots(), clk.Now()); got != workloadID {
			t.Fatalf("issued for %v, want %v", got, workloadID)
		}
		leaf := chain[0]
		if leaf.IsCA || len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
			t.Fatalf("issued a leaf with unexpected properties: CA %v, URIs %v", leaf.IsCA, leaf.URIs)
		}
		if _, err := spiffeid.FromURI(leaf.URIs[0]); err != nil {
			t.Fatal(err)
		}
	})
}
