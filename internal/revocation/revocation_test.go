package revocation

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/meshtls"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

const payments = "spiffe://rampart.local/ns/shop/sa/payments"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, data, wantErr string
	}{
		{"empty list", `{"version":1,"certificates":[],"identities":[]}`, ""},
		{"entries", `{"version":1,"certificates":[{"serial":"1a2b","not_after":"2026-05-02T00:00:00Z","revoked_at":"2026-05-01T00:00:00Z","reason":"key leaked"}],
			"identities":[{"spiffe_id":"` + payments + `","revoked_at":"2026-05-01T00:00:00Z"}]}`, ""},
		{"not json", `revoked: all`, "not a revocation list"},
		{"unknown field", `{"version":1,"serials":[]}`, "unknown field"},
		{"trailing data", `{"version":1} {}`, "data after"},
		{"wrong version", `{"version":2}`, "version 2"},
		{"upper-case serial", `{"version":1,"certificates":[{"serial":"1A","revoked_at":"2026-05-01T00:00:00Z"}]}`, "not lower-case hexadecimal"},
		{"leading zero", `{"version":1,"certificates":[{"serial":"01","revoked_at":"2026-05-01T00:00:00Z"}]}`, "leading zero"},
		{"long serial", `{"version":1,"certificates":[{"serial":"` + strings.Repeat("f", 41) + `","revoked_at":"2026-05-01T00:00:00Z"}]}`, "more than 40"},
		{"duplicate serial", `{"version":1,"certificates":[{"serial":"1","revoked_at":"2026-05-01T00:00:00Z"},{"serial":"1","revoked_at":"2026-05-01T00:00:00Z"}]}`, "certificates[1]: serial 1 listed twice"},
		{"serial without revoked_at", `{"version":1,"certificates":[{"serial":"1"}]}`, "revoked_at is missing"},
		{"bad identity", `{"version":1,"identities":[{"spiffe_id":"http://x","revoked_at":"2026-05-01T00:00:00Z"}]}`, "identities[0]"},
		{"duplicate identity", `{"version":1,"identities":[{"spiffe_id":"` + payments + `","revoked_at":"2026-05-01T00:00:00Z"},{"spiffe_id":"` + payments + `","revoked_at":"2026-05-01T00:00:00Z"}]}`, "listed twice"},
		{"released before revoked", `{"version":1,"identities":[{"spiffe_id":"` + payments + `","revoked_at":"2026-05-01T00:00:00Z","released_at":"2026-04-01T00:00:00Z"}]}`, "released_at is before revoked_at"},
		{"control character in reason", `{"version":1,"certificates":[{"serial":"1","revoked_at":"2026-05-01T00:00:00Z","reason":"a\u001b[31m"}]}`, "control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Parse error = %v, want one containing %q", err, tc.wantErr)
			case tc.wantErr != "" && !errors.Is(err, ErrInvalid):
				t.Fatalf("Parse error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestParseBound(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"version":1,"certificates":[`)
	for i := range MaxEntries + 1 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"serial":"` + big.NewInt(int64(i+1)).Text(16) + `","revoked_at":"2026-05-01T00:00:00Z"}`)
	}
	b.WriteString(`]}`)
	if _, err := Parse([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "more than the 10000 allowed") {
		t.Fatalf("Parse of %d entries: %v", MaxEntries+1, err)
	}
}

func TestUpdateAndLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revocations.json")
	l, err := Load(path)
	if err != nil || l.Len() != 0 {
		t.Fatalf("Load of a missing file = %v, %v; want an empty list", l, err)
	}
	_, err = Update(path, t0, 0, func(l *List) error {
		if err := l.RevokeCertificate(Certificate{Serial: "beef", RevokedAt: t0, NotAfter: t0.Add(time.Hour), Reason: "key leaked"}); err != nil {
			return err
		}
		return l.RevokeIdentity(Identity{SPIFFEID: payments, RevokedAt: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", st.Mode().Perm())
	}
	l, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Certificates) != 1 || l.Certificates[0].Serial != "beef" || len(l.Identities) != 1 || l.Identities[0].SPIFFEID != payments {
		t.Fatalf("loaded %+v", l)
	}

	// The certificate lapses at its expiry; the identity stays until
	// released.
	l, err = Update(path, t0.Add(2*time.Hour), 0, func(*List) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Certificates) != 0 || len(l.Identities) != 1 {
		t.Fatalf("after the certificate expired: %+v", l)
	}

	// A change that fails writes nothing.
	before, _ := os.ReadFile(path)
	if _, err := Update(path, t0, 0, func(l *List) error { return l.Release("spiffe://rampart.local/ns/shop/sa/other", t0) }); err == nil {
		t.Fatal("releasing an identity that is not revoked succeeded")
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Fatal("a failed change rewrote the file")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "revocations.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"certificates":[{"serial":"XYZ"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "certificates[0]") {
		t.Fatalf("Load of a corrupt file = %v; want an error naming the file and the entry", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Load of a file readable by others = %v", err)
	}
}

func TestFull(t *testing.T) {
	l := &List{Version: FormatVersion}
	for i := range MaxEntries {
		l.Certificates = append(l.Certificates, Certificate{Serial: big.NewInt(int64(i + 1)).Text(16), RevokedAt: t0})
	}
	if err := l.RevokeCertificate(Certificate{Serial: "ffffff", RevokedAt: t0}); !errors.Is(err, ErrFull) {
		t.Errorf("RevokeCertificate on a full list = %v, want ErrFull", err)
	}
	if err := l.RevokeIdentity(Identity{SPIFFEID: payments, RevokedAt: t0}); !errors.Is(err, ErrFull) {
		t.Errorf("RevokeIdentity on a full list = %v, want ErrFull", err)
	}
	if err := l.RevokeCertificate(Certificate{Serial: "1", RevokedAt: t0}); err != nil {
		t.Errorf("revoking a serial already listed on a full list: %v", err)
	}
}

func TestReleaseAndIssue(t *testing.T) {
	id := spiffeid.RequireFromString(payments)
	l := &List{Version: FormatVersion}
	if err := l.RevokeIdentity(Identity{SPIFFEID: payments, RevokedAt: t0, Reason: "compromised"}); err != nil {
		t.Fatal(err)
	}
	var rie *RevokedIdentityError
	if err := l.CheckIssue(id, t0.Add(time.Hour), time.Minute); !errors.As(err, &rie) || !rie.Until.IsZero() {
		t.Fatalf("CheckIssue of a revoked identity = %v", err)
	}
	if err := l.CheckIssue(spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/web"), t0, time.Minute); err != nil {
		t.Fatalf("CheckIssue of another identity = %v", err)
	}
	if err := l.Release(payments, t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(payments, t0.Add(20*time.Second)); err == nil {
		t.Fatal("a second release succeeded")
	}
	// Released, but a certificate issued now would predate the revocation
	// (NotBefore is backdated by a minute).
	if err := l.CheckIssue(id, t0.Add(30*time.Second), time.Minute); !errors.As(err, &rie) || !rie.Until.Equal(t0.Add(time.Minute)) {
		t.Fatalf("CheckIssue within the backdating = %v", err)
	}
	if err := l.CheckIssue(id, t0.Add(time.Minute), time.Minute); err != nil {
		t.Fatalf("CheckIssue after the backdating = %v", err)
	}

	// Certificates issued before the revocation stay refused after the
	// release, until one lifetime has passed.
	set := l.Active(t0.Add(time.Hour), 24*time.Hour).Set()
	if err := set.Check(leaf(5, payments, t0.Add(-time.Hour))); err == nil {
		t.Fatal("a certificate issued before the revocation is accepted after the release")
	}
	if err := set.Check(leaf(6, payments, t0.Add(time.Minute))); err != nil {
		t.Fatalf("a certificate issued after the release is refused: %v", err)
	}
	if l.Active(t0.Add(24*time.Hour), 24*time.Hour).Len() != 0 {
		t.Fatal("a released identity outlives its certificates")
	}
	if err := l.Release("abc", t0); err == nil || !strings.Contains(err.Error(), "not revoked") {
		t.Fatalf("Release of something not revoked = %v", err)
	}
}

func TestProtoAndSet(t *testing.T) {
	l := &List{Version: FormatVersion, Certificates: []Certificate{
		{Serial: "b", RevokedAt: t0, NotAfter: t0.Add(time.Hour)},
		{Serial: "a", RevokedAt: t0}, // expiry unknown: one lifetime
		{Serial: "c", RevokedAt: t0, NotAfter: t0.Add(-time.Second)},
	}}
	a := l.Active(t0, 2*time.Hour)
	pb := a.Proto(2 * time.Hour)
	if len(pb.Certificates) != 2 || pb.Certificates[0].Serial != "a" || !pb.Certificates[0].NotAfter.AsTime().Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("Proto = %v", pb)
	}
	set := a.Set()
	if err := set.Check(leaf(0xb, payments, t0)); err == nil {
		t.Error("serial b is not refused")
	}
	var re *meshtls.RevokedError
	if err := set.Check(leaf(0xa, payments, t0)); !errors.As(err, &re) || re.Serial != "a" {
		t.Errorf("Check of serial a = %v", err)
	}
	if err := set.Check(leaf(0xd, payments, t0)); err != nil {
		t.Errorf("serial d is refused: %v", err)
	}
}

func leaf(serial int64, id string, notBefore time.Time) *x509.Certificate {
	u, _ := url.Parse(id)
	return &x509.Certificate{SerialNumber: big.NewInt(serial), URIs: []*url.URL{u}, NotBefore: notBefore}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"certificates":[{"serial":"1a","not_after":"2026-05-02T00:00:00Z","revoked_at":"2026-05-01T00:00:00Z","reason":"x"}],"identities":[{"spiffe_id":"` + payments + `","revoked_at":"2026-05-01T00:00:00Z","released_at":"2026-05-01T01:00:00Z"}]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(data)
		if err != nil {
			return
		}
		// What parses is valid, and its set and message build.
		if err := l.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid list: %v", err)
		}
		if l.Set().Len() != l.Len() {
			t.Fatalf("the set has %d entries, the list %d", l.Set().Len(), l.Len())
		}
		_ = l.Active(t0, time.Hour).Proto(time.Hour)
	})
}

// TestEncodedSizeBound: a full list with the longest reasons would not fit
// in a proxy's configuration; Validate refuses it by size, and a full list
// of certificates without reasons still fits.
func TestEncodedSizeBound(t *testing.T) {
	long := &List{Version: FormatVersion}
	for i := range MaxEntries {
		long.Identities = append(long.Identities, Identity{
			SPIFFEID:  fmt.Sprintf("spiffe://rampart.local/ns/shop/sa/workload-%d", i),
			RevokedAt: t0, Reason: strings.Repeat("r", MaxReasonLen),
		})
	}
	if err := long.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("Validate of %d identities with %d-byte reasons = %v, want a size refusal", MaxEntries, MaxReasonLen, err)
	}
	if n := long.EncodedSize(); n <= MaxEncodedSize {
		t.Fatalf("EncodedSize = %d, want more than %d", n, MaxEncodedSize)
	}
	full := &List{Version: FormatVersion}
	for i := range MaxEntries {
		full.Certificates = append(full.Certificates, Certificate{Serial: fmt.Sprintf("%x", 1<<60+i), RevokedAt: t0, NotAfter: t0.Add(time.Hour)})
	}
	if err := full.Validate(); err != nil {
		t.Fatalf("Validate of %d certificates: %v", MaxEntries, err)
	}
}
