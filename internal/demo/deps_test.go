package demo

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the demo on the outside of the mesh: it drives the
// controller and the proxy through their command lines, files and admin
// endpoints, as a user would, so it must not link them. The apps know
// nothing of Rampart at all.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	const module = "github.com/rampart-mesh/rampart/"
	mesh := []string{
		module + "internal/controller",
		module + "internal/controlplane",
		module + "internal/discovery",
		module + "internal/ca",
		module + "internal/proxy",
		module + "internal/meshapi",
		module + "internal/meshtls",
	}
	tests := []struct {
		pkg       string
		forbidden []string
		allowed   []string // the module's packages it may use; nil: any not forbidden
	}{
		{pkg: ".", forbidden: mesh},
		{pkg: "./apps", forbidden: mesh, allowed: []string{module + "internal/demo/apps", module + "internal/demo/paymentspb"}},
		{pkg: "./paymentspb", forbidden: mesh, allowed: []string{module + "internal/demo/paymentspb"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			out, err := exec.Command(goTool, "list", "-deps", tt.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", tt.pkg, err, out)
			}
			pkgs := strings.Fields(string(out))
			if len(pkgs) < 10 {
				t.Fatalf("go list returned %d packages; the check would prove nothing", len(pkgs))
			}
			for _, p := range pkgs {
				for _, f := range tt.forbidden {
					if p == f || strings.HasPrefix(p, f+"/") {
						t.Errorf("%s links %s", tt.pkg, p)
					}
				}
				if tt.allowed != nil && strings.HasPrefix(p, module) && !contains(tt.allowed, p) {
					t.Errorf("%s links %s; it may use only %v from this module", tt.pkg, p, tt.allowed)
				}
			}
		})
	}
}
