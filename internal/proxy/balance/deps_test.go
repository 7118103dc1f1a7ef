package balance

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps this tree a library the proxy can link and anyone
// can test alone: the standard library and its own packages, nothing else
// (no Kubernetes, no api/, no controller packages, no other proxy
// packages).
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const self = "github.com/rampart-mesh/rampart/internal/proxy/balance"
	pkgs := strings.Fields(string(out))
	own := 0
	for _, pkg := range pkgs {
		first, _, _ := strings.Cut(pkg, "/")
		switch {
		case pkg == self || strings.HasPrefix(pkg, self+"/"):
			own++
		case !strings.Contains(first, "."):
			// the standard library
		default:
			t.Errorf("%s is not in the standard library", pkg)
		}
	}
	if own < 4 {
		t.Fatalf("go list found %d of this tree's packages; the check would prove nothing", own)
	}
}
