package meshtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestRevocationSet(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	web := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
	api := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/api")
	set := NewRevocationSet([]string{"1f"}, map[spiffeid.ID]time.Time{web: at})
	leaf := func(serial int64, id spiffeid.ID, notBefore time.Time) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), URIs: []*url.URL{id.URL()}, NotBefore: notBefore}
	}
	for _, tc := range []struct {
		name    string
		cert    *x509.Certificate
		revoked bool
	}{
		{"serial", leaf(0x1f, api, at.Add(time.Hour)), true},
		{"other serial", leaf(0x20, api, at.Add(-time.Hour)), false},
		{"identity, issued before", leaf(2, web, at.Add(-time.Second)), true},
		{"identity, issued at", leaf(3, web, at), false},
		{"identity, issued after", leaf(4, web, at.Add(time.Minute)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := set.Check(tc.cert)
			if (err != nil) != tc.revoked {
				t.Fatalf("Check = %v, want revoked %v", err, tc.revoked)
			}
			if err != nil && Reason(fmt.Errorf("handshake: %w", err)) != ReasonRevoked {
				t.Fatalf("Reason(%v) = %q", err, Reason(err))
			}
		})
	}
	var r *Revocations
	if err := r.Check(leaf(0x1f, api, at)); err != nil {
		t.Fatalf("a nil holder revokes: %v", err)
	}
	r = new(Revocations)
	r.Set(set)
	var re *RevokedError
	if err := r.Check(leaf(0x1f, api, at)); !errors.As(err, &re) || re.Serial != "1f" {
		t.Fatalf("holder Check = %v", err)
	}
}
