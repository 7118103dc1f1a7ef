package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rampart-mesh/rampart/internal/controller"
)

// TestQuarantineCommands adds, lists and releases through the CLI against
// a state directory and checks what it refuses.
func TestQuarantineCommands(t *testing.T) {
	stateDir := t.TempDir()
	// Creates the CA in the state directory.
	if _, err := controller.New(controller.Config{StateDir: stateDir, Listen: "127.0.0.1:0", AdminListen: "off"}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, error) {
		t.Helper()
		return execute(t, append(append([]string{"quarantine"}, args...), "--state-dir", stateDir)...)
	}
	if out, _, err := run("list"); err != nil || !strings.Contains(out, "No identity is quarantined") {
		t.Fatalf("list on an empty list: %q %v", out, err)
	}
	web := "spiffe://rampart.local/ns/shop/sa/web"
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"add", "spiffe://rampart.local/ns/rampart-system/sa/rampart-controller"}, "controller's own identity"},
		{[]string{"add", "spiffe://other.example/ns/shop/sa/web"}, "not in the mesh's trust domain"},
		{[]string{"add", "spiffe://rampart.local/shop/web"}, "not a workload identity"},
		{[]string{"add", web, "--for", "169h"}, "at most 168h"},
		{[]string{"add", web, "--for", "0s"}, "more than 0"},
		{[]string{"add", web, "--reason", "a\tb"}, "control character"},
		{[]string{"release", web}, "not quarantined"},
		{[]string{"list", "-o", "yaml"}, "want table or json"},
	} {
		if _, _, err := run(tc.args...); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%v = %v, want an error containing %q", tc.args, err, tc.wantErr)
		}
	}

	if out, errOut, err := run("add", web, "--for", "30m", "--reason", "scanning paths"); err != nil || !strings.Contains(out, "Quarantined "+web) || !strings.Contains(errOut, "pushes") {
		t.Fatalf("add: %q %q %v", out, errOut, err)
	}
	out, _, err := run("list")
	if err != nil || !strings.Contains(out, web) || !strings.Contains(out, "scanning paths") || !strings.Contains(out, "operator") || !strings.Contains(out, "REMAINING") {
		t.Fatalf("list: %q %v", out, err)
	}
	out, _, err = run("list", "-o", "json")
	var v controller.QuarantineResponse
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || len(v.Identities) != 1 || v.Identities[0].SPIFFEID != web || v.Identities[0].By != "operator" {
		t.Fatalf("list -o json: %q %v", out, err)
	}
	if out, _, err := run("release", web); err != nil || !strings.Contains(out, "Released "+web) {
		t.Fatalf("release: %q %v", out, err)
	}
	if out, _, err := run("list"); err != nil || !strings.Contains(out, "No identity is quarantined") {
		t.Fatalf("list after release: %q %v", out, err)
	}
}
