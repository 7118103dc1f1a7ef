package controller

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/report"
	"github.com/rampart-mesh/rampart/internal/revocation"
)

func TestReportAPI(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), `apiVersion: rampart.dev/v1alpha1
kind: Workload
metadata: {name: orders-1, namespace: shop, labels: {app: orders}}
spec: {serviceAccount: orders, tunnelAddress: "127.0.0.1:15008"}
---
apiVersion: rampart.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {serviceAccount: web, tunnelAddress: "127.0.0.2:15008"}
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://rampart.local/ns/shop/sa/web"]}]
`)
	c, err := New(Config{StateDir: t.TempDir(), ConfigDir: dir, AdminListen: "off"})
	if err != nil {
		t.Fatal(err)
	}
	web := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/web")
	if err := c.quarantineIdentity(web, time.Now().Add(time.Hour), "route scan 0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	orders := spiffeid.RequireFromString("spiffe://rampart.local/ns/shop/sa/orders")
	revokedAt := time.Now().UTC().Truncate(time.Second)
	if _, err := revocation.Update(c.RevocationsPath(), revokedAt, 0, func(l *revocation.List) error {
		return l.RevokeIdentity(revocation.Identity{SPIFFEID: orders.String(), RevokedAt: revokedAt, Reason: "key leaked"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.reloadRevocations(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.adminHandler())
	t.Cleanup(srv.Close)
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", path, ct)
		}
		return resp.StatusCode, body
	}

	code, body := get("/api/v1/report?since=7d")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/report: %d %s", code, body)
	}
	var r report.Report
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if r.Version != report.Version || r.Period.Duration != "7d" || r.TrustDomain != "rampart.local" {
		t.Errorf("version %d, period %q, trust domain %q", r.Version, r.Period.Duration, r.TrustDomain)
	}
	if len(r.Coverage.Workloads) != 2 {
		t.Fatalf("workloads %+v, want orders-1 and web-1", r.Coverage.Workloads)
	}
	if got := r.Coverage.WorkloadsWithoutPolicy; len(got) != 1 || got[0] != "shop/web-1" {
		t.Errorf("workloads without policy %v, want [shop/web-1]", got)
	}
	st := c.IdentityStatus()
	if len(r.Identity.TrustAnchors) != len(st.TrustAnchors) || r.Identity.Issuer.Serial != st.Issuer.Serial || r.Identity.Issuer.Serial == "" {
		t.Errorf("identity %+v, want what /identity answers: %+v", r.Identity, st)
	}
	if !r.Attestation.QuarantineKnown {
		t.Error("quarantine column missing")
	}
	for _, w := range r.Attestation.Workloads {
		if want := w.Workload == "web-1"; w.Quarantined != want {
			t.Errorf("%s: quarantined %v, want %v", w.Workload, w.Quarantined, want)
		}
		if want := w.Workload == "orders-1"; w.Revoked != want || want && w.RevokedReason != "key leaked" {
			t.Errorf("%s: revoked %v (%q), want %v", w.Workload, w.Revoked, w.RevokedReason, want)
		}
		if w.Status != report.StatusNoCertificate {
			t.Errorf("%s: status %q, want %q (no proxy connected)", w.Workload, w.Status, report.StatusNoCertificate)
		}
	}

	for _, tc := range []struct{ query, want string }{
		{"since=30m", "want 1h to 7d"},
		{"since=8d", "want 1h to 7d"},
		{"since=90m", "whole hours"},
		{"since=soon", "want hours (24h) or days (7d)"},
		{"since=1h&since=2h", "more than once"},
		{"window=1h", "unknown query parameter window"},
	} {
		code, body := get("/api/v1/report?" + tc.query)
		if code != http.StatusBadRequest || !strings.Contains(string(body), tc.want) {
			t.Errorf("?%s: %d %s; want 400 with %q", tc.query, code, body, tc.want)
		}
	}
	if n := testutil.ToFloat64(c.trafficAPIRefused().WithLabelValues("report", "400")); n != 6 {
		t.Errorf("refused reports counted %v, want 6", n)
	}
}
