package v1alpha1

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/internal/insights"
)

func TestDetectionPolicyValidate(t *testing.T) {
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	valid := func() *DetectionPolicy {
		return &DetectionPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindDetectionPolicy},
			ObjectMeta: metav1.ObjectMeta{Name: "mesh", Namespace: DetectionPolicyNamespace},
			Spec: DetectionPolicySpec{
				LearningPeriod: dur(24 * time.Hour), QuarantineDuration: dur(time.Hour),
				Exempt: []string{"spiffe://rampart.local/ns/monitoring/sa/prometheus"},
				Detections: &DetectionSettings{
					RateSpike:   &DetectionRule{Threshold: "4.5", Window: dur(2 * time.Minute)},
					ErrorSpike:  &DetectionRule{Threshold: "0.5"},
					RouteScan:   &DetectionRule{Action: DetectionActionQuarantine, Severity: "critical", Threshold: "30"},
					CodeChanged: &DetectionRule{Disabled: true},
				},
			},
		}
	}
	tests := []struct {
		name   string
		modify func(p *DetectionPolicy)
		want   []string // paths
	}{
		{"valid", func(*DetectionPolicy) {}, nil},
		{"empty spec", func(p *DetectionPolicy) { p.Spec = DetectionPolicySpec{} }, nil},
		{"durations out of range", func(p *DetectionPolicy) {
			p.Spec.LearningPeriod, p.Spec.QuarantineDuration = dur(time.Second), dur(8*24*time.Hour)
		}, []string{"spec.learningPeriod", "spec.quarantineDuration"}},
		{"bad exempt", func(p *DetectionPolicy) {
			p.Spec.Exempt = []string{"prometheus", "spiffe://a/b", "spiffe://a/b"}
		}, []string{"spec.exempt[0]", "spec.exempt[2]"}},
		{"bad rules", func(p *DetectionPolicy) {
			p.Spec.Detections = &DetectionSettings{
				NewEdge:     &DetectionRule{Threshold: "2"},
				RateSpike:   &DetectionRule{Threshold: "0.5"},
				ErrorSpike:  &DetectionRule{Threshold: "1.5"},
				DenialBurst: &DetectionRule{Action: "Block", Severity: "urgent", Window: dur(48 * time.Hour)},
				RouteScan:   &DetectionRule{Threshold: "1e3"},
				Plaintext:   &DetectionRule{Threshold: "0"},
			}
		}, []string{
			"spec.detections.newEdge.threshold", "spec.detections.rateSpike.threshold", "spec.detections.errorSpike.threshold",
			"spec.detections.denialBurst.action", "spec.detections.denialBurst.severity", "spec.detections.denialBurst.window",
			"spec.detections.routeScan.threshold", "spec.detections.plaintext.threshold",
		}},
		{"wrong kind", func(p *DetectionPolicy) { p.Kind = KindTrafficPolicy }, []string{"kind"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.modify(p)
			var got []string
			var fe FieldErrors
			if err := p.Validate(); errors.As(err, &fe) {
				for _, e := range fe {
					got = append(got, e.Path)
				}
			} else if err != nil {
				t.Fatalf("Validate: %v, want FieldErrors", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("invalid fields (-want +got):\n%s", diff)
			}
			_, err := p.Compile()
			if (err == nil) != (tt.want == nil) {
				t.Errorf("Compile: %v, Validate found %v", err, got)
			}
		})
	}
}

// TestDetectionFieldsCoverDetections: every detection has its key in
// spec.detections.
func TestDetectionFieldsCoverDetections(t *testing.T) {
	for _, d := range insights.Detections {
		if DetectionFieldName(d) == "" {
			t.Errorf("detection %s has no field in DetectionSettings", d)
		}
	}
	if len(detectionFields) != len(insights.Detections) {
		t.Errorf("%d fields for %d detections", len(detectionFields), len(insights.Detections))
	}
}
