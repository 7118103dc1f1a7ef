package controlplane

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/attest"
	"github.com/rampart-mesh/rampart/internal/insights"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// fakeInsights records what the server tells it.
type fakeInsights struct {
	mu           sync.Mutex
	reports      []graph.Report
	security     []insights.SecurityObservation
	attestations []string
}

func (f *fakeInsights) ObserveReport(r graph.Report) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, r)
}

func (f *fakeInsights) ObserveSecurity(obs []insights.SecurityObservation) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.security = append(f.security, obs...)
}

func (f *fakeInsights) ObserveAttestation(id spiffeid.ID, workload, digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attestations = append(f.attestations, id.String()+" "+workload+" "+digest)
}

var _ Insights = (*fakeInsights)(nil)

// TestTelemetryFeedsInsights: accepted reports and their valid security
// counts reach Insights; bad security counts are skipped and counted,
// the rest of the report kept; a dropped report reaches nobody.
func TestTelemetryFeedsInsights(t *testing.T) {
	fake := &fakeInsights{}
	e, _ := newRevocableTelemetryEnv(t, func(c *Config) { c.Insights = fake })
	id := workloadID("shop", "web")
	cc := e.dial(t, e.svidFor(t, id))
	e.register(t, cc, "web-1")
	stream := reportStream(t, cc)

	e.clock.Add(5 * time.Second)
	r := report(e.clock.Now(), "web-1", outboundEdge(10, 1))
	good := &meshv1.SecurityCount{
		Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_UNKNOWN_CA, PeerIp: "::ffff:10.0.0.9",
		PresentedSpiffeId: "spiffe://evil.example/ns/shop/sa/web", PresentedSerial: "0a1b",
		PresentedIssuer: "CN=Evil CA", Port: 15008, Count: 3,
	}
	r.Security = []*meshv1.SecurityCount{
		good,
		{Kind: meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT, PeerIp: "10.0.0.7", Port: 8080, Count: 1},
		{Kind: 99, PeerIp: "10.0.0.9", Count: 1},
		{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, PeerIp: "nowhere", Count: 1},
		{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, PeerIp: "10.0.0.9", PresentedSpiffeId: "http://x", Count: 1},
		{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, PeerIp: "10.0.0.9", PresentedSerial: "0A1B", Count: 1},
		{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, PeerIp: "10.0.0.9", PresentedIssuer: "CN=" + strings.Repeat("x", maxIssuerLen), Count: 1},
		{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, PeerIp: "10.0.0.9", Port: 70000, Count: 1},
		{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, PeerIp: "10.0.0.9", Count: 0},
		{Kind: meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, PeerIp: "10.0.0.9", Count: 1 << 60},
		// Plaintext presents no certificate: a claimed identity on one
		// would let a proxy name anyone as the source.
		{Kind: meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT, PeerIp: "10.0.0.7", PresentedSpiffeId: "spiffe://e2e/ns/shop/sa/web", Count: 1},
	}
	for range MaxSecurityCounts {
		r.Security = append(r.Security, good)
	}
	if err := stream.Send(r); err != nil {
		t.Fatal(err)
	}
	// A report that is dropped (its interval is bad) reaches nobody.
	bad := report(e.clock.Now(), "web-1", outboundEdge(1, 0))
	bad.Interval = nil
	bad.Security = []*meshv1.SecurityCount{good}
	if err := stream.Send(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}

	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.reports) != 1 || fake.reports[0].Workload != "web-1" || fake.reports[0].ID != id || len(fake.reports[0].Edges) != 1 {
		t.Fatalf("reports observed: %+v, want the one accepted report", fake.reports)
	}
	want := insights.SecurityObservation{
		Reporter: id, Namespace: "shop", Workload: "web-1", Kind: insights.TLSUnknownCA, PeerIP: "10.0.0.9",
		PresentedID: spiffeid.RequireFromString("spiffe://evil.example/ns/shop/sa/web"), Serial: "0a1b",
		Issuer: "CN=Evil CA", Port: 15008, Count: 3,
	}
	// 11 counts before the good copies: 2 good, 9 bad; then the good
	// copies up to the bound of 64, the rest past it.
	if n := len(fake.security); n != MaxSecurityCounts-9 {
		t.Fatalf("%d security observations, want %d", n, MaxSecurityCounts-9)
	}
	if diff := cmp.Diff(want, fake.security[0], cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
		t.Errorf("first observation (-want +got):\n%s", diff)
	}
	if got := fake.security[1]; got.Kind != insights.PlaintextOnStrict || got.PeerIP != "10.0.0.7" || !got.PresentedID.IsZero() {
		t.Errorf("second observation %+v, want the plaintext one", got)
	}
	skipped := func(reason string) float64 {
		return metricValue(t, e.reg, "rampart_controller_telemetry_security_skipped_total", map[string]string{"reason": reason})
	}
	for reason, want := range map[string]float64{
		SecuritySkipBadKind: 1, SecuritySkipBadPeerIP: 1, SecuritySkipBadID: 2, SecuritySkipBadSerial: 1,
		SecuritySkipBadIssuer: 1, SecuritySkipBadPort: 1, SecuritySkipBadCount: 2, SecuritySkipTooMany: 11,
	} {
		if got := skipped(reason); got != want {
			t.Errorf("skipped for %s: %v, want %v", reason, got, want)
		}
	}
}

// TestCertifyTellsInsightsOfDigests: a certificate issued with an
// attested digest is observed with it; one without a digest is not.
func TestCertifyTellsInsightsOfDigests(t *testing.T) {
	fake := &fakeInsights{}
	self := selfDigest(t)
	web := workloadID("shop", "web")
	policies := attest.NewPolicies(td)
	if err := policies.Set([]v1alpha1.WorkloadAttestationPolicy{attestationPolicy("web", self)}); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOpts{unix: true, policies: policies, insights: fake})
	if _, err := certify(t, e.dialUnix(t, nil), web, ""); err != nil {
		t.Fatalf("Certify over the Unix socket: %v", err)
	}
	// A join token attests no code: nothing to observe.
	e.svidFor(t, workloadID("shop", "api"))
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if diff := cmp.Diff([]string{web.String() + "  " + self}, fake.attestations); diff != "" {
		t.Errorf("attestations observed (-want +got):\n%s", diff)
	}
}

func FuzzToSecurityObservation(f *testing.F) {
	f.Add(int32(1), "10.0.0.1", "spiffe://a/b", "0a", "CN=x", uint32(1), uint64(1))
	f.Add(int32(4), "::1", "", "", "", uint32(8080), uint64(9))
	f.Fuzz(func(t *testing.T, kind int32, ip, id, serial, issuer string, port uint32, count uint64) {
		sc := &meshv1.SecurityCount{Kind: meshv1.SecurityKind(kind), PeerIp: ip, PresentedSpiffeId: id,
			PresentedSerial: serial, PresentedIssuer: issuer, Port: port, Count: count}
		o, reason, err := toSecurityObservation(sc, 1000)
		if err != nil {
			if reason == "" {
				t.Fatalf("error %v without a reason", err)
			}
			return
		}
		if o.Count == 0 || o.Count > 1000 || len(o.Serial) > maxSerialLen || len(o.Issuer) > maxIssuerLen || o.Port > 65535 {
			t.Fatalf("accepted out of bounds: %+v", o)
		}
	})
}
