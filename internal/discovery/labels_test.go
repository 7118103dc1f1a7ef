package discovery

import (
	"net/netip"
	"testing"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
)

func TestWorkloadLabels(t *testing.T) {
	m := newModel(t)
	m.SetResources(&localconfig.Resources{Workloads: []v1alpha1.Workload{
		staticWorkload("shop", "db", "db", "10.0.0.9:15008", map[string]string{"app": "db"}),
	}})
	unregister := mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web", Labels: map[string]string{"app": "web", "track": "canary"},
		TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")})

	for _, tc := range []struct {
		ns, sa, name string
		want         map[string]string
		ok           bool
	}{
		{"shop", "web", "web", map[string]string{"app": "web", "track": "canary"}, true},
		{"shop", "db", "db", map[string]string{"app": "db"}, true},
		{"shop", "other", "web", nil, false}, // another service account
		{"shop", "web", "nope", nil, false},
	} {
		got, ok := m.WorkloadLabels(wid(tc.ns, tc.sa), tc.name)
		if ok != tc.ok || len(got) != len(tc.want) {
			t.Fatalf("WorkloadLabels(%s/%s, %s) = %v, %v; want %v, %v", tc.ns, tc.sa, tc.name, got, ok, tc.want, tc.ok)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Fatalf("WorkloadLabels(%s/%s, %s)[%s] = %q, want %q", tc.ns, tc.sa, tc.name, k, got[k], v)
			}
		}
	}
	// The answer is a copy.
	got, _ := m.WorkloadLabels(wid("shop", "web"), "web")
	got["app"] = "changed"
	if again, _ := m.WorkloadLabels(wid("shop", "web"), "web"); again["app"] != "web" {
		t.Fatalf("changing the answer changed the model: app=%q", again["app"])
	}
	unregister()
	if _, ok := m.WorkloadLabels(wid("shop", "web"), "web"); ok {
		t.Fatal("labels of a workload that left are still known")
	}
}
