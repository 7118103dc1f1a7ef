package attest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps attest a library of the controller's that a
// Kubernetes adapter feeds: no Kubernetes client libraries (the API server
// is reached through TokenReviewer and PodGetter), no gRPC (the edge maps
// reasons to statuses), nothing of the proxy or of the controller above it.
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
			"sigs.k8s.io/controller-runtime",
			"google.golang.org/grpc",
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
