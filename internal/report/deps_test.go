package report

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the report assembled from plain inputs: nothing
// of the controller, the control plane or the proxy, however deep.
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
		for _, banned := range []string{
			"github.com/rampart-mesh/rampart/internal/proxy",
			"github.com/rampart-mesh/rampart/internal/controlplane",
			"github.com/rampart-mesh/rampart/internal/controller",
		} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("imports %s", pkg)
			}
		}
	}
}
