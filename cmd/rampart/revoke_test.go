package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/revocation"
)

// TestRevokeCommands revokes and releases through the CLI against a state
// directory and checks what it refuses.
func TestRevokeCommands(t *testing.T) {
	stateDir := t.TempDir()
	// Creates the CA in the state directory.
	if _, err := controller.New(controller.Config{StateDir: stateDir, Listen: "127.0.0.1:0", AdminListen: "off"}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, error) {
		t.Helper()
		return execute(t, append(append([]string{"identity"}, args...), "--state-dir", stateDir)...)
	}

	if out, _, err := run("revocations"); err != nil || !strings.Contains(out, "Nothing is revoked") {
		t.Fatalf("revocations on an empty list: %q %v", out, err)
	}
	for _, tc := range []struct{ arg, wantErr string }{
		{"spiffe://rampart.local/ns/rampart-system/sa/rampart-controller", "controller's own identity"},
		{"spiffe://other.example/ns/shop/sa/web", "not in the mesh's trust domain"},
		{"spiffe://rampart.local/shop/web", "not a workload identity"},
		{"spiffe://rampart.local/ns/shop/sa/we b", "not a SPIFFE ID"},
		{"not-a-serial", "neither a SPIFFE ID"},
		{"0", "neither a SPIFFE ID"},
	} {
		if _, _, err := run("revoke", tc.arg); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("revoke %s = %v, want an error containing %q", tc.arg, err, tc.wantErr)
		}
	}

	// An unknown serial is revoked with a warning; colons and case are
	// accepted and normalised.
	out, errOut, err := run("revoke", "0A:BC:DE", "--reason", "key leaked")
	if err != nil || !strings.Contains(out, "Revoked certificate abcde") || !strings.Contains(errOut, "not among the certificates in use") {
		t.Fatalf("revoke of an unknown serial: %q %q %v", out, errOut, err)
	}
	web := "spiffe://rampart.local/ns/shop/sa/web"
	if out, _, err := run("revoke", web, "--reason", "compromised host"); err != nil || !strings.Contains(out, "Revoked "+web) {
		t.Fatalf("revoke %s: %q %v", web, out, err)
	}
	if _, _, err := run("revoke", "--release", "abcde"); err == nil {
		t.Error("--release of a serial accepted")
	}
	out, _, err = run("revocations")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"abcde", "key leaked", web, "revoked, not issued", "compromised host"} {
		if !strings.Contains(out, want) {
			t.Errorf("revocations lacks %q:\n%s", want, out)
		}
	}
	if out, _, err := run("revoke", "--release", web); err != nil || !strings.Contains(out, "Released "+web) {
		t.Fatalf("release: %q %v", out, err)
	}
	if _, _, err := run("revoke", "--release", web); err == nil || !strings.Contains(err.Error(), "already released") {
		t.Errorf("second release = %v", err)
	}
	out, _, err = run("revocations", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var l revocation.List
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("revocations -o json: %v\n%s", err, out)
	}
	if len(l.Certificates) != 1 || len(l.Identities) != 1 || !l.Identities[0].Released() {
		t.Fatalf("revocations -o json = %+v", l)
	}
	path := filepath.Join(stateDir, controller.RevocationsFile)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("revocations file: %v, %v", st, err)
	}

	// The recorded serving certificate of the controller is refused too.
	authority, err := openCA(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.PublishLeaves([]ca.Leaf{{Serial: "fedcba", SPIFFEID: "spiffe://rampart.local/ns/rampart-system/sa/rampart-controller",
		NotAfter: time.Now().Add(time.Hour), Kind: ca.KindServing}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run("revoke", "fedcba"); err == nil || !strings.Contains(err.Error(), "controller's own certificate") {
		t.Errorf("revoke of the serving certificate = %v", err)
	}

	// A certificate renewed from the one revoked, directly or not, is
	// revoked with it; another of the same identity is not.
	shop := "spiffe://rampart.local/ns/shop/sa/cart"
	soon := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if err := authority.PublishLeaves([]ca.Leaf{
		{Serial: "c2", SPIFFEID: shop, NotAfter: soon, RenewedFrom: []ca.Renewal{{Serial: "c1", NotAfter: soon}, {Serial: "c0", NotAfter: soon}}},
		{Serial: "d1", SPIFFEID: shop, NotAfter: soon},
	}); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = run("revoke", "c0", "--reason", "key copied")
	if err != nil || !strings.Contains(out, "Revoked certificate c2 of "+shop) || !strings.Contains(errOut, "revoke the identity") {
		t.Fatalf("revoke of a certificate renewed since: %q %q %v", out, errOut, err)
	}
	got, err := revocation.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, c := range got.Certificates {
		serials = append(serials, c.Serial)
	}
	if s := strings.Join(serials, ","); s != "abcde,c0,c2" {
		t.Errorf("revoked serials = %s, want abcde,c0,c2", s)
	}

	// Without a readable record, a serial cannot be checked against the
	// controller's own certificate: refused, nothing written.
	if err := os.WriteFile(filepath.Join(stateDir, controller.CADir, "leaves.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run("revoke", "fedcba"); err == nil || !strings.Contains(err.Error(), "cannot read the record of certificates in use") {
		t.Errorf("revoke with an unreadable record = %v, want a refusal", err)
	}
	if got, err = revocation.Load(path); err != nil || len(got.Certificates) != 3 {
		t.Errorf("after the refusal the list is %+v (%v), want 3 certificates", got, err)
	}
}
