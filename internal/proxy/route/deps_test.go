package route

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps this package one the proxy can link: the standard
// library and the control-plane protocol (with what it needs: protobuf and
// gRPC), nothing else (no Kubernetes, no api/, no controller packages, no
// other proxy packages).
func TestDependencies(t *testing.T) {
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	const (
		self   = "github.com/rampart-mesh/rampart/internal/proxy/route"
		meshv1 = "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	)
	allowed := make(map[string]bool)
	for _, pkg := range deps(meshv1) {
		allowed[pkg] = true
	}
	if !allowed[meshv1] || len(allowed) < 10 {
		t.Fatalf("go list found %d dependencies of meshv1; the check would prove nothing", len(allowed))
	}
	for _, pkg := range deps(".") {
		first, _, _ := strings.Cut(pkg, "/")
		if pkg != self && !allowed[pkg] && strings.Contains(first, ".") {
			t.Errorf("%s is neither in the standard library nor needed by meshv1", pkg)
		}
	}
}
