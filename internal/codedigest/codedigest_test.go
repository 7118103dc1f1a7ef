package codedigest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
)

const good = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" // "test"

func TestCheck(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{good, ""},
		{"", "does not start with"},
		{"sha512:" + strings.Repeat("a", 64), "does not start with"},
		{"SHA256:" + strings.Repeat("a", 64), "does not start with"},
		{"sha256:" + strings.Repeat("a", 63), "63 hex digits"},
		{"sha256:" + strings.Repeat("a", 65), "65 hex digits"},
		{"sha256:" + strings.Repeat("A", 64), "not a lower-case hex digit"},
		{"sha256:" + strings.Repeat("g", 64), "not a lower-case hex digit"},
		{"sha256: " + strings.Repeat("a", 63), "not a lower-case hex digit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := Check(tt.in)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Check = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSum(t *testing.T) {
	got, err := Sum(strings.NewReader("test"), 4)
	if err != nil || got != good {
		t.Fatalf("Sum = %q, %v; want %q", got, err, good)
	}
	if _, err := Sum(strings.NewReader("test!"), 4); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Sum over the limit = %v, want ErrTooLarge", err)
	}
}

func certWith(exts ...pkix.Extension) *x509.Certificate {
	return &x509.Certificate{Extensions: exts}
}

func TestExtensionRoundTrip(t *testing.T) {
	ext, err := Extension(good)
	if err != nil {
		t.Fatal(err)
	}
	if ext.Critical {
		t.Error("extension is critical; it must not be")
	}
	if !ext.Id.Equal(OID) {
		t.Errorf("extension OID %v, want %v", ext.Id, OID)
	}
	got, ok := FromCertificate(certWith(ext))
	if !ok || got != good {
		t.Fatalf("FromCertificate = %q, %v; want %q", got, ok, good)
	}
	if _, err := Extension("sha256:abc"); err == nil {
		t.Error("Extension accepted a malformed digest")
	}
}

func TestFromCertificateRefusesMalformed(t *testing.T) {
	ext, err := Extension(good)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("test"))
	encode := func(v any) []byte {
		der, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	critical := ext
	critical.Critical = true
	tests := map[string]*x509.Certificate{
		"nil certificate": nil,
		"no extension":    certWith(),
		"twice":           certWith(ext, ext),
		"critical":        certWith(critical),
		"not DER":         certWith(pkix.Extension{Id: OID, Value: []byte{0x30, 0x03, 0x01}}),
		"trailing bytes":  certWith(pkix.Extension{Id: OID, Value: append(bytes.Clone(ext.Value), 0)}),
		"other algorithm": certWith(pkix.Extension{Id: OID, Value: encode(value{HashAlgorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}, Digest: sum[:]})}),
		"short digest":    certWith(pkix.Extension{Id: OID, Value: encode(value{HashAlgorithm: oidSHA256, Digest: sum[:31]})}),
		"a bare string":   certWith(pkix.Extension{Id: OID, Value: encode(good)}),
		"extra element": certWith(pkix.Extension{Id: OID, Value: encode(struct {
			HashAlgorithm asn1.ObjectIdentifier
			Digest        []byte
			Extra         int
		}{oidSHA256, sum[:], 1})}),
	}
	for name, cert := range tests {
		t.Run(name, func(t *testing.T) {
			if got, ok := FromCertificate(cert); ok {
				t.Fatalf("FromCertificate = %q, true; want none", got)
			}
		})
	}
}

func FuzzFromCertificate(f *testing.F) {
	ext, err := Extension(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ext.Value)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		got, ok := FromCertificate(certWith(pkix.Extension{Id: OID, Value: v}))
		if !ok {
			return
		}
		// What reads back is canonical and re-encodes to the same bytes.
		if err := Check(got); err != nil {
			t.Fatalf("FromCertificate returned %q: %v", got, err)
		}
		again, err := Extension(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Value, v) {
			t.Fatalf("%x read as %q, which encodes as %x", v, got, again.Value)
		}
	})
}
