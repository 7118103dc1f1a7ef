package ca

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the CA below the rest of the mesh: it may use the
// standard library and go-spiffe only, so never Kubernetes packages or
// anything from the proxy, directly or indirectly.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	const self = "github.com/rampart-mesh/rampart/internal/ca"
	for _, pkg := range strings.Fields(string(out)) {
		first, _, _ := strings.Cut(pkg, "/")
		switch {
		case pkg == self, !strings.Contains(first, "."), strings.HasPrefix(pkg, "github.com/spiffe/go-spiffe/v2/"), pkg == "github.com/rampart-mesh/rampart/internal/fsutil", pkg == "github.com/rampart-mesh/rampart/internal/codedigest":
		case strings.HasPrefix(pkg, "k8s.io/"), strings.HasPrefix(pkg, "sigs.k8s.io/"):
			t.Errorf("imports Kubernetes package %s", pkg)
		case strings.HasPrefix(pkg, "github.com/rampart-mesh/rampart/internal/proxy"):
			t.Errorf("imports proxy package %s", pkg)
		default:
			t.Errorf("imports %s; only the standard library and go-spiffe are allowed", pkg)
		}
	}
}
