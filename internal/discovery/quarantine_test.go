package discovery

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// TestQuarantineReachesEveryProxy: the quarantine list set on the model
// travels in every proxy's configuration, changes its version, and wakes
// the watchers.
func TestQuarantineReachesEveryProxy(t *testing.T) {
	m := newModel(t)
	m.SetResources(&localconfig.Resources{Services: []v1alpha1.Service{service("shop", "web", map[string]string{"app": "web"}, nil, port{port: 80})}})
	client, other := wid("shop", "client"), wid("shop", "other")
	before := m.ConfigFor(client, "client", []string{"web"})

	changed := m.Changed()
	q := &meshv1.Quarantine{Identities: []*meshv1.QuarantinedIdentity{{
		SpiffeId: wid("shop", "intruder").String(),
		Until:    timestamppb.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)),
		Reason:   "scanning",
	}}}
	m.SetQuarantine(q)
	select {
	case <-changed:
	default:
		t.Fatal("SetQuarantine did not signal a change")
	}
	for _, cfg := range []*meshv1.ProxyConfig{m.ConfigFor(client, "client", []string{"web"}), m.ConfigFor(other, "other", nil)} {
		if cfg.GetQuarantine() != q {
			t.Errorf("configuration of %s does not carry the quarantine list", cfg.GetSpiffeId())
		}
	}
	with := m.ConfigFor(client, "client", []string{"web"})
	if with.GetVersion() == before.GetVersion() {
		t.Error("a new quarantine list kept the version")
	}
	if got := Version(with); got != with.GetVersion() {
		t.Errorf("Version(cfg) = %q, cfg.version = %q", got, with.GetVersion())
	}
	m.SetQuarantine(nil)
	if v := m.ConfigFor(client, "client", []string{"web"}); v.GetVersion() != before.GetVersion() || v.GetQuarantine() != nil {
		t.Errorf("after release: version %q, quarantine %v; want %q and none", v.GetVersion(), v.GetQuarantine(), before.GetVersion())
	}
}
