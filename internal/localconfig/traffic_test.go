package localconfig

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLoadTraffic loads the TrafficPolicy example of docs/traffic.md
// (testdata/load/traffic), whose content traffic.golden.json holds.
func TestLoadTraffic(t *testing.T) {
	res, err := Load(filepath.Join("testdata", "load", "traffic"))
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, filepath.Join("testdata", "load", "traffic.golden.json"), res)
}

func TestLoadTrafficProblems(t *testing.T) {
	_, err := Load(filepath.Join("testdata", "load", "traffic-docs-broken"))
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Load: %v, want a *LoadError", err)
	}
	var got []string
	for _, p := range le.Problems {
		got = append(got, p.File+":"+itoa(p.Line))
	}
	want := []string{
		"traffic.yaml:10", "traffic.yaml:11", "traffic.yaml:15",
		"traffic.yaml:16", "traffic.yaml:18", "traffic.yaml:19", "traffic.yaml:28",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problem lines (-want +got):\n%s\n%v", diff, err)
	}
}
