package telemetry

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// TestDocumentedReport builds, from the traffic docs/insights.md describes
// in "What proxies report and enforce", the report a proxy sends, and
// compares it with the one the page shows.
func TestDocumentedReport(t *testing.T) {
	page, err := os.ReadFile("../../../docs/insights.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(page), "\n## What proxies report and enforce\n")
	if !ok {
		t.Fatal("docs/insights.md has no section \"What proxies report and enforce\"")
	}
	_, block, ok := strings.Cut(section, "```json\n")
	if !ok {
		t.Fatal("the section has no JSON example")
	}
	block, _, _ = strings.Cut(block, "```")
	documented := &meshv1.TelemetryReport{}
	if err := protojson.Unmarshal([]byte(block), documented); err != nil {
		t.Fatalf("the documented report does not parse as a TelemetryReport: %v", err)
	}

	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	a := NewAggregator(start)
	e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_INBOUND, PeerIdentity: "spiffe://example.org/ns/shop/sa/web",
		Service: "shop/orders", MTLS: true})
	for _, path := range []string{"/api/v1/orders/7", "/api/v1/orders", "/api/v1/orders/8/items"} {
		e.Request(Request{Method: "GET", Path: path, Status: 200, Seconds: -1})
	}
	rogue := Security{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_UNKNOWN_CA, PeerIP: "10.0.0.9",
		PresentedID: "spiffe://example.org/ns/shop/sa/web", Serial: "7b2e91", Issuer: "CN=rogue CA,O=Example", Port: 15008}
	a.Security(rogue)
	a.Security(rogue)
	a.Security(Security{Kind: meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT, PeerIP: "10.0.0.7", Port: 8080})
	got := a.Collect("orders-1", start.Add(5*time.Second), 0)
	for _, s := range got.GetEdges() {
		s.Latency = nil // no latency measured: the page leaves the sketch out
	}
	if diff := cmp.Diff(documented, got, protocmp.Transform()); diff != "" {
		t.Fatalf("docs/insights.md shows another report than the proxy sends (-documented +sent):\n%s", diff)
	}
}
