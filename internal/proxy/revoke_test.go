package proxy

import (
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

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
