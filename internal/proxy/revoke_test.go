package proxy

import (
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func TestValidateRevocations(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	good := func() *meshv1.Revocations {
		return &meshv1.Revocations{
			Certificates: []*meshv1.RevokedCertificate{{Serial: "1f", NotAfter: timestamppb.New(at.Add(time.Hour)), Reason: "key leaked"}},
			Identities:   []*meshv1.RevokedIdentity{{SpiffeId: "spiffe://example.org/ns/shop/sa/orders", RevokedAt: timestamppb.New(at)}},
		}
	}
	tests := []struct {
		name    string
		mutate  func(*meshv1.Revocations)
		wantErr string
	}{
		{"good", func(*meshv1.Revocations) {}, ""},
		{"empty serial", func(r *meshv1.Revocations) { r.Certificates[0].Serial = "" }, "serial is empty"},
		{"upper-case serial", func(r *meshv1.Revocations) { r.Certificates[0].Serial = "1F" }, "not lower-case hexadecimal"},
		{"leading zero", func(r *meshv1.Revocations) { r.Certificates[0].Serial = "01f" }, "leading zero"},
		{"long serial", func(r *meshv1.Revocations) { r.Certificates[0].Serial = strings.Repeat("a", 41) }, "more than 40"},
		{"duplicate serial", func(r *meshv1.Revocations) {
			r.Certificates = append(r.Certificates, r.Certificates[0])
		}, "certificates[1]: serial 1f listed twice"},
		{"no expiry", func(r *meshv1.Revocations) { r.Certificates[0].NotAfter = nil }, "not_after"},
		{"long reason", func(r *meshv1.Revocations) { r.Certificates[0].Reason = strings.Repeat("x", 257) }, "reason longer"},
		{"bad identity", func(r *meshv1.Revocations) { r.Identities[0].SpiffeId = "orders" }, "identities[0]"},
		{"duplicate identity", func(r *meshv1.Revocations) {
			r.Identities = append(r.Identities, r.Identities[0])
		}, "listed twice"},
		{"no revocation time", func(r *meshv1.Revocations) { r.Identities[0].RevokedAt = nil }, "revoked_at"},
		{"too many", func(r *meshv1.Revocations) {
			for i := range maxRevocations {
				r.Certificates = append(r.Certificates, &meshv1.RevokedCertificate{Serial: big.NewInt(int64(i + 0x100)).Text(16), NotAfter: timestamppb.New(at)})
			}
		}, "more than the 10000 allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pc := goodConfig()
			pc.Revocations = good()
			tc.mutate(pc.Revocations)
			v, err := validateConfig(pc, self)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("validateConfig: %v", err)
				}
				leaf := &x509.Certificate{SerialNumber: big.NewInt(0x1f), URIs: []*url.URL{self.URL()}}
				if v.revoked.Check(leaf) == nil {
					t.Fatal("serial 1f is not revoked")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validateConfig error = %v, want one containing %q", err, tc.wantErr)
			}
			if got := rejectReason(err); got != rejectRevocations {
				t.Fatalf("reject reason %q, want %q", got, rejectRevocations)
			}
		})
	}

	// A configuration without revocations revokes nothing.
	v, err := validateConfig(goodConfig(), self)
	if err != nil || v.revoked.Len() != 0 {
		t.Fatalf("validateConfig without revocations = %v, %v", v, err)
	}
}

// TestRevocationsIgnoreController: an entry revoking the controller's
// identity would cut the proxy off the control plane for good; it is left
// out, and the others apply.
func TestRevocationsIgnoreController(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ctrl := identity.ControllerID(self.TrustDomain())
	pc := goodConfig()
	pc.Revocations = &meshv1.Revocations{Identities: []*meshv1.RevokedIdentity{
		{SpiffeId: ctrl.String(), RevokedAt: timestamppb.New(at)},
		{SpiffeId: "spiffe://example.org/ns/shop/sa/orders", RevokedAt: timestamppb.New(at)},
	}}
	v, err := validateConfig(pc, self)
	if err != nil {
		t.Fatalf("validateConfig: %v", err)
	}
	if len(v.revokedIgnored) != 1 || v.revokedIgnored[0] != ctrl.String() {
		t.Errorf("ignored = %v, want [%s]", v.revokedIgnored, ctrl)
	}
	issued := at.Add(-time.Hour)
	if err := v.revoked.Check(&x509.Certificate{SerialNumber: big.NewInt(7), URIs: []*url.URL{ctrl.URL()}, NotBefore: issued}); err != nil {
		t.Errorf("the controller's certificate is refused: %v", err)
	}
	orders := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/orders")
	if v.revoked.Check(&x509.Certificate{SerialNumber: big.NewInt(8), URIs: []*url.URL{orders.URL()}, NotBefore: issued}) == nil {
		t.Error("the other identity entry was not applied")
	}
}

// TestRefusedConfigAppliesRevocations: a configuration refused for a
// reason unrelated to its revocation list still puts that list in force;
// a malformed list leaves the one in force.
func TestRefusedConfigAppliesRevocations(t *testing.T) {
	authority, err := ca.Open(ca.Config{Dir: t.TempDir(), TrustDomain: self.TrustDomain()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{TrustBundle: authority.Roots(), TrustDomain: "example.org", Namespace: "shop", Workload: "web",
		TunnelListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.dialer.Close(); p.admin.Close() })
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0x1f), URIs: []*url.URL{self.URL()}}

	pc := goodConfig()
	pc.Revocations = &meshv1.Revocations{Certificates: []*meshv1.RevokedCertificate{{Serial: "1f", NotAfter: timestamppb.New(time.Now().Add(time.Hour))}}}
	pc.Services[0].Ports[0].Port = 0 // refused: services
	err = p.apply(pc)
	if rejectReason(err) != rejectServices {
		t.Fatalf("apply = %v, want a refusal of the services", err)
	}
	p.applyRefusedRevocations(pc, err)
	if p.tls.Revocations.Check(leaf) == nil {
		t.Fatal("the revocation list of a configuration refused for its services is not in force")
	}

	bad := goodConfig()
	bad.Services[0].Ports[0].Port = 0
	bad.Revocations = &meshv1.Revocations{Certificates: []*meshv1.RevokedCertificate{{Serial: "1F"}}}
	p.applyRefusedRevocations(bad, p.apply(bad))
	if p.tls.Revocations.Check(leaf) == nil {
		t.Fatal("a malformed list in a refused configuration replaced the one in force")
	}
}
