package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/controller"
)

// TestIdentityCommands rotates the root of a running controller through
// the CLI and reads its status.
func TestIdentityCommands(t *testing.T) {
	stateDir := t.TempDir()
	c, err := controller.New(controller.Config{
		StateDir:       stateDir,
		Listen:         "127.0.0.1:0",
		AdminListen:    "127.0.0.1:0",
		CAPollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-c.Ready()

	status := func() string {
		t.Helper()
		out, _, err := execute(t, "identity", "status", "--admin", c.AdminAddr())
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return out
	}
	waitFor := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("controller never showed %s; status:\n%s", what, status())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	anchors := func() int { return len(c.IdentityStatus().TrustAnchors) }

	out := status()
	for _, want := range []string{"Trust domain rampart.local (Rampart's own CA)", "active", "spiffe://rampart.local/ns/rampart-system/sa/rampart-controller"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	if _, _, err := execute(t, "identity", "rotate-root", "--stage", "activate", "--state-dir", stateDir); err == nil || !strings.Contains(err.Error(), "prepare one first") {
		t.Errorf("activate before prepare: %v", err)
	}
	if _, _, err := execute(t, "identity", "rotate-root", "--stage", "bogus", "--state-dir", stateDir); err == nil {
		t.Error("unknown stage accepted")
	}
	if out, _, err := execute(t, "identity", "rotate-root", "--stage", "prepare", "--state-dir", stateDir); err != nil || !strings.Contains(out, "Prepared root") {
		t.Fatalf("prepare: %q %v", out, err)
	}
	waitFor("two trust anchors", func() bool { return anchors() == 2 })
	if out := status(); !strings.Contains(out, "next") {
		t.Errorf("status lacks the next root:\n%s", out)
	}
	if _, _, err := execute(t, "identity", "rotate-root", "--stage", "activate", "--state-dir", stateDir); err != nil {
		t.Fatalf("activate: %v", err)
	}
	// The controller issues from the new issuer; its own certificate stays
	// under the old root, marked, and does not hold retire up.
	waitFor("the new issuer", func() bool {
		st := c.IdentityStatus()
		return st.TrustAnchors[0].Role == "active" && st.Issuer.Root == st.TrustAnchors[0].Serial &&
			len(st.TrustAnchors) == 2 && st.TrustAnchors[1].Role == "previous"
	})
	prevRoot := c.IdentityStatus().TrustAnchors[1].Serial
	out = status()
	if i := strings.Index(out, "rampart-controller (serving)"); i < 0 || !strings.Contains(strings.SplitN(out[i:], "\n", 2)[0], prevRoot) {
		t.Errorf("status does not show the serving certificate under the previous root %s:\n%s", prevRoot, out)
	}
	var err2 error
	waitFor("retire accepted", func() bool {
		_, _, err2 = execute(t, "identity", "rotate-root", "--stage", "retire", "--state-dir", stateDir)
		return err2 == nil
	})
	waitFor("one trust anchor", func() bool { return anchors() == 1 })

	// rotate-issuer, and an issuer import refused for Rampart's own CA.
	if out, _, err := execute(t, "identity", "rotate-issuer", "--state-dir", stateDir); err != nil || !strings.Contains(out, "New issuer") {
		t.Fatalf("rotate-issuer: %q %v", out, err)
	}
	if _, _, err := execute(t, "identity", "rotate-issuer", "--state-dir", stateDir, "--cert", "x.crt"); err == nil {
		t.Error("--cert without --key accepted")
	}
	if out, _, err := execute(t, "identity", "status", "--admin", c.AdminAddr(), "--json"); err != nil || !strings.Contains(out, `"trust_anchors"`) {
		t.Errorf("status --json: %q %v", out, err)
	}
}
