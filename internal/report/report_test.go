package report

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/discovery"
	"github.com/rampart-mesh/rampart/internal/insights"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var now = time.Date(2026, 5, 4, 10, 30, 0, 0, time.UTC)

const td = "spiffe://rampart.test"

// sampleInputs is a small mesh: shop/web calls shop/orders over mTLS,
// a legacy caller reaches shop/orders in plaintext, shop/web has no
// ALLOW policy, one workload attested with a digest, one with a join
// token only, one revoked and quarantined.
func sampleInputs() Inputs {
	hour := now.Truncate(time.Hour)
	return Inputs{
		Now:         now,
		Period:      24 * time.Hour,
		TrustDomain: "rampart.test",
		Totals: []insights.EdgeTotal{
			{
				Source:      insights.Party{SPIFFEID: td + "/ns/shop/sa/web", Namespace: "shop", Workload: "web"},
				Destination: insights.Party{SPIFFEID: td + "/ns/shop/sa/orders", Namespace: "shop", Workload: "orders"},
				Service:     "shop/orders", MTLS: true, Requests: 900, Failures: 3, Denied: 12, First: hour.Add(-5 * time.Hour), Last: hour,
			},
			{
				Source:      insights.Party{IP: "10.0.0.9"},
				Destination: insights.Party{SPIFFEID: td + "/ns/shop/sa/orders", Namespace: "shop", Workload: "orders"},
				Service:     "shop/orders", MTLS: false, Requests: 100, Denied: 0, First: hour, Last: hour,
			},
			{
				Source:      insights.Party{SPIFFEID: td + "/ns/ops/sa/batch", Namespace: "ops", Workload: "batch"},
				Destination: insights.Party{SPIFFEID: td + "/ns/shop/sa/web", Namespace: "shop", Workload: "web"},
				Service:     "shop/web", MTLS: true, Requests: 50, RateLimited: 4, First: hour, Last: hour,
			},
		},
		Workloads: []discovery.WorkloadCoverage{
			{
				Namespace: "shop", Name: "web", ServiceAccount: "web", SPIFFEID: td + "/ns/shop/sa/web", Registered: true,
				Default: "allow-authenticated", DefaultSource: "built-in", TLS: "STRICT",
				Policies: []discovery.PolicyRef{{Namespace: "shop", Name: "web-callers", Action: "ALLOW", Mode: "AUDIT"}},
			},
			{
				Namespace: "shop", Name: "orders", ServiceAccount: "orders", SPIFFEID: td + "/ns/shop/sa/orders", Registered: true, Declared: true,
				Default: "allow-authenticated", DefaultSource: "built-in", TLS: "PERMISSIVE", TLSPorts: []string{"9090=STRICT"},
				Policies: []discovery.PolicyRef{{Namespace: "shop", Name: "orders-callers", Action: "ALLOW", Mode: "ENFORCE"}, {Namespace: "rampart-system", Name: "no-admin", Action: "DENY", Mode: "ENFORCE"}},
			},
			{
				Namespace: "ops", Name: "batch", ServiceAccount: "batch", SPIFFEID: td + "/ns/ops/sa/batch", Registered: true,
				Default: "deny-all", DefaultSource: "NamespacePolicy ops/default", TLS: "STRICT", Policies: []discovery.PolicyRef{},
			},
		},
		Identity: Identity{
			TrustAnchors: []Cert{{Serial: "1a", Subject: "O=Rampart,CN=root <1>", Role: "active", NotAfter: now.Add(20 * 24 * time.Hour)}},
			Issuer:       Cert{Serial: "2b", Subject: "CN=issuer", NotAfter: now.Add(5 * 24 * time.Hour)},
			Certificates: []ca.Leaf{
				{Serial: "c1", SPIFFEID: td + "/ns/shop/sa/web", NotAfter: now.Add(time.Hour)},
				{Serial: "c2", SPIFFEID: td + "/ns/shop/sa/orders", CodeDigest: "sha256:" + strings.Repeat("ab", 32), NotAfter: now.Add(2 * time.Hour)},
				{Serial: "c3", SPIFFEID: td + "/ns/ops/sa/batch", NotAfter: now.Add(3 * time.Hour)},
			},
			Warnings: []string{
				"WARNING: trust anchor 1a (active) expires in 20 days, at 2026-05-24T10:30:00Z; plan its rotation (docs/identity.md)",
				"CRITICAL: issuer 2b expires in 120h0m0s, at 2026-05-09T10:30:00Z; rotate it now (docs/identity.md)",
			},
		},
		RevokedIdentities: map[string]string{td + "/ns/ops/sa/batch": "key leaked"},
		RevokedSerials:    map[string]bool{},
		Quarantined: []Quarantined{
			{SPIFFEID: td + "/ns/ops/sa/batch", Until: now.Add(10 * time.Minute), Since: now.Add(-5 * time.Minute), Reason: "route scan", By: "0123456789abcdef"},
		},
		Events: []insights.Event{
			{
				ID: "00000000000000a1", Time: now.Add(-time.Hour), Detection: insights.RouteScan, Severity: insights.SeverityHigh,
				Source:  insights.Party{SPIFFEID: td + "/ns/ops/sa/batch", Namespace: "ops", Workload: "batch"},
				Summary: "ops/batch requested 40 distinct paths of shop/web, 95% refused <script>alert(1)</script>", Action: insights.ActionQuarantine,
			},
			{
				ID: "00000000000000a2", Time: now.Add(-2 * time.Hour), Detection: insights.NewEdge, Severity: insights.SeverityMedium,
				Source:  insights.Party{SPIFFEID: td + "/ns/ops/sa/batch", Namespace: "ops", Workload: "batch"},
				Summary: "ops/batch called shop/web for the first time", Action: insights.ActionAlert,
			},
			{ // before the period: not counted
				ID: "00000000000000a0", Time: now.Add(-25 * time.Hour), Detection: insights.NewEdge, Severity: insights.SeverityMedium,
				Source: insights.Party{SPIFFEID: td + "/ns/ops/sa/batch"}, Summary: "old", Action: insights.ActionAlert,
			},
		},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/report -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; go test ./internal/report -update rewrites it):\n%s", name, diff)
	}
}

