package discovery

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func TestTransparentConfigListsEveryService(t *testing.T) {
	m, err := New(Config{TrustDomain: td, Egress: meshv1.EgressMode_EGRESS_MESH_ONLY})
	if err != nil {
		t.Fatal(err)
	}
	web := map[string]string{"app": "web"}
	orders := service("shop", "orders", map[string]string{"app": "orders"}, nil, port{port: 80, targetPort: 8080, protocol: v1alpha1.ProtocolAuto})
	orders.Spec.Addresses = []string{"10.96.0.10"}
	db := service("data", "db", map[string]string{"app": "db"}, nil, port{port: 5432, protocol: v1alpha1.ProtocolTCP})
	m.SetResources(&localconfig.Resources{
		Services: []v1alpha1.Service{orders, db, service("shop", "web", web, nil, port{port: 80})},
		Workloads: []v1alpha1.Workload{{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindWorkload},
			ObjectMeta: metav1.ObjectMeta{Namespace: "data", Name: "db-0", Labels: map[string]string{"app": "db"}},
			Spec:       v1alpha1.WorkloadSpec{ServiceAccount: "db", TunnelAddress: "db-0.data.example:15008", Address: "10.1.0.5"},
		}},
	})
	mustRegister(t, m, Registration{ID: wid("shop", "orders"), Name: "orders-1", Labels: map[string]string{"app": "orders"}, TunnelAddress: "10.0.0.2:15008", PeerIP: netip.MustParseAddr("10.0.0.2")})
	mustRegister(t, m, Registration{ID: wid("shop", "orders"), Name: "orders-2", Labels: map[string]string{"app": "orders"}, TunnelAddress: "orders-2.example:15008"})

	cfg := m.TransparentConfigFor(wid("shop", "web"), "web-1")
	want := []*meshv1.Service{
		{
			Name: "db", Namespace: "data",
			Ports:     []*meshv1.ServicePort{{Port: 5432, TargetPort: 5432, Protocol: meshv1.Protocol_PROTOCOL_TCP}},
			Endpoints: []*meshv1.Endpoint{{Address: "db-0.data.example:15008", SpiffeId: "spiffe://example.org/ns/data/sa/db", Workload: "db-0", Ip: "10.1.0.5"}},
		},
		{
			Name: "orders", Namespace: "shop", Addresses: []string{"10.96.0.10"},
			Ports: []*meshv1.ServicePort{{Port: 80, TargetPort: 8080, Protocol: meshv1.Protocol_PROTOCOL_AUTO}},
			Endpoints: []*meshv1.Endpoint{
				{Address: "10.0.0.2:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/orders", Workload: "orders-1", Ip: "10.0.0.2"},
				// A DNS tunnel address and no declared address: no IP to map.
				{Address: "orders-2.example:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/orders", Workload: "orders-2"},
			},
		},
		{Name: "web", Namespace: "shop", Ports: []*meshv1.ServicePort{{Port: 80, TargetPort: 80, Protocol: meshv1.Protocol_PROTOCOL_AUTO}}},
	}
	if diff := cmp.Diff(want, cfg.GetServices(), cmpOpts...); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	if got := cfg.GetSettings().GetEgress(); got != meshv1.EgressMode_EGRESS_MESH_ONLY {
		t.Errorf("egress = %v, want mesh-only", got)
	}
	// A proxy naming its upstreams is not told the egress mode: it has no
	// interception to apply it to.
	if got := m.ConfigFor(wid("shop", "web"), "web-1", []string{"orders"}).GetSettings().GetEgress(); got != meshv1.EgressMode_EGRESS_ALLOW_ANY {
		t.Errorf("egress of an explicit proxy = %v, want the zero value", got)
	}
}

func TestLeaveRemovesEndpointButKeepsOwnConfig(t *testing.T) {
	m := newModel(t)
	web := map[string]string{"app": "web"}
	m.SetResources(&localconfig.Resources{Services: []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80})}})
	unregister := mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")})
	mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-2", Labels: web, TunnelAddress: "10.0.0.2:15008", PeerIP: netip.MustParseAddr("10.0.0.2")})

	endpoints := func() []string {
		var out []string
		for _, e := range m.ConfigFor(wid("shop", "client"), "c", []string{"web"}).GetServices()[0].GetEndpoints() {
			out = append(out, e.GetWorkload())
		}
		return out
	}
	if diff := cmp.Diff([]string{"web-1", "web-2"}, endpoints()); diff != "" {
		t.Fatalf("endpoints before Leave (-want +got):\n%s", diff)
	}
	changed := m.Changed()
	// Only the exact registration leaves: another identity, name or tunnel
	// address matches nothing; nor does a sibling replica of the same
	// identity connecting from elsewhere.
	for _, tc := range []struct{ sa, name, addr, peer string }{
		{"other", "web-1", "10.0.0.1:15008", "10.0.0.1"},
		{"web", "web-3", "10.0.0.1:15008", "10.0.0.1"},
		{"web", "web-1", "10.0.0.9:15008", "10.0.0.1"},
		{"web", "web-1", "10.0.0.1:15008", "10.0.0.2"},
	} {
		if m.Leave(wid("shop", tc.sa), tc.name, tc.addr, netip.MustParseAddr(tc.peer)) {
			t.Errorf("Leave(%v) matched a registration", tc)
		}
	}
	if diff := cmp.Diff([]string{"web-1", "web-2"}, endpoints()); diff != "" {
		t.Fatalf("endpoints after refused Leaves (-want +got):\n%s", diff)
	}
	if !m.Leave(wid("shop", "web"), "web-1", "10.0.0.1:15008", netip.MustParseAddr("10.0.0.1")) {
		t.Fatal("Leave of a live registration matched nothing")
	}
	select {
	case <-changed:
	default:
		t.Error("Leave did not signal a change")
	}
	if diff := cmp.Diff([]string{"web-2"}, endpoints()); diff != "" {
		t.Errorf("endpoints after Leave (-want +got):\n%s", diff)
	}
	// The leaving proxy still serves what is in flight: its inbound ports
	// stay.
	if got := m.ConfigFor(wid("shop", "web"), "web-1", nil).GetInbound(); len(got) != 1 {
		t.Errorf("inbound of the leaving workload = %v, want its port kept", got)
	}
	unregister()
	if m.Leave(wid("shop", "web"), "web-1", "10.0.0.1:15008", netip.MustParseAddr("10.0.0.1")) {
		t.Error("Leave matched a registration that ended")
	}
}

