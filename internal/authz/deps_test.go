package authz

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps what the proxy links small and its layering
// honest: authz and ratelimit must not reach Kubernetes packages, api/ or
// the controller (only authz/compile may), and normalize uses the standard
// library only.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	const mod = "github.com/rampart-mesh/rampart/"
	forbidden := []string{
		"k8s.io/",
		"sigs.k8s.io/",
		mod + "api/",
		mod + "internal/authz/compile",
		mod + "internal/controller",
		mod + "internal/controlplane",
		mod + "internal/discovery",
		mod + "internal/localconfig",
		mod + "internal/ca",
		mod + "internal/proxy",
	}
	for _, pkg := range []string{".", "./ratelimit", "./normalize", "./authzpb"} {
		out, err := exec.Command(goTool, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		for _, dep := range deps {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s imports %s (forbidden: %s)", pkg, dep, f)
				}
			}
			if pkg == "./normalize" && dep != mod+"internal/authz/normalize" && strings.Contains(strings.SplitN(dep, "/", 2)[0], ".") {
				t.Errorf("normalize imports %s; it may use the standard library only", dep)
			}
		}
	}
}