func TestGolden(t *testing.T) {
	r, err := Assemble(sampleInputs())
	if err != nil {
		t.Fatal(err)
	}
	var js, html bytes.Buffer
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	if err := WriteHTML(&html, r); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.json", js.Bytes())
	golden(t, "report.html", html.Bytes())
}

func TestFigures(t *testing.T) {
	r, err := Assemble(sampleInputs())
	if err != nil {
		t.Fatal(err)
	}
	s := r.Summary
	if s.Requests != 1050 || s.MTLSRequests != 950 || s.MTLSShare == nil || *s.MTLSShare != 950.0/1050 {
		t.Errorf("requests %d, mTLS %d, share %v; want 1050, 950, %v", s.Requests, s.MTLSRequests, s.MTLSShare, 950.0/1050)
	}
	if s.PlaintextEdges != 1 || r.Encryption.PlaintextEdges[0].Source != "10.0.0.9 (outside the mesh)" || r.Encryption.PlaintextEdges[0].Requests != 100 {
		t.Errorf("plaintext edges %+v", r.Encryption.PlaintextEdges)
	}
	// shop/web: its ALLOW policy is in AUDIT mode, allow-authenticated; ops/batch is deny-all.
	if diff := cmp.Diff([]string{"shop/web"}, r.Coverage.WorkloadsWithoutPolicy); diff != "" {
		t.Errorf("workloads without policy (-want +got):\n%s", diff)
	}
	if len(r.Coverage.EdgesWithoutPolicy) != 1 || r.Coverage.EdgesWithoutPolicy[0].Destination != "shop/web" {
		t.Errorf("edges without policy %+v, want the one to shop/web", r.Coverage.EdgesWithoutPolicy)
	}
	if r.Denials.Denied != 12 || r.Denials.RateLimited != 4 || len(r.Denials.ByDestination) != 2 || r.Denials.ByDestination[0].Destination != "shop/orders" {
		t.Errorf("denials %+v", r.Denials)
	}
	if r.Detections.Total != 2 || len(r.Detections.Recent) != 2 || r.Detections.Recent[0].ID != "00000000000000a1" {
		t.Errorf("detections %+v", r.Detections)
	}
	status := map[string]string{}
	for _, w := range r.Attestation.Workloads {
		status[w.Namespace+"/"+w.Workload] = fmt.Sprintf("%s revoked=%v quarantined=%v", w.Status, w.Revoked, w.Quarantined)
	}
	want := map[string]string{
		"shop/web":    "join token only revoked=false quarantined=false",
		"shop/orders": "attested revoked=false quarantined=false",
		"ops/batch":   "no certificate in use revoked=true quarantined=true",
	}
	if diff := cmp.Diff(want, status); diff != "" {
		t.Errorf("attestation (-want +got):\n%s", diff)
	}
	if r.Identity.Issuer.DaysLeft != 5 || r.Identity.TrustAnchors[0].DaysLeft != 20 {
		t.Errorf("days left: issuer %d, anchor %d; want 5, 20", r.Identity.Issuer.DaysLeft, r.Identity.TrustAnchors[0].DaysLeft)
	}
	var sev []insights.Severity
	for _, f := range s.Findings {
		sev = append(sev, f.Severity)
	}
	wantSev := []insights.Severity{"critical", "high", "high", "medium", "medium", "medium", "low"}
	if diff := cmp.Diff(wantSev, sev); diff != "" {
		t.Errorf("finding severities (-want +got):\n%s", diff)
	}
}

