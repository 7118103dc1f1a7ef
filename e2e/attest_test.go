package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/controller"
)

// TestAttestedCodeDigestReachesPolicy runs a proxy that obtains its
// identity over the controller's Unix attestation socket, with no join
// token: the controller measures its executable (this test binary) and
// records the digest in its certificate, and the server's policy admits
// only callers running that code.
func TestAttestedCodeDigestReachesPolicy(t *testing.T) {
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Skipf("no /proc/self/exe: %v", err)
	}
	sum := sha256.Sum256(exe)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	sock := filepath.Join(t.TempDir(), "attest.sock")

	a := startApps(t)
	m := newMesh(t, time.Hour, servicesYAML(a)+fmt.Sprintf(`---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: attested-code-only, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - when: 'source.digest == "%[2]s"'
---
apiVersion: rampart.dev/v1alpha1
kind: WorkloadAttestationPolicy
metadata: {name: attested, namespace: %[1]s}
spec:
  serviceAccount: attested
  code: {digests: ["%[2]s"]}
  unix: {uids: [%[3]d]}
`, ns, digest, os.Getuid()), func(c *controller.Config) { c.AttestSocket = sock })
	m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	attested := m.startProxy(proxyOpts{name: "attested", upstreams: []string{"web"}, controller: "unix://" + sock, noToken: true}, true)
	plain := m.startProxy(proxyOpts{name: "plain", upstreams: []string{"web"}}, true)

	var body string
	eventually(t, 5*time.Second, func() error {
		code, b, err := get(attested.UpstreamAddr(0), "/orders/1", nil)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("the attested caller: %d %q %v", code, b, err)
		}
		body = b
		return nil
	})
	if !strings.HasPrefix(body, "caller="+attested.ID().String()+" ") {
		t.Errorf("the app saw %q", body)
	}
	code, b, err := get(plain.UpstreamAddr(0), "/orders/1", nil)
	if err != nil || code != http.StatusForbidden || !strings.HasPrefix(b, "rampart: denied (decision ") {
		t.Errorf("a caller attested by join token, with no code digest: %d %q %v, want 403", code, b, err)
	}
}