func TestValidateWorkloadAddress(t *testing.T) {
	for _, a := range []string{"10.0.0.7", "fd00::7"} {
		if err := ValidateWorkload("web-1", nil, "10.0.0.7:15008", a); err != nil {
			t.Errorf("address %q: %v", a, err)
		}
	}
	for _, a := range []string{"10.0.0.7:80", "web", "0.0.0.0", "ff02::1", "fe80::1%eth0"} {
		if err := ValidateWorkload("web-1", nil, "10.0.0.7:15008", a); err == nil {
			t.Errorf("address %q accepted", a)
		}
	}
}

// TestAddressesAreProvenOrDropped: a registered workload's address counts
// only when its proxy connects from it, and an IP that is also a service
// address, or that two identities claim, maps to nobody.
func TestAddressesAreProvenOrDropped(t *testing.T) {
	m := newModel(t)
	pay := service("bank", "payments", map[string]string{"app": "payments"}, nil, port{port: 443, protocol: v1alpha1.ProtocolTCP})
	pay.Spec.Addresses = []string{"10.96.0.50"}
	evil := service("aaa", "evil", map[string]string{"app": "evil"}, nil, port{port: 443, protocol: v1alpha1.ProtocolTCP})
	m.SetResources(&localconfig.Resources{Services: []v1alpha1.Service{pay, evil}})
	reg := func(ns, sa, name, tunnel, addr, peer string) {
		t.Helper()
		r := Registration{ID: wid(ns, sa), Name: name, Labels: map[string]string{"app": sa}, TunnelAddress: tunnel, Address: addr}
		if peer != "" {
			r.PeerIP = netip.MustParseAddr(peer)
		}
		mustRegister(t, m, r)
	}
	// Claims a service's address, from its own address: proven, yet
	// ambiguous with the service address.
	reg("aaa", "evil", "evil-1", "10.0.0.66:15008", "10.96.0.50", "10.96.0.50")
	// Claims an address it does not connect from: not believed.
	reg("aaa", "evil", "evil-2", "10.0.0.67:15008", "8.8.8.8", "10.0.0.67")
	// Two identities claim one IP: neither gets it.
	reg("aaa", "evil", "evil-3", "10.0.0.70:15008", "", "10.0.0.70")
	reg("bank", "payments", "payments-1", "10.0.0.70:15008", "", "10.0.0.70")
	// Proven and unique: kept.
	reg("bank", "payments", "payments-2", "10.0.0.71:15008", "", "10.0.0.71")

	ips := map[string]string{}
	for _, s := range m.TransparentConfigFor(wid("shop", "client"), "c").GetServices() {
		for _, e := range s.GetEndpoints() {
			ips[e.GetWorkload()] = e.GetIp()
		}
	}
	want := map[string]string{"evil-1": "", "evil-2": "", "evil-3": "", "payments-1": "", "payments-2": "10.0.0.71"}
	if diff := cmp.Diff(want, ips); diff != "" {
		t.Errorf("endpoint IPs (-want +got):\n%s", diff)
	}
}

func TestLoopbackIsNoWorkloadAddress(t *testing.T) {
	for _, tc := range []struct{ address, tunnel, want string }{
		{"", "127.0.0.1:15008", ""},
		{"", "127.1.2.3:15008", ""},
		{"", "[::1]:15008", ""},
		{"", "0.0.0.0:15008", ""},
		{"", "web-1.example:15008", ""},
		{"", "10.0.0.7:15008", "10.0.0.7"},
		{"", "[::ffff:10.0.0.7]:15008", "10.0.0.7"},
		{"10.0.0.8", "127.0.0.1:15008", "10.0.0.8"},
		{"127.0.0.1", "10.0.0.7:15008", ""},
	} {
		if got := workloadAddress(tc.address, tc.tunnel); got != tc.want {
			t.Errorf("workloadAddress(%q, %q) = %q, want %q", tc.address, tc.tunnel, got, tc.want)
		}
	}
}
