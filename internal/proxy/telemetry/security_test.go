package telemetry

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/testing/protocmp"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func TestCutPathSaysWhenItCut(t *testing.T) {
	long := "/" + strings.Repeat("a", 200)
	for _, tc := range []struct {
		in, want  string
		truncated bool
	}{
		{"/api/v1/orders/7", "/api/v1/orders", true},
		{"/api/v1/orders", "/api/v1/orders", false},
		{"/api/v1/orders?x=/a/b/c", "/api/v1/orders", false}, // the query is not the path
		{"/api/v1/orders#a/b", "/api/v1/orders", false},
		{"/a/b/c/", "/a/b/c", true},
		{"/a/b", "/a/b", false},
		{"/", "/", false},
		{"", "", false},
		{"*", "*", false},
		{"http://evil.example/a", "/", true},
		{long, long[:MaxPathBytes], true},
		{"/" + strings.Repeat("\xffa", 60), "/" + strings.Repeat("\uFFFDa", 31) + "\uFFFD", true}, // longer once made valid
	} {
		got, truncated := CutPath(tc.in)
		if got != tc.want || truncated != tc.truncated {
			t.Errorf("CutPath(%q) = %q, %v; want %q, %v", tc.in, got, truncated, tc.want, tc.truncated)
		}
		if p := PathPrefix(tc.in); p != got {
			t.Errorf("PathPrefix(%q) = %q, CutPath gave %q", tc.in, p, got)
		}
	}
}

func TestRequestCountsAreKeyedByTruncation(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_INBOUND, PeerIdentity: "spiffe://td/ns/a/sa/b", MTLS: true})
	e.Request(Request{Method: "GET", Path: "/api/v1/orders", Status: 200, Seconds: -1})
	e.Request(Request{Method: "GET", Path: "/api/v1/orders?page=2", Status: 200, Seconds: -1})
	e.Request(Request{Method: "GET", Path: "/api/v1/orders/7", Status: 200, Seconds: -1})
	e.Request(Request{Method: "GET", Path: "/api/v1/orders/8/items", Status: 200, Seconds: -1})
	e.Request(Request{Method: "GET", Path: "/api/v1/orders/9", Status: 200, Seconds: -1})
	got := a.Collect("w", time.Unix(5, 0), 0).GetEdges()[0].GetRequestCounts()
	want := []*meshv1.EdgeSummary_RequestCount{
		{Method: "GET", Path: "/api/v1/orders", StatusClass: 2, Count: 3, Truncated: true},
		{Method: "GET", Path: "/api/v1/orders", StatusClass: 2, Count: 2},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("request counts (-want +got):\n%s", diff)
	}
}

func TestSecurityCountsAreKeyedAndReset(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	unknown := Security{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_UNKNOWN_CA, PeerIP: "10.0.0.9",
		PresentedID: "spiffe://evil.example/ns/x/sa/y", Serial: "1f", Issuer: "CN=evil", Port: 15008}
	a.Security(unknown)
	a.Security(unknown)
	other := unknown
	other.Issuer = "CN=other" // not part of the key: the first one is kept
	a.Security(other)
	plain := Security{Kind: meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT, PeerIP: "10.0.0.7", Port: 8080}
	a.Security(plain)
	a.Security(Security{}) // no kind: not counted

	rep := a.Collect("w", time.Unix(5, 0), 0)
	want := []*meshv1.SecurityCount{
		{Kind: unknown.Kind, PeerIp: "10.0.0.9", PresentedSpiffeId: unknown.PresentedID, PresentedSerial: "1f",
			PresentedIssuer: "CN=evil", Port: 15008, Count: 3},
		{Kind: plain.Kind, PeerIp: "10.0.0.7", Port: 8080, Count: 1},
	}
	if diff := cmp.Diff(want, rep.GetSecurity(), protocmp.Transform()); diff != "" {
		t.Fatalf("security counts (-want +got):\n%s", diff)
	}
	if len(rep.GetEdges()) != 0 || rep.GetSecurityOverflow() != 0 {
		t.Fatalf("edges %d, overflow %d; want none", len(rep.GetEdges()), rep.GetSecurityOverflow())
	}
	if rep := a.Collect("w", time.Unix(10, 0), 0); len(rep.GetSecurity()) != 0 {
		t.Fatalf("the next interval carries %d security counts, want none", len(rep.GetSecurity()))
	}
}

func TestSecurityCountsAreBounded(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	for i := range MaxSecurityCounts + 10 {
		a.Security(Security{Kind: meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT, PeerIP: fmt.Sprintf("10.0.1.%d", i), Port: 80})
	}
	// A key already counted is counted, even past the bound.
	a.Security(Security{Kind: meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT, PeerIP: "10.0.1.0", Port: 80})
	rep := a.Collect("w", time.Unix(5, 0), 0)
	if len(rep.GetSecurity()) != MaxSecurityCounts || rep.GetSecurityOverflow() != 10 {
		t.Fatalf("%d security counts, overflow %d; want %d, 10", len(rep.GetSecurity()), rep.GetSecurityOverflow(), MaxSecurityCounts)
	}
	if top := rep.GetSecurity()[0]; top.GetPeerIp() != "10.0.1.0" || top.GetCount() != 2 {
		t.Fatalf("most frequent first: got %v", top)
	}
}

func TestReporterQueuesAReportWithSecurityCountsOnly(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	r, err := NewReporter(ReporterConfig{Aggregator: a, Conn: func() grpc.ClientConnInterface { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	r.Tick()
	if r.Queued() != 0 {
		t.Fatalf("an empty interval queued a report")
	}
	a.Security(Security{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, PeerIP: "10.0.0.1", Port: 15008})
	r.Tick()
	if r.Queued() != 1 {
		t.Fatalf("%d reports queued after a refusal, want 1", r.Queued())
	}
}
