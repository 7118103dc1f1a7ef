package demo

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/compile"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/localconfig"
)

// testPlan lays the demo out on ports 20000, 20001, ...
func testPlan(t *testing.T, dir string) *plan {
	t.Helper()
	ports := make([]int, portsNeeded())
	for i := range ports {
		ports[i] = 20000 + i
	}
	p, err := newPlan(dir, ports)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlan(t *testing.T) {
	p := testPlan(t, "/state")
	seen := map[string]string{p.controllerAddr: "controller", p.controllerAdmin: "controller admin"}
	for _, w := range p.workloads {
		for what, addr := range map[string]string{"app": w.appAddr, "tunnel": w.tunnelAddr, "admin": w.adminAddr, "outbound": w.outboundAddr} {
			if addr == "" {
				continue
			}
			if other, dup := seen[addr]; dup {
				t.Errorf("%s %s and %s share %s", w.name, what, other, addr)
			}
			seen[addr] = w.name + " " + what
		}
		if want := "spiffe://rampart.local/ns/demo/sa/" + w.name; w.id.String() != want {
			t.Errorf("%s: id %s, want %s", w.name, w.id, want)
		}
		if (w.appAddr == "") != (w.name == "loadgen") || (w.outboundAddr == "") != (w.name == "payments") {
			t.Errorf("%s: app %q, outbound %q", w.name, w.appAddr, w.outboundAddr)
		}
	}
	if len(seen) != portsNeeded() {
		t.Errorf("%d addresses used, %d ports taken", len(seen), portsNeeded())
	}
	if _, err := newPlan("/state", []int{1, 2}); err == nil {
		t.Error("newPlan with too few ports succeeded")
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := freePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[int]bool)
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("ports %v: %d is invalid or repeated", ports, p)
		}
		seen[p] = true
	}
}

// TestServiceDocuments checks the Service documents against golden files
// and against the controller's own loader.
func TestServiceDocuments(t *testing.T) {
	p := testPlan(t, t.TempDir())
	// A leftover from an earlier run on other ports is replaced.
	if err := os.MkdirAll(p.configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.configDir, "stale.yaml"), []byte("not: a service\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.writeConfig(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{p.controllerDir, p.logDir} {
		if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a private directory", dir, st, err)
		}
	}
	entries, err := os.ReadDir(p.configDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		b, err := os.ReadFile(filepath.Join(p.configDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		golden(t, filepath.Join("services", e.Name()), b)
	}
	if diff := cmp.Diff([]string{"orders.yaml", "payments.yaml", "policy.yaml", "web.yaml"}, names); diff != "" {
		t.Errorf("config files (-want +got):\n%s", diff)
	}

	res, err := localconfig.Load(p.configDir)
	if err != nil {
		t.Fatalf("the controller's loader refuses the demo's config:\n%v", err)
	}
	service := func(name string, port, target int32, proto v1alpha1.Protocol, portName string) v1alpha1.Service {
		return v1alpha1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindService},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
			Spec: v1alpha1.ServiceSpec{
				Selector:        map[string]string{"app": name},
				ServiceAccounts: []string{name},
				Ports:           []v1alpha1.ServicePort{{Name: portName, Port: port, TargetPort: target, Protocol: proto}},
			},
		}
	}
	app := func(name string) int32 {
		for _, w := range p.workloads {
			if w.name == name {
				var port int32
				for _, c := range w.appAddr[len("127.0.0.1:"):] {
					port = port*10 + c - '0'
				}
				return port
			}
		}
		t.Fatalf("no workload %s", name)
		return 0
	}
	want := []v1alpha1.Service{
		service("orders", 80, app("orders"), v1alpha1.ProtocolHTTP, "http"),
		service("payments", 50051, app("payments"), v1alpha1.ProtocolGRPC, "grpc"),
		service("web", 80, app("web"), v1alpha1.ProtocolHTTP, "http"),
	}
	if diff := cmp.Diff(want, res.Services, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("services as the controller reads them (-want +got):\n%s", diff)
	}
	if len(res.Workloads) != 0 {
		t.Errorf("workloads %v, want none: proxies register themselves", res.Workloads)
	}

	// The policy allows exactly the demo's edges.
	policies := &compile.Resources{AuthorizationPolicies: res.AuthorizationPolicies, NamespacePolicies: res.NamespacePolicies}
	for _, to := range []string{"payments", "orders", "web"} {
		e, err := compile.Engine(policies, compile.Workload{Namespace: Namespace, Labels: map[string]string{"app": to}}, compile.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, from := range []string{"loadgen", "web", "orders", "payments"} {
			id, _ := identity.WorkloadID(spiffeid.RequireTrustDomainFromString(TrustDomain), Namespace, from)
			d := e.Decide(&authz.Request{Source: id.String(), Authenticated: true, Port: 80, Protocol: authz.ProtocolTCP})
			edge := (from == "loadgen" && to == "web") || (from == "web" && to == "orders") || (from == "orders" && to == "payments")
			if d.Allow != edge {
				t.Errorf("%s -> %s: %v, want allowed %v", from, to, d, edge)
			}
		}
	}
}
