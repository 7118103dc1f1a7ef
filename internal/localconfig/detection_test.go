package localconfig

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/insights"
)

// TestLoadDetection loads the DetectionPolicy example of docs/insights.md
// and compiles it.
func TestLoadDetection(t *testing.T) {
	res, err := Load(filepath.Join("testdata", "load", "detection"))
	if err != nil {
		t.Fatal(err)
	}
	active, ignored := res.ActiveDetectionPolicy()
	if active == nil || len(ignored) != 0 {
		t.Fatalf("ActiveDetectionPolicy = %v, %v; want mesh and none ignored", active, ignored)
	}
	got, err := active.Compile()
	if err != nil {
		t.Fatal(err)
	}
	want := insights.Policy{
		LearningPeriod:     2 * time.Hour,
		QuarantineDuration: 30 * time.Minute,
		Exempt:             []spiffeid.ID{spiffeid.RequireFromString("spiffe://rampart.local/ns/monitoring/sa/prometheus")},
		Rules: map[insights.Detection]insights.Rule{
			insights.RouteScan:   {Action: insights.ActionQuarantine, Threshold: 25, Window: time.Minute},
			insights.DenialBurst: {Action: insights.ActionQuarantine, Severity: insights.SeverityCritical},
			insights.RateSpike:   {Action: insights.ActionAlert, Threshold: 4.5},
			insights.NewEdge:     {Disabled: true, Action: insights.ActionAlert},
		},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
		t.Errorf("compiled policy (-want +got):\n%s", diff)
	}
}

// TestLoadDetectionProblems: every bad field is reported with its line,
// and nothing of the directory loads.
func TestLoadDetectionProblems(t *testing.T) {
	res, err := Load(filepath.Join("testdata", "load", "detection-broken"))
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Load = %v, %v; want a *LoadError", res, err)
	}
	var got []string
	for _, p := range le.Problems {
		got = append(got, p.File+":"+itoa(p.Line))
	}
	want := []string{
		"detection.yaml:7", "detection.yaml:9", "detection.yaml:12", "detection.yaml:13",
		"detection.yaml:15", "detection.yaml:16",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problem lines (-want +got):\n%s\n%v", diff, err)
	}
}

func TestActiveDetectionPolicy(t *testing.T) {
	at := func(ns, name string, created time.Time) v1alpha1.DetectionPolicy {
		return v1alpha1.DetectionPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(created)}}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		policies    []v1alpha1.DetectionPolicy
		wantActive  string
		wantIgnored []string
	}{
		{"none", nil, "", nil},
		{"other namespace only", []v1alpha1.DetectionPolicy{at("shop", "a", t0)}, "", []string{"shop/a"}},
		{"oldest wins", []v1alpha1.DetectionPolicy{
			at("rampart-system", "a", t0.Add(time.Hour)), at("rampart-system", "b", t0), at("shop", "c", t0),
		}, "b", []string{"rampart-system/a", "shop/c"}},
		{"same age: first by name", []v1alpha1.DetectionPolicy{
			at("rampart-system", "z", t0), at("rampart-system", "m", t0),
		}, "m", []string{"rampart-system/z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &Resources{DetectionPolicies: tt.policies}
			active, ignored := res.ActiveDetectionPolicy()
			name := ""
			if active != nil {
				name = active.Name
			}
			if name != tt.wantActive {
				t.Errorf("active = %q, want %q", name, tt.wantActive)
			}
			if diff := cmp.Diff(tt.wantIgnored, ignored); diff != "" {
				t.Errorf("ignored (-want +got):\n%s", diff)
			}
		})
	}
}

const insightsDocsPath = "../../docs/insights.md"

// TestInsightsDocs keeps the DetectionPolicy sections of docs/insights.md
// true: their YAML blocks marked <!-- testdata: path --> are those files,
// and their error output marked <!-- load-error: dir --> is what loading
// that directory says. Blocks without a marker are other sections'.
func TestInsightsDocs(t *testing.T) {
	if _, err := os.Stat(insightsDocsPath); err != nil {
		t.Fatal(err)
	}
	shown, loadErrors := checkMarkedBlocks(t, insightsDocsPath)
	for _, f := range []string{"load/detection/detection.yaml"} {
		if !shown[f] {
			t.Errorf("%s does not show testdata/%s", insightsDocsPath, f)
		}
	}
	if loadErrors == 0 {
		t.Errorf("%s shows no error output", insightsDocsPath)
	}
}
