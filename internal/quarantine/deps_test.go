package quarantine

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the quarantine list below the controller and the
// CLI that use it: never Kubernetes packages, the controller or the proxy,
// directly or indirectly.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(pkg, "k8s.io/"), strings.HasPrefix(pkg, "sigs.k8s.io/"):
			t.Errorf("imports Kubernetes package %s", pkg)
		case strings.HasPrefix(pkg, "github.com/rampart-mesh/rampart/internal/proxy"),
			strings.HasPrefix(pkg, "github.com/rampart-mesh/rampart/internal/controller"),
			strings.HasPrefix(pkg, "github.com/rampart-mesh/rampart/api/"):
			t.Errorf("imports %s", pkg)
		}
	}
}
