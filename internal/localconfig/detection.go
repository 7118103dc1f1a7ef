package localconfig

import (
	"cmp"
	"slices"
	"strings"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// ActiveDetectionPolicy returns the DetectionPolicy in force: of those in
// v1alpha1.DetectionPolicyNamespace, the oldest by creation time, then by
// name (in a config directory, where no creation time is set, the first
// by name). Ignored lists "namespace/name" of the others, those outside
// the namespace among them, for the controller to report. Active is nil
// when none applies.
func (r *Resources) ActiveDetectionPolicy() (active *v1alpha1.DetectionPolicy, ignored []string) {
	var candidates []*v1alpha1.DetectionPolicy
	for i := range r.DetectionPolicies {
		p := &r.DetectionPolicies[i]
		if p.Namespace != v1alpha1.DetectionPolicyNamespace {
			ignored = append(ignored, p.Namespace+"/"+p.Name)
			continue
		}
		candidates = append(candidates, p)
	}
	if len(candidates) == 0 {
		return nil, ignored
	}
	slices.SortStableFunc(candidates, func(a, b *v1alpha1.DetectionPolicy) int {
		return cmp.Or(a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time), strings.Compare(a.Name, b.Name))
	})
	for _, p := range candidates[1:] {
		ignored = append(ignored, p.Namespace+"/"+p.Name)
	}
	slices.Sort(ignored)
	return candidates[0], ignored
}
