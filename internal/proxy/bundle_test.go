package proxy

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/ca"
)

// TestPushedBundleCannotReRoot: a trust bundle pushed with a configuration
// may add a root and later drop one, but never swap every root at once,
// and never drop the root the proxy's own certificate chains to.
func TestPushedBundleCannotReRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	policy := &authz.WorkloadPolicy{Namespace: benchNS, Default: authz.DefaultAllowAuthenticated, TLS: authz.TLSPolicy{Mode: authz.TLSStrict}}
	current := p.server.bundle.Roots(p.server.id.TrustDomain())
	other, err := ca.Open(ca.Config{Dir: filepath.Join(t.TempDir(), "other"), TrustDomain: spiffeid.RequireTrustDomainFromString("bench.rampart.test")})
	if err != nil {
		t.Fatal(err)
	}
	der := func(v int) [][]byte {
		var out [][]byte
		if v&1 != 0 {
			for _, r := range current {
				out = append(out, r.Raw)
			}
		}
		if v&2 != 0 {
			for _, r := range other.Roots() {
				out = append(out, r.Raw)
			}
		}
		return out
	}
	apply := func(version string, bundle [][]byte) error {
		c := p.withPolicy(version, policy)
		c.TrustBundle = bundle
		return p.server.apply(c)
	}
	if err := apply("swap", der(2)); err == nil || rejectReason(err) != "trust_bundle" || !strings.Contains(err.Error(), "shares no root") {
		t.Fatalf("a bundle with none of the roots in force: %v, want refused (trust_bundle)", err)
	}
	if err := apply("add", der(1|2)); err != nil {
		t.Fatalf("a bundle adding a root: %v", err)
	}
	if got := len(p.server.bundle.Roots(p.server.id.TrustDomain())); got != len(current)+len(other.Roots()) {
		t.Fatalf("roots in force after adding one: %d", got)
	}
	if err := apply("drop-own", der(2)); err == nil || !strings.Contains(err.Error(), "own certificate") {
		t.Fatalf("a bundle without the root of the proxy's own certificate: %v, want refused", err)
	}
	if err := apply("drop-other", der(1)); err != nil {
		t.Fatalf("a bundle dropping the root nobody uses: %v", err)
	}
}
