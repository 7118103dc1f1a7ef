package e2e

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// h2specAllowed lists h2spec cases the proxy may fail although Go's own
// server passes them, each with the reason. It is empty: the proxy fails
// nothing that net/http passes. docs/conformance.md records the last run.
var h2specAllowed = map[string]string{}

// TestH2Spec runs the HTTP/2 conformance suite against the proxy's
// app-facing HTTP/2 (h2c prior knowledge, as gRPC clients speak it) and,
// as the baseline, against Go's own net/http server on the same machine.
// The proxy must fail nothing the baseline passes.
func TestH2Spec(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	h2spec := findTool(t, "h2spec")

	// The app: Go's h2c server, also the baseline.
	app := listen(t)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: &protos,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, "ok")
		}),
	}
	go srv.Serve(app)
	t.Cleanup(func() { srv.Close() })

	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: h2, namespace: %s}
spec:
  selector: {app: h2}
  ports: [{port: 80, targetPort: %d, protocol: HTTP2}]
`, ns, port(app)))
	m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "h2"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"h2"}}, true)
	eventually(t, 10*time.Second, func() error {
		code, _, err := get(client.UpstreamAddr(0), "/", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})

	baseline := runH2Spec(t, h2spec, app.Addr().String())
	proxied := runH2Spec(t, h2spec, client.UpstreamAddr(0))
	t.Logf("h2spec: net/http fails %d of %d: %v", len(baseline.failed), baseline.total, baseline.failed)
	t.Logf("h2spec: rampart-proxy fails %d of %d: %v", len(proxied.failed), proxied.total, proxied.failed)
	if proxied.total < 140 || proxied.total != baseline.total {
		t.Fatalf("h2spec ran %d cases against the proxy and %d against net/http: want the whole suite (145) twice", proxied.total, baseline.total)
	}
	for _, f := range proxied.failed {
		if slices.Contains(baseline.failed, f) {
			continue
		}
		if why, ok := h2specAllowed[f]; ok {
			t.Logf("allowed failure %s: %s", f, why)
			continue
		}
		t.Errorf("the proxy fails %s, which net/http passes", f)
	}
}

type h2specResult struct {
	total  int
	failed []string // "package: case"
}

func runH2Spec(t *testing.T, bin, addr string) h2specResult {
	t.Helper()
	host, p, _ := strings.Cut(addr, ":")
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	// h2spec exits non-zero when a case fails; the report says which.
	out, err := exec.Command(bin, "-h", host, "-p", p, "-o", "3", "-j", report).CombinedOutput()
	b, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("h2spec against %s wrote no report (%v): %v\n%s", addr, rerr, err, out)
	}
	var doc struct {
		Suites []struct {
			Cases []struct {
				Package string    `xml:"package,attr"`
				Name    string    `xml:"classname,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	var r h2specResult
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			r.total++
			if c.Failure != nil || c.Error != nil {
				r.failed = append(r.failed, c.Package+": "+c.Name)
			}
		}
	}
	return r
}

// findTool finds an external program in PATH or the repository's
// .cache/bin, where scripts/test-deps.sh builds it. Under `make test` as
// root (RAMPART_REQUIRE_NETNS=1) a missing tool fails the test.
func findTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p, err := filepath.Abs(filepath.Join("..", ".cache", "bin", name)); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("RAMPART_REQUIRE_NETNS") == "1" {
		t.Fatalf("%s not found: run scripts/test-deps.sh (make test does)", name)
	}
	t.Skipf("%s not found: run scripts/test-deps.sh", name)
	return ""
}
