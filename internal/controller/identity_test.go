package controller

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/ca"
)

func TestExpiryWarning(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		left time.Duration
		want string
	}{
		{left: 400 * 24 * time.Hour, want: ""},
		{left: 31 * 24 * time.Hour, want: ""},
		{left: 29 * 24 * time.Hour, want: "WARNING: root expires in 29 days"},
		{left: 6 * 24 * time.Hour, want: "CRITICAL: root expires in 144h0m0s"},
		{left: -time.Hour, want: "CRITICAL: root expired at"},
	}
	for _, tt := range tests {
		got := expiryWarning("root", now.Add(tt.left), now)
		if (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) {
			t.Errorf("left %v: %q, want prefix %q", tt.left, got, tt.want)
		}
	}
}

// TestExternalCAStatusAndMetrics starts a controller on an external CA's
// files and checks /identity's content and the expiry gauges.
func TestExternalCAStatusAndMetrics(t *testing.T) {
	extDir := t.TempDir()
	other, err := ca.Open(ca.Config{Dir: extDir, TrustDomain: spiffeid.RequireTrustDomainFromString(DefaultTrustDomain), RootTTL: 20 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ext := &ca.External{
		BundleFile: filepath.Join(extDir, "root.crt"),
		CertFile:   filepath.Join(extDir, "intermediate.crt"),
		KeyFile:    filepath.Join(extDir, "intermediate.key"),
	}
	c, err := New(Config{StateDir: t.TempDir(), AdminListen: "off", ExternalCA: ext})
	if err != nil {
		t.Fatal(err)
	}
	st := c.IdentityStatus()
	if !st.External || len(st.TrustAnchors) != 1 || st.TrustAnchors[0].Serial != ca.SerialOf(other.Roots()[0]) {
		t.Fatalf("status %+v", st)
	}
	if st.Issuer.Serial != ca.SerialOf(other.Intermediate()) || st.Issuer.Root != st.TrustAnchors[0].Serial {
		t.Errorf("issuer %+v", st.Issuer)
	}
	// The root (and the issuer it caps) expire within 30 days.
	if len(st.Warnings) != 2 || !strings.HasPrefix(st.Warnings[0], "WARNING: trust anchor") || !strings.HasPrefix(st.Warnings[1], "WARNING: issuer") {
		t.Errorf("warnings %q", st.Warnings)
	}
	for name, want := range map[string]int{
		"rampart_controller_trust_anchor_expiry_timestamp_seconds": 1,
		"rampart_controller_issuer_expiry_timestamp_seconds":       1,
		"rampart_controller_certificates_issued_total":             2,
	} {
		if n, err := testutil.GatherAndCount(c.Registry(), name); err != nil || n != want {
			t.Errorf("%s: %d series, %v; want %d", name, n, err, want)
		}
	}
	if err := c.ca.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ca.PrepareRoot(); err == nil || !strings.Contains(err.Error(), "external CA's job") {
		t.Errorf("prepare on an external CA: %v", err)
	}
}

func TestConfigValidateExternalCA(t *testing.T) {
	err := Config{StateDir: "x", ExternalCA: &ca.External{CertFile: "a"}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "--ca-bundle") {
		t.Errorf("Validate: %v", err)
	}
}
