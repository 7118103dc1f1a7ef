package discovery

import (
	"crypto/x509"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/testing/protocmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func wid(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ns, "sa", sa)
}

type port struct {
	name       string
	port       int32
	targetPort int32
	protocol   v1alpha1.Protocol
}

func service(ns, name string, selector map[string]string, sas []string, ports ...port) v1alpha1.Service {
	s := v1alpha1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindService},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.ServiceSpec{Selector: selector, ServiceAccounts: sas},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, v1alpha1.ServicePort{Name: p.name, Port: p.port, TargetPort: p.targetPort, Protocol: p.protocol})
	}
	return s
}

func staticWorkload(ns, name, sa, addr string, labels map[string]string) v1alpha1.Workload {
	return v1alpha1.Workload{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindWorkload},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       v1alpha1.WorkloadSpec{ServiceAccount: sa, TunnelAddress: addr},
	}
}

func newModel(t *testing.T) *Model {
	t.Helper()
	m, err := New(Config{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustRegister(t *testing.T, m *Model, r Registration) func() {
	t.Helper()
	unregister, err := m.Register(r)
	if err != nil {
		t.Fatalf("Register(%+v): %v", r, err)
	}
	return unregister
}

var cmpOpts = []cmp.Option{protocmp.Transform(), cmpopts.EquateEmpty()}

func TestServiceEndpoints(t *testing.T) {
	web := map[string]string{"app": "web"}
	tests := []struct {
		name      string
		services  []v1alpha1.Service
		workloads []v1alpha1.Workload
		regs      []Registration
		self      spiffeid.ID
		upstreams []string
		want      []*meshv1.Service
	}{
		{
			name:     "labels select, other labels and namespaces do not",
			services: []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80, targetPort: 8080, protocol: v1alpha1.ProtocolHTTP})},
			regs: []Registration{
				{ID: wid("shop", "web"), Name: "web-1", Labels: map[string]string{"app": "web", "v": "1"}, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")},
				{ID: wid("shop", "web"), Name: "api-1", Labels: map[string]string{"app": "api"}, TunnelAddress: "10.0.0.2:15008", PeerIP: netip.MustParseAddr("10.0.0.2")},
				{ID: wid("other", "web"), Name: "web-2", Labels: web, TunnelAddress: "10.0.0.3:15008", PeerIP: netip.MustParseAddr("10.0.0.3")},
				{ID: wid("shop", "web"), Name: "nolabels", TunnelAddress: "10.0.0.4:15008", PeerIP: netip.MustParseAddr("10.0.0.4")},
			},
			self:      wid("shop", "client"),
			upstreams: []string{"web"},
			want: []*meshv1.Service{{
				Name: "web", Namespace: "shop",
				Ports:     []*meshv1.ServicePort{{Port: 80, TargetPort: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
				Endpoints: []*meshv1.Endpoint{{Address: "10.0.0.1:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/web", Workload: "web-1", Ip: "10.0.0.1"}},
			}},
		},
		{
			name:     "service accounts restrict, static and registered both count, sorted",
			services: []v1alpha1.Service{service("shop", "web", web, []string{"web"}, port{name: "grpc", port: 9090, protocol: v1alpha1.ProtocolGRPC})},
			workloads: []v1alpha1.Workload{
				staticWorkload("shop", "web-static", "web", "10.0.1.1:15008", web),
				staticWorkload("shop", "web-impostor", "thief", "10.0.1.2:15008", web),
			},
			regs: []Registration{
				{ID: wid("shop", "web"), Name: "web-b", Labels: web, TunnelAddress: "10.0.0.2:15008", PeerIP: netip.MustParseAddr("10.0.0.2")},
				{ID: wid("shop", "web"), Name: "web-a", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")},
				{ID: wid("shop", "thief"), Name: "web-c", Labels: web, TunnelAddress: "10.0.0.3:15008", PeerIP: netip.MustParseAddr("10.0.0.3")},
			},
			self:      wid("front", "client"),
			upstreams: []string{"web.shop"},
			want: []*meshv1.Service{{
				Name: "web", Namespace: "shop",
				Ports: []*meshv1.ServicePort{{Name: "grpc", Port: 9090, TargetPort: 9090, Protocol: meshv1.Protocol_PROTOCOL_HTTP2}},
				Endpoints: []*meshv1.Endpoint{
					{Address: "10.0.0.1:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/web", Workload: "web-a", Ip: "10.0.0.1"},
					{Address: "10.0.0.2:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/web", Workload: "web-b", Ip: "10.0.0.2"},
					{Address: "10.0.1.1:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/web", Workload: "web-static", Ip: "10.0.1.1"},
				},
			}},
		},
		{
			name:     "same registration twice is listed once",
			services: []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80, protocol: v1alpha1.ProtocolTCP})},
			regs: []Registration{
				{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")},
				{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")},
			},
			self:      wid("shop", "client"),
			upstreams: []string{"web"},
			want: []*meshv1.Service{{
				Name: "web", Namespace: "shop",
				Ports:     []*meshv1.ServicePort{{Port: 80, TargetPort: 80, Protocol: meshv1.Protocol_PROTOCOL_TCP}},
				Endpoints: []*meshv1.Endpoint{{Address: "10.0.0.1:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/web", Workload: "web-1", Ip: "10.0.0.1"}},
			}},
		},
		{
			name:      "missing upstreams are listed empty, sorted and deduplicated",
			services:  []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80})},
			self:      wid("shop", "client"),
			upstreams: []string{"nope.elsewhere", "web", "ghost", "web.shop"},
			want: []*meshv1.Service{
				{Name: "nope", Namespace: "elsewhere"},
				{Name: "ghost", Namespace: "shop"},
				{
					Name: "web", Namespace: "shop",
					Ports: []*meshv1.ServicePort{{Port: 80, TargetPort: 80, Protocol: meshv1.Protocol_PROTOCOL_AUTO}},
				},
			},
		},
		{
			name:      "no upstreams",
			services:  []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80})},
			self:      wid("shop", "client"),
			upstreams: nil,
			want:      []*meshv1.Service{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t)
			m.SetResources(&localconfig.Resources{Services: tt.services, Workloads: tt.workloads})
			for _, r := range tt.regs {
				mustRegister(t, m, r)
			}
			got := m.ConfigFor(tt.self, "client", tt.upstreams).GetServices()
			if diff := cmp.Diff(tt.want, got, cmpOpts...); diff != "" {
				t.Errorf("services (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInbound(t *testing.T) {
	web := map[string]string{"app": "web"}
	tests := []struct {
		name      string
		services  []v1alpha1.Service
		workloads []v1alpha1.Workload
		reg       *Registration
		self      spiffeid.ID
		workload  string
		want      []*meshv1.InboundPort
	}{
		{
			name: "union of selecting services, GRPC is HTTP2, duplicates merged",
			services: []v1alpha1.Service{
				service("shop", "web", web, nil, port{name: "http", port: 80, targetPort: 8080, protocol: v1alpha1.ProtocolHTTP}, port{name: "grpc", port: 90, targetPort: 9090, protocol: v1alpha1.ProtocolGRPC}),
				service("shop", "web-h2", web, []string{"web"}, port{port: 9090, protocol: v1alpha1.ProtocolHTTP2}),
				service("shop", "db", map[string]string{"app": "db"}, nil, port{port: 5432}),
				service("other", "web", web, nil, port{port: 7000}),
				service("shop", "web-restricted", web, []string{"admin"}, port{port: 7001}),
			},
			reg:      &Registration{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")},
			self:     wid("shop", "web"),
			workload: "web-1",
			want: []*meshv1.InboundPort{
				{Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP},
				{Port: 9090, Protocol: meshv1.Protocol_PROTOCOL_HTTP2},
			},
		},
		{
			name: "conflicting protocols: lowest wins",
			services: []v1alpha1.Service{
				service("shop", "a", web, nil, port{port: 80, targetPort: 8080, protocol: v1alpha1.ProtocolHTTP2}),
				service("shop", "b", web, nil, port{port: 81, targetPort: 8080, protocol: v1alpha1.ProtocolHTTP}),
			},
			reg:      &Registration{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")},
			self:     wid("shop", "web"),
			workload: "web-1",
			want:     []*meshv1.InboundPort{{Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		},
		{
			name:     "static workload of the same identity",
			services: []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80})},
			workloads: []v1alpha1.Workload{
				staticWorkload("shop", "web-1", "web", "10.0.0.1:15008", web),
			},
			self:     wid("shop", "web"),
			workload: "web-1",
			want:     []*meshv1.InboundPort{{Port: 80, Protocol: meshv1.Protocol_PROTOCOL_AUTO}},
		},
		{
			name:     "another service account's workload name gives nothing",
			services: []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80})},
			reg:      &Registration{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")},
			self:     wid("shop", "other"),
			workload: "web-1",
			want:     nil,
		},
		{
			name:     "unregistered workload gets nothing",
			services: []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80})},
			self:     wid("shop", "web"),
			workload: "web-1",
			want:     nil,
		},
		{
			name:     "not a workload identity gets nothing",
			services: []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80})},
			reg:      &Registration{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")},
			self:     spiffeid.RequireFromPath(td, "/something/else"),
			workload: "web-1",
			want:     nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t)
			m.SetResources(&localconfig.Resources{Services: tt.services, Workloads: tt.workloads})
			if tt.reg != nil {
				mustRegister(t, m, *tt.reg)
			}
			got := m.ConfigFor(tt.self, tt.workload, nil).GetInbound()
			if diff := cmp.Diff(tt.want, got, cmpOpts...); diff != "" {
				t.Errorf("inbound (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInboundFollowsLatestRegistration(t *testing.T) {
	m := newModel(t)
	m.SetResources(&localconfig.Resources{Services: []v1alpha1.Service{
		service("shop", "v1", map[string]string{"v": "1"}, nil, port{port: 81}),
		service("shop", "v2", map[string]string{"v": "2"}, nil, port{port: 82}),
	}})
	unregOld := mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-1", Labels: map[string]string{"v": "1"}, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")})
	mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-1", Labels: map[string]string{"v": "2"}, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")})
	want := []*meshv1.InboundPort{{Port: 82, Protocol: meshv1.Protocol_PROTOCOL_AUTO}}
	if diff := cmp.Diff(want, m.ConfigFor(wid("shop", "web"), "web-1", nil).GetInbound(), cmpOpts...); diff != "" {
		t.Errorf("inbound with two registrations (-want +got):\n%s", diff)
	}
	unregOld()
	unregOld() // idempotent
	if diff := cmp.Diff(want, m.ConfigFor(wid("shop", "web"), "web-1", nil).GetInbound(), cmpOpts...); diff != "" {
		t.Errorf("inbound after the old one left (-want +got):\n%s", diff)
	}
}

