//go:build linux

package netns

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPermissiveMigration runs the migration of a workload whose callers
// are not all in the mesh yet: its port is PERMISSIVE, the namespace
// denies by default, one mesh identity and one plaintext address are
// allowed. Interception is real: the plaintext caller dials the pod's IP
// and iptables sends the connection to the proxy's plaintext listener.
func TestPermissiveMigration(t *testing.T) {
	c := newCluster(t, "allow-any", map[string]string{"services.yaml": services})
	web := c.addMeshPod("web-1", "web", "app=web")
	webApp(t, web)
	client := c.addMeshPod("client", "client", "app=client")
	intruder := c.addMeshPod("intruder", "intruder", "app=intruder")
	legacy := c.net.AddPod("legacy")     // outside the mesh, allowed by address
	stranger := c.net.AddPod("stranger") // outside the mesh, not allowed
	target := fmt.Sprintf("http://%s:%d/", web.IP, webPort)

	// Before the migration: strict, plaintext refused.
	if body, err := get(legacy.HTTPClient(), target); err == nil {
		t.Fatalf("plaintext to a STRICT workload answered %q", body)
	}

	c.writeConfig("policy.yaml", fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: NamespacePolicy
metadata: {name: default}
spec: {defaultAuthorization: deny-all}
---
apiVersion: rampart.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: web-migrating}
spec:
  selector: {matchLabels: {app: web}}
  ports: [{port: %[1]d, mode: PERMISSIVE}]
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{principals: ["%[2]s"]}]
  - from: [{ipBlocks: ["%[3]s/32"]}]
    to: [{methods: [GET]}]
`, webPort, c.id("client"), legacy.IP))

	t.Run("the allowed plaintext caller gets through, without an identity", func(t *testing.T) {
		eventually(t, 20*time.Second, func() error {
			body, err := get(legacy.HTTPClient(), target)
			if err != nil {
				return err
			}
			if want := "web-1 HTTP/1.1 "; body != want {
				return fmt.Errorf("answer %q, want %q (no caller identity)", body, want)
			}
			return nil
		})
		if got := web.metric("rampart_proxy_plaintext_connections_total", `protocol="http/1.1"`, `action="accepted"`); got == 0 {
			t.Error("accepted plaintext connection not counted")
		}
	})

	t.Run("a plaintext caller with a forged identity header gets none", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		req.Header.Set("Rampart-Client-Id", c.id("client").String())
		resp, err := legacy.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "web-1 HTTP/1.1 " {
			t.Errorf("answer %q: the forged identity reached the app", b)
		}
	})

	t.Run("everyone else is denied", func(t *testing.T) {
		for name, hc := range map[string]*http.Client{"stranger (plaintext)": stranger.HTTPClient(), "intruder (mesh)": intruder.HTTPClient()} {
			resp, err := hc.Get(target)
			if err != nil {
				t.Errorf("%s: %v, want a 403", name, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			id := resp.Header.Get("Rampart-Decision-Id")
			if resp.StatusCode != http.StatusForbidden || id == "" || string(b) != "rampart: denied (decision "+id+")\n" {
				t.Errorf("%s: %s %q, want 403 with the decision ID alone", name, resp.Status, b)
			}
		}
		// A method the address rule does not allow.
		req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader("x"))
		resp, err := legacy.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("legacy POST: %s, want 403", resp.Status)
		}
	})

	t.Run("the mesh caller keeps its identity", func(t *testing.T) {
		body, err := get(client.HTTPClient(), target)
		if err != nil {
			t.Fatal(err)
		}
		if want := "web-1 HTTP/1.1 " + c.id("client").String(); body != want {
			t.Errorf("answer %q, want %q", body, want)
		}
	})

	t.Run("back to strict, plaintext is refused again", func(t *testing.T) {
		c.writeConfig("policy.yaml", `apiVersion: rampart.dev/v1alpha1
kind: NamespacePolicy
metadata: {name: default}
spec: {defaultAuthorization: deny-all}
`)
		eventually(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			resp, err := legacy.HTTPClient().Do(req)
			if err == nil {
				resp.Body.Close()
				return fmt.Errorf("plaintext still answered: %s", resp.Status)
			}
			return nil
		})
	})
}