func TestRecentEventsAreBounded(t *testing.T) {
	in := sampleInputs()
	in.Events = nil
	for i := range RecentEvents + 7 {
		in.Events = append(in.Events, insights.Event{
			ID: fmt.Sprintf("%016x", i), Time: now.Add(-time.Duration(i) * time.Minute),
			Detection: insights.DenialBurst, Severity: insights.SeverityLow,
		})
	}
	r, err := Assemble(in)
	if err != nil {
		t.Fatal(err)
	}
	if r.Detections.Total != RecentEvents+7 || len(r.Detections.Recent) != RecentEvents {
		t.Fatalf("total %d, listed %d; want %d, %d", r.Detections.Total, len(r.Detections.Recent), RecentEvents+7, RecentEvents)
	}
	if r.Detections.Recent[0].ID != fmt.Sprintf("%016x", 0) || r.Detections.Recent[RecentEvents-1].ID != fmt.Sprintf("%016x", RecentEvents-1) {
		t.Errorf("not the most recent first: %s .. %s", r.Detections.Recent[0].ID, r.Detections.Recent[RecentEvents-1].ID)
	}
}

func TestNoTraffic(t *testing.T) {
	r, err := Assemble(Inputs{Now: now, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r.Summary.MTLSShare != nil || len(r.Summary.Findings) != 1 || r.Summary.Findings[0].What != "No traffic was recorded in the period." {
		t.Errorf("summary %+v", r.Summary)
	}
	if r.Attestation.QuarantineKnown {
		t.Error("quarantine column without quarantine input")
	}
	var html bytes.Buffer
	if err := WriteHTML(&html, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html.String(), "Quarantine status is not available") {
		t.Error("HTML does not say quarantine status is missing")
	}
	b, _ := json.Marshal(r)
	if !strings.Contains(string(b), `"mtlsShare":null`) {
		t.Errorf("mtlsShare is not null without traffic: %s", b)
	}
}

func TestHTMLIsSelfContainedAndEscaped(t *testing.T) {
	r, err := Assemble(sampleInputs())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	h := b.String()
	for _, bad := range []string{"<script", "src=", "href=", "@import", "url("} {
		if strings.Contains(h, bad) {
			t.Errorf("HTML contains %q", bad)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "O=Rampart,CN=root &lt;1&gt;", "90.48%", "@media print"} {
		if !strings.Contains(h, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
}

func TestParsePeriod(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"", 24 * time.Hour, ""},
		{"1h", time.Hour, ""},
		{"36h", 36 * time.Hour, ""},
		{"7d", 7 * 24 * time.Hour, ""},
		{"168h", 168 * time.Hour, ""},
		{"30m", 0, "want 1h to 7d"},
		{"90m", 0, "whole hours"},
		{"8d", 0, "want 1h to 7d"},
		{"169h", 0, "want 1h to 7d"},
		{"0d", 0, "want 1h to 7d"},
		{"d", 0, "want hours"},
		{"1.5d", 0, "want hours"},
		{"yesterday", 0, "want hours"},
		{"-1h", 0, "want 1h to 7d"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePeriod(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParsePeriod(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParsePeriod(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestFindChromium(t *testing.T) {
	if _, err := FindChromium(filepath.Join(t.TempDir(), "no-such-browser")); err == nil {
		t.Error("a missing --chromium was accepted")
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := FindChromium(""); err != ErrNoChromium || !strings.Contains(err.Error(), "install the chromium package") {
		t.Errorf("without a browser: %v; want ErrNoChromium saying what to install", err)
	}
}

func FuzzParsePeriod(f *testing.F) {
	for _, s := range []string{"", "1h", "7d", "24h", "90m", "1e3h", "0x1d", "+1d", "168h0m0s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParsePeriod(s)
		if err != nil {
			return
		}
		if d < MinPeriod || d > MaxPeriod || d%time.Hour != 0 {
			t.Fatalf("ParsePeriod(%q) = %v, outside 1h..7d or not whole hours", s, d)
		}
	})
}