func TestConfigSettingsAndBundle(t *testing.T) {
	root := &x509.Certificate{Raw: []byte("not really DER, but carried as is")}
	m, err := New(Config{TrustDomain: td, TrustBundle: []*x509.Certificate{root}, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.ConfigFor(wid("shop", "web"), "web-1", nil)
	if got := cfg.GetSettings().GetConnectTimeout().AsDuration(); got != 2*time.Second {
		t.Errorf("connect timeout = %v, want 2s", got)
	}
	if diff := cmp.Diff([][]byte{root.Raw}, cfg.GetTrustBundle()); diff != "" {
		t.Errorf("trust bundle (-want +got):\n%s", diff)
	}
	if cfg.GetSpiffeId() != "spiffe://example.org/ns/shop/sa/web" {
		t.Errorf("spiffe_id = %q", cfg.GetSpiffeId())
	}

	m = newModel(t)
	if got := m.ConfigFor(wid("shop", "web"), "web-1", nil).GetSettings().GetConnectTimeout().AsDuration(); got != DefaultConnectTimeout {
		t.Errorf("default connect timeout = %v, want %v", got, DefaultConnectTimeout)
	}
}

func TestVersion(t *testing.T) {
	web := map[string]string{"app": "web"}
	res := &localconfig.Resources{Services: []v1alpha1.Service{service("shop", "web", web, nil, port{port: 80})}}
	m := newModel(t)
	m.SetResources(res)
	self := wid("shop", "client")

	a := m.ConfigFor(self, "client", []string{"web", "db"})
	b := m.ConfigFor(self, "client", []string{"db", "web.shop"})
	if len(a.GetVersion()) != 16 {
		t.Errorf("version %q is not 16 characters", a.GetVersion())
	}
	if a.GetVersion() != b.GetVersion() {
		t.Errorf("equal content, different versions: %q and %q", a.GetVersion(), b.GetVersion())
	}
	if got := Version(a); got != a.GetVersion() {
		t.Errorf("Version(cfg) = %q, cfg.version = %q", got, a.GetVersion())
	}

	// A change that does not concern this proxy keeps its version.
	unregister := mustRegister(t, m, Registration{ID: wid("shop", "api"), Name: "api-1", Labels: map[string]string{"app": "api"}, TunnelAddress: "10.0.0.9:15008", PeerIP: netip.MustParseAddr("10.0.0.9")})
	if v := m.ConfigFor(self, "client", []string{"web", "db"}).GetVersion(); v != a.GetVersion() {
		t.Errorf("unrelated registration changed the version: %q -> %q", a.GetVersion(), v)
	}
	unregister()

	// A new endpoint changes it; its departure restores it.
	unregister = mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-1", Labels: web, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")})
	c := m.ConfigFor(self, "client", []string{"web", "db"})
	if c.GetVersion() == a.GetVersion() {
		t.Errorf("new endpoint kept version %q", c.GetVersion())
	}
	unregister()
	if v := m.ConfigFor(self, "client", []string{"web", "db"}).GetVersion(); v != a.GetVersion() {
		t.Errorf("after unregistering, version = %q, want %q", v, a.GetVersion())
	}

	// Another identity gets another version.
	if v := m.ConfigFor(wid("shop", "other"), "client", []string{"web", "db"}).GetVersion(); v == a.GetVersion() {
		t.Errorf("other identity has the same version %q", v)
	}
}

