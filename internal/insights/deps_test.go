package insights

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps insights a library the controller feeds with
// validated observations: no Kubernetes client libraries and nothing of the
// control plane, the proxy or the controller above it, however deep; and no
// gRPC or mesh API of its own (internal/telemetry/graph's sketches bring
// the mesh API's messages in, not this package).
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
			"k8s.io/client-go",
			"k8s.io/apimachinery",
			"sigs.k8s.io/controller-runtime",
			"github.com/rampart-mesh/rampart/internal/proxy",
			"github.com/rampart-mesh/rampart/internal/controlplane",
			"github.com/rampart-mesh/rampart/internal/controller",
		} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("imports %s", pkg)
			}
		}
	}
	out, err = exec.Command(goTool, "list", "-f", `{{join .Imports " "}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -f: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"google.golang.org/grpc", "github.com/rampart-mesh/rampart/internal/meshapi"} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("imports %s directly", pkg)
			}
		}
	}
}
