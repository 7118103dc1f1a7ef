package discovery

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func revocationList(n int) *meshv1.Revocations {
	r := &meshv1.Revocations{}
	at := timestamppb.New(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	for i := range n {
		r.Identities = append(r.Identities, &meshv1.RevokedIdentity{SpiffeId: fmt.Sprintf("spiffe://example.org/ns/shop/sa/w%d", i), RevokedAt: at})
	}
	return r
}

// TestVersionWithRevocations: the revocation list, hashed once by
// SetRevocations, counts in every configuration's version as if hashed
// with it.
func TestVersionWithRevocations(t *testing.T) {
	m := newModel(t)
	m.SetResources(&localconfig.Resources{Services: []v1alpha1.Service{service("shop", "web", map[string]string{"app": "web"}, nil, port{port: 80})}})
	self := wid("shop", "client")
	before := m.ConfigFor(self, "client", []string{"web"})

	r := revocationList(3)
	m.SetRevocations(r)
	with := m.ConfigFor(self, "client", []string{"web"})
	if with.GetRevocations() != r {
		t.Error("the configuration does not carry the list set")
	}
	if with.GetVersion() == before.GetVersion() {
		t.Error("a new revocation list kept the version")
	}
	if got := Version(with); got != with.GetVersion() {
		t.Errorf("Version(cfg) = %q, cfg.version = %q", got, with.GetVersion())
	}
	m.SetRevocations(revocationList(3))
	if v := m.ConfigFor(self, "client", []string{"web"}).GetVersion(); v != with.GetVersion() {
		t.Errorf("an equal list changed the version: %q -> %q", with.GetVersion(), v)
	}
	m.SetRevocations(revocationList(4))
	if v := m.ConfigFor(self, "client", []string{"web"}).GetVersion(); v == with.GetVersion() {
		t.Error("a longer list kept the version")
	}
	m.SetRevocations(nil)
	if v := m.ConfigFor(self, "client", []string{"web"}).GetVersion(); v != before.GetVersion() {
		t.Errorf("without a list, version = %q, want %q", v, before.GetVersion())
	}
}

// BenchmarkConfigForWithRevocations: a configuration with a full list
// (10,000 identities) costs what one without does, the list aside.
func BenchmarkConfigForWithRevocations(b *testing.B) {
	m, err := New(Config{TrustDomain: td})
	if err != nil {
		b.Fatal(err)
	}
	m.SetRevocations(revocationList(10000))
	self := wid("shop", "client")
	for b.Loop() {
		m.ConfigFor(self, "client", nil)
	}
}