func TestChanged(t *testing.T) {
	m := newModel(t)
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	steps := []struct {
		name   string
		change func()
	}{
		{"SetResources", func() { m.SetResources(&localconfig.Resources{}) }},
		{"SetTrustBundle", func() { m.SetTrustBundle(nil) }},
		{"Register and unregister", func() {
			unregister := mustRegister(t, m, Registration{ID: wid("shop", "web"), Name: "web-1", TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")})
			ch := m.Changed()
			unregister()
			if !closed(ch) {
				t.Error("unregister did not notify")
			}
		}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			ch := m.Changed()
			if closed(ch) {
				t.Fatal("closed before any change")
			}
			if m.Changed() != ch {
				t.Error("Changed returned a new channel without a change")
			}
			s.change()
			if !closed(ch) {
				t.Error("not notified")
			}
			if closed(m.Changed()) {
				t.Error("the next channel is already closed")
			}
		})
	}

	t.Run("failed registration does not notify", func(t *testing.T) {
		ch := m.Changed()
		if _, err := m.Register(Registration{ID: wid("shop", "web"), Name: "Bad Name", TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")}); err == nil {
			t.Fatal("Register accepted an invalid name")
		}
		if closed(ch) {
			t.Error("notified")
		}
	})
}

func TestRegisterInvalid(t *testing.T) {
	tooMany := make(map[string]string)
	for i := range MaxLabels + 1 {
		tooMany["l"+string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	ok := Registration{ID: wid("shop", "web"), Name: "web-1", Labels: map[string]string{"app": "web"}, TunnelAddress: "10.0.0.1:15008", PeerIP: netip.MustParseAddr("10.0.0.1")}
	tests := []struct {
		name   string
		modify func(*Registration)
	}{
		{"other trust domain", func(r *Registration) {
			r.ID = spiffeid.RequireFromSegments(spiffeid.RequireTrustDomainFromString("evil.org"), "ns", "shop", "sa", "web")
		}},
		{"not a workload id", func(r *Registration) { r.ID = spiffeid.RequireFromPath(td, "/x") }},
		{"empty name", func(r *Registration) { r.Name = "" }},
		{"bad name", func(r *Registration) { r.Name = "Web_1" }},
		{"bad label key", func(r *Registration) { r.Labels = map[string]string{"bad key": "v"} }},
		{"bad label value", func(r *Registration) { r.Labels = map[string]string{"k": "bad value!"} }},
		{"too many labels", func(r *Registration) { r.Labels = tooMany }},
		{"address without port", func(r *Registration) { r.TunnelAddress = "10.0.0.1" }},
		{"address without host", func(r *Registration) { r.TunnelAddress = ":15008" }},
		{"unspecified host", func(r *Registration) { r.TunnelAddress = "0.0.0.0:15008" }},
		{"port zero", func(r *Registration) { r.TunnelAddress = "10.0.0.1:0" }},
		{"port too large", func(r *Registration) { r.TunnelAddress = "10.0.0.1:70000" }},
		{"named port", func(r *Registration) { r.TunnelAddress = "10.0.0.1:http" }},
	}
	m := newModel(t)
	if _, err := m.Register(ok); err != nil {
		t.Fatalf("valid registration refused: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.modify(&r)
			_, err := m.Register(r)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Register = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in               string
		wantName, wantNS string
		wantErr          bool
	}{
		{in: "web", wantName: "web", wantNS: "own"},
		{in: "web.shop", wantName: "web", wantNS: "shop"},
		{in: "", wantErr: true},
		{in: "web.", wantErr: true},
		{in: ".shop", wantErr: true},
		{in: "web.shop.extra", wantErr: true},
		{in: "Web", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			name, ns, err := ParseUpstream(tt.in, "own")
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("ParseUpstream(%q) = %q, %q, %v; want ErrInvalid", tt.in, name, ns, err)
				}
				return
			}
			if err != nil || name != tt.wantName || ns != tt.wantNS {
				t.Errorf("ParseUpstream(%q) = %q, %q, %v; want %q, %q", tt.in, name, ns, err, tt.wantName, tt.wantNS)
			}
		})
	}
}
