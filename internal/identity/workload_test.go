package identity

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // "" means valid
	}{
		{name: "simple", in: "default"},
		{name: "single letter", in: "a"},
		{name: "single digit", in: "0"},
		{name: "with dashes", in: "kube-system"},
		{name: "digits first", in: "1st-team"},
		{name: "double dash", in: "a--b"},
		{name: "63 characters", in: strings.Repeat("a", 63)},
		{name: "empty", in: "", wantErr: "name is empty"},
		{name: "64 characters", in: strings.Repeat("a", 64), wantErr: "is 64 characters long, more than 63"},
		{name: "upper case", in: "Default", wantErr: `upper-case 'D' at offset 0; use lower case`},
		{name: "dot", in: "a.b", wantErr: `'.' at offset 1`},
		{name: "underscore", in: "a_b", wantErr: `'_' at offset 1`},
		{name: "slash", in: "a/b", wantErr: `'/' at offset 1`},
		{name: "space", in: "a b", wantErr: `' ' at offset 1`},
		{name: "NUL", in: "a\x00", wantErr: `'\x00' at offset 1`},
		{name: "non-ASCII", in: "caf\u00e9", wantErr: "non-ASCII character at offset 3"},
		{name: "leading dash", in: "-a", wantErr: "starts with '-'"},
		{name: "trailing dash", in: "a-", wantErr: "ends with '-'"},
		{name: "only dash", in: "-", wantErr: "starts with '-'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateName(%q): %v", tt.in, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateName(%q) accepted it", tt.in)
			}
			if !strings.HasPrefix(err.Error(), "identity: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ValidateName(%q) = %q, want it to contain %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestWorkloadID(t *testing.T) {
	tests := []struct {
		name    string
		td      spiffeid.TrustDomain
		ns, sa  string
		want    string
		wantErr string
	}{
		{name: "ok", td: testTD, ns: "shop", sa: "checkout", want: "spiffe://example.org/ns/shop/sa/checkout"},
		{name: "default names", td: testTD, ns: "default", sa: "default", want: "spiffe://example.org/ns/default/sa/default"},
		{name: "no trust domain", ns: "shop", sa: "checkout", wantErr: "no trust domain"},
		{name: "bad namespace", td: testTD, ns: "Shop", sa: "checkout", wantErr: "identity: namespace: name \"Shop\""},
		{name: "bad service account", td: testTD, ns: "shop", sa: "check_out", wantErr: "identity: service account: name \"check_out\""},
		{name: "empty service account", td: testTD, ns: "shop", sa: "", wantErr: "service account: name is empty"},
		{name: "path injection", td: testTD, ns: "shop/sa/admin/ns/x", sa: "checkout", wantErr: "namespace"},
		{name: "dot segment", td: testTD, ns: "..", sa: "checkout", wantErr: "namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := WorkloadID(tt.td, tt.ns, tt.sa)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("WorkloadID = %v, %v; want error containing %q", id, err, tt.wantErr)
				}
				if !id.IsZero() {
					t.Errorf("got ID %v with the error", id)
				}
				return
			}
			if err != nil {
				t.Fatalf("WorkloadID: %v", err)
			}
			if id.String() != tt.want {
				t.Errorf("WorkloadID = %s, want %s", id, tt.want)
			}
			ns, sa, err := ParseWorkloadID(id)
			if err != nil || ns != tt.ns || sa != tt.sa {
				t.Errorf("ParseWorkloadID(%s) = %q, %q, %v; want %q, %q", id, ns, sa, err, tt.ns, tt.sa)
			}
		})
	}
}

func TestParseWorkloadID(t *testing.T) {
	tests := []struct {
		in      string
		ns, sa  string
		wantErr string
	}{
		{in: "spiffe://example.org/ns/shop/sa/checkout", ns: "shop", sa: "checkout"},
		{in: "spiffe://other.example/ns/a/sa/b", ns: "a", sa: "b"},
		{in: "spiffe://example.org", wantErr: "not a workload ID"},
		{in: "spiffe://example.org/ns/shop", wantErr: "not a workload ID"},
		{in: "spiffe://example.org/ns/shop/sa", wantErr: "not a workload ID"},
		{in: "spiffe://example.org/ns/shop/sa/checkout/extra", wantErr: "not a workload ID"},
		{in: "spiffe://example.org/sa/checkout/ns/shop", wantErr: "not a workload ID"},
		{in: "spiffe://example.org/NS/shop/sa/checkout", wantErr: "not a workload ID"},
		{in: "spiffe://example.org/x/ns/shop/sa/checkout", wantErr: "not a workload ID"},
		{in: "spiffe://example.org/ns/Shop/sa/checkout", wantErr: "namespace: name \"Shop\" has upper-case"},
		{in: "spiffe://example.org/ns/shop/sa/-checkout", wantErr: "service account: name \"-checkout\" starts with '-'"},
		{in: "spiffe://example.org/ns/a.b/sa/checkout", wantErr: "namespace"},
		{in: "spiffe://example.org/ns/" + strings.Repeat("a", 64) + "/sa/checkout", wantErr: "more than 63"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id := spiffeid.RequireFromString(tt.in)
			ns, sa, err := ParseWorkloadID(id)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseWorkloadID = %q, %q, %v; want error containing %q", ns, sa, err, tt.wantErr)
				}
				if ns != "" || sa != "" {
					t.Errorf("got names %q, %q with the error", ns, sa)
				}
				return
			}
			if err != nil || ns != tt.ns || sa != tt.sa {
				t.Fatalf("ParseWorkloadID = %q, %q, %v; want %q, %q", ns, sa, err, tt.ns, tt.sa)
			}
		})
	}
	t.Run("zero", func(t *testing.T) {
		if _, _, err := ParseWorkloadID(spiffeid.ID{}); err == nil {
			t.Error("accepted the zero ID")
		}
	})
}

// FuzzWorkloadID checks that ParseWorkloadID accepts exactly what
// WorkloadID builds, for any SPIFFE ID string.
func FuzzWorkloadID(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org/ns/shop/sa/checkout",
		"spiffe://example.org/ns/shop/sa/checkout/x",
		"spiffe://example.org/ns//sa/x",
		"spiffe://example.org",
		"spiffe://example.org/ns/a-/sa/b",
		"not a spiffe id",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return
		}
		ns, sa, err := ParseWorkloadID(id)
		if err != nil {
			return
		}
		if ValidateName(ns) != nil || ValidateName(sa) != nil {
			t.Fatalf("ParseWorkloadID(%s) returned invalid names %q, %q", id, ns, sa)
		}
		back, err := WorkloadID(id.TrustDomain(), ns, sa)
		if err != nil {
			t.Fatalf("WorkloadID(%q, %q): %v", ns, sa, err)
		}
		if back != id {
			t.Fatalf("round trip of %s gave %s", id, back)
		}
	})
}
