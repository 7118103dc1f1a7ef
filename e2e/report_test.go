package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/report"
)

// TestComplianceReport drives known traffic through a mesh (a client that
// shop's ALLOW policy admits, a client it denies, and the admitted client
// calling pay, which no policy covers), runs `rampart report` against the
// controller and checks the JSON figures against the traffic sent (exact
// counts), that the HTML carries them, and that the PDF is one when
// Chromium is installed.
func TestComplianceReport(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	cli := rampartCLI(t)
	apps := make([]net.Listener, 2)
	for i := range apps {
		apps[i] = listen(t)
		hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })}
		go hs.Serve(apps[i])
		t.Cleanup(func() { hs.Close() })
	}
	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: shop, namespace: %[1]s}
spec:
  selector: {app: shop}
  ports: [{name: http, port: 80, targetPort: %[2]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: pay, namespace: %[1]s}
spec:
  selector: {app: pay}
  ports: [{name: http, port: 80, targetPort: %[3]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: shop-callers, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: shop}}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://%[4]s/ns/%[1]s/sa/good"]}]
`, ns, port(apps[0]), port(apps[1]), trustDomain), adminOn)
	m.startProxy(proxyOpts{name: "shop", labels: map[string]string{"app": "shop"}}, true)
	m.startProxy(proxyOpts{name: "pay", labels: map[string]string{"app": "pay"}}, true)
	good := m.startProxy(proxyOpts{name: "good", upstreams: []string{"shop", "pay"}}, true)
	bad := m.startProxy(proxyOpts{name: "bad", upstreams: []string{"shop"}}, true)

	// Requests that reached their destination's proxy, by edge: answered
	// 200 (served) or 403 (denied there). Warm-ups count too.
	reached := map[string]int{}
	send := func(c *runningProxy, upstream int, edge string, want int) error {
		code, _, err := get(c.UpstreamAddr(upstream), "/items", nil)
		if err != nil {
			return err
		}
		if code == http.StatusOK || code == http.StatusForbidden {
			reached[edge]++
		}
		if code != want {
			return fmt.Errorf("%s: %d, want %d", edge, code, want)
		}
		return nil
	}
	for _, w := range []struct {
		c        *runningProxy
		upstream int
		edge     string
		want     int
		n        int
	}{
		{good, 0, "good->shop", http.StatusOK, 20},
		{bad, 0, "bad->shop", http.StatusForbidden, 7},
		{good, 1, "good->pay", http.StatusOK, 5},
	} {
		eventually(t, 10*time.Second, func() error { return send(w.c, w.upstream, w.edge, w.want) })
		for range w.n {
			if err := send(w.c, w.upstream, w.edge, w.want); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("requests that reached their destination: %v", reached)

	dir := t.TempDir()
	htmlPath, jsonPath, pdfPath := filepath.Join(dir, "report.html"), filepath.Join(dir, "report.json"), filepath.Join(dir, "report.pdf")
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"report", "--controller-admin", m.ctrl.AdminAddr(), "--since", "1h"}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("rampart report %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	}
	shop, pay := ns+"/shop", ns+"/pay"
	var r report.Report
	eventually(t, 30*time.Second, func() error {
		run("-o", htmlPath, "--json", jsonPath)
		b, err := os.ReadFile(jsonPath)
		if err != nil {
			return err
		}
		r = report.Report{}
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		if want := uint64(reached["good->shop"] + reached["bad->shop"] + reached["good->pay"]); r.Summary.Requests != want {
			return fmt.Errorf("report counts %d requests, want %d (the proxies may not have reported yet)", r.Summary.Requests, want)
		}
		return nil
	})

	if r.Summary.MTLSRequests != r.Summary.Requests || r.Summary.MTLSShare == nil || *r.Summary.MTLSShare != 1 || r.Summary.PlaintextEdges != 0 {
		t.Errorf("encryption: %d of %d over mTLS (share %v), %d plaintext edges; want every request over mTLS",
			r.Summary.MTLSRequests, r.Summary.Requests, r.Summary.MTLSShare, r.Summary.PlaintextEdges)
	}
	if r.Summary.Denied != uint64(reached["bad->shop"]) || len(r.Denials.ByDestination) != 1 {
		t.Fatalf("denials %+v, want %d, all at %s", r.Denials, reached["bad->shop"], shop)
	}
	if d := r.Denials.ByDestination[0]; d.Destination != shop || d.Denied != uint64(reached["bad->shop"]) ||
		d.Requests != uint64(reached["good->shop"]+reached["bad->shop"]) {
		t.Errorf("denials at %s: %+v; want %d requests, %d denied", shop, d, reached["good->shop"]+reached["bad->shop"], reached["bad->shop"])
	}
	// The destination's proxy names its caller by verified identity.
	goodID := fmt.Sprintf("spiffe://%s/ns/%s/sa/good", trustDomain, ns)
	if e := r.Coverage.EdgesWithoutPolicy; len(e) != 1 || e[0].Source != goodID || e[0].Destination != pay || e[0].Requests != uint64(reached["good->pay"]) {
		t.Fatalf("edges without policy %+v, want %s -> %s with %d requests", e, goodID, pay, reached["good->pay"])
	}
	// Every workload but shop lacks an ALLOW policy under the default
	// allow-authenticated.
	want := []string{ns + "/bad", ns + "/good", pay}
	if got := r.Coverage.WorkloadsWithoutPolicy; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("workloads without policy %v, want %v", got, want)
	}
	if len(r.Identity.Certificates) < 4 || len(r.Identity.TrustAnchors) == 0 || r.Identity.Issuer.Serial == "" {
		t.Errorf("identity: %d certificates, %d anchors, issuer %q", len(r.Identity.Certificates), len(r.Identity.TrustAnchors), r.Identity.Issuer.Serial)
	}
	for _, w := range r.Attestation.Workloads {
		if w.Status != report.StatusJoinTokenOnly || w.Revoked || w.Quarantined {
			t.Errorf("attestation of %s/%s: %+v; want join token only, not revoked or quarantined", w.Namespace, w.Workload, w)
		}
	}

	html, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"100.00%",
		fmt.Sprintf(`<div class="value" id="denied">%d</div>`, reached["bad->shop"]),
		fmt.Sprintf("<td>%s</td><td>%s</td><td>%s</td><td>yes</td><td class=\"num\">%d</td>", goodID, pay, r.Coverage.EdgesWithoutPolicy[0].Service, reached["good->pay"]),
	} {
		if !strings.Contains(string(html), s) {
			t.Errorf("the HTML report lacks %q", s)
		}
	}

	if _, err := report.FindChromium(""); err != nil {
		if os.Getenv("RAMPART_REQUIRE_NETNS") == "1" {
			t.Fatal("chromium not found: run scripts/test-deps.sh (make test does)")
		}
		t.Skip("chromium not found: the PDF is not checked; run scripts/test-deps.sh to install it")
	}
	run("-o", htmlPath, "--pdf", pdfPath)
	pdf, err := os.ReadFile(pdfPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(pdf, []byte("%PDF-")) {
		t.Fatalf("the PDF starts %q", pdf[:min(len(pdf), 16)])
	}
	t.Logf("PDF: %d bytes", len(pdf))
}
