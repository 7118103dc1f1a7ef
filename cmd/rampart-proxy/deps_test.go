package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProxyDependencies keeps the proxy small and its layering honest: it
// must not link Kubernetes client libraries, the controller, or the
// resource types that the controller compiles for it.
func TestProxyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"k8s.io/",
		"sigs.k8s.io/",
		"github.com/rampart-mesh/rampart/api/",
		"github.com/rampart-mesh/rampart/internal/controller",
		"github.com/rampart-mesh/rampart/internal/controlplane",
		"github.com/rampart-mesh/rampart/internal/discovery",
		"github.com/rampart-mesh/rampart/internal/ca",
		"github.com/rampart-mesh/rampart/internal/localconfig",
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 {
		t.Fatalf("go list returned %d packages; the check would prove nothing", len(pkgs))
	}
	for _, pkg := range pkgs {
		for _, f := range forbidden {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("rampart-proxy links %s (forbidden prefix %s)", pkg, f)
			}
		}
	}
}
