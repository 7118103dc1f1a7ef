package localconfig

import (
	"bytes"
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/api/httproute"
	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// FuzzLoad checks that Load survives any file: it returns resources or a
// *LoadError whose problems are in that file, and never panics or hangs.
func FuzzLoad(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "load", "*", "*.y*ml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range seeds {
		if info, err := os.Stat(path); err != nil || !info.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"---\n---\n",
		"a: &a [*a]\n",
		"<<: {a: 1}\n",
		"apiVersion: rampart.dev/v1alpha1\nkind: Service\nmetadata: &m {name: x, <<: *m}\n",
		"apiVersion: rampart.dev/v1alpha1\nkind: Workload\nmetadata: {name: w, creationTimestamp: yesterday}\nspec: {serviceAccount: w, tunnelAddress: '[::1]:1'}\n",
		"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {parentRefs: [{group: '', kind: Service, name: s}], rules: [{backendRefs: [{name: s, port: 80}]}]}\n",
		"{a: [\n---\nb: 1\n",
		"%YAML 1.1\n---\na: !!binary aGk=\n...\n",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "fuzz.yaml"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, err := Load(dir)
		// Generous, for loaded machines: a hang, or a blow-up, is far slower.
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("Load() took %v", d)
		}
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) || len(le.Problems) == 0 {
				t.Fatalf("Load() error = %T %v, want a *LoadError with problems", err, err)
			}
			// The line breaks of YAML 1.1, which yaml.v3 counts.
			lines := 1 + bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n")) +
				bytes.Count(data, []byte("\u0085")) + bytes.Count(data, []byte("\u2028")) + bytes.Count(data, []byte("\u2029"))
			for _, p := range le.Problems {
				if p.File != "fuzz.yaml" || p.Line < 0 || p.Line > lines || p.Msg == "" {
					t.Errorf("bad problem %+v in a file of %d lines", p, lines)
				}
			}
			return
		}
		for _, s := range res.Services {
			if err := s.Validate(); err != nil {
				t.Errorf("Load() returned an invalid service: %v", err)
			}
		}
		for _, w := range res.Workloads {
			if err := w.Validate(); err != nil {
				t.Errorf("Load() returned an invalid workload: %v", err)
			}
		}
		for _, r := range res.HTTPRoutes {
			if err := httproute.Validate(&r); err != nil {
				t.Errorf("Load() returned an invalid route: %v", err)
			}
		}
		if !slices.IsSortedFunc(res.Services, func(a, b v1alpha1.Service) int {
			return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
		}) {
			t.Errorf("services not sorted")
		}
	})
}
