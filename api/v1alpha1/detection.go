package v1alpha1

// This file holds DetectionPolicy: what the controller's threat detection
// (internal/insights) detects and how it responds. docs/insights.md
// describes it.

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/insights"
)

// KindDetectionPolicy is the kind of DetectionPolicy.
const KindDetectionPolicy = "DetectionPolicy"

// DetectionPolicyNamespace is the one namespace a DetectionPolicy is
// honoured in: the mesh's own. A DetectionPolicy elsewhere is valid but
// has no effect (the controller logs it).
const DetectionPolicyNamespace = identity.ControllerNamespace

// DetectionPolicy sets what the mesh's threat detection detects and how
// it responds: how long the traffic baseline is learnt, how long a
// quarantine lasts, which identities are never quarantined, and per
// detection whether it is on, its action (Alert or Quarantine), its
// severity, threshold and window. Fields left out keep the defaults
// (docs/insights.md).
//
// Only a policy in namespace rampart-system is honoured; when there are
// several, the oldest (by creation time, then name) applies and the others
// are reported.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=detectionpolicy
// +kubebuilder:printcolumn:name="Learning",type="string",JSONPath=".spec.learningPeriod"
// +kubebuilder:printcolumn:name="Quarantine",type="string",JSONPath=".spec.quarantineDuration"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type DetectionPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec DetectionPolicySpec `json:"spec"`
}

// DetectionPolicySpec describes a DetectionPolicy.
type DetectionPolicySpec struct {
	// LearningPeriod is how long the baseline of normal traffic is learnt
	// before detections that compare with it fire. From 1m to 30 days
	// (720h); left out: 1h.
	LearningPeriod *metav1.Duration `json:"learningPeriod,omitempty"`
	// QuarantineDuration is how long a quarantine by a detection lasts.
	// From 1m to 7 days (168h); left out: 15m.
	QuarantineDuration *metav1.Duration `json:"quarantineDuration,omitempty"`
	// Exempt lists SPIFFE IDs that a detection never quarantines (their
	// events say Alert): the mesh's own infrastructure, for example. At
	// most 256.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=2048
	Exempt []string `json:"exempt,omitempty"`
	// Detections sets each detection; one left out keeps its defaults.
	Detections *DetectionSettings `json:"detections,omitempty"`
}

// DetectionSettings holds the setting of each detection.
type DetectionSettings struct {
	// NewEdge: a source calls a workload it never called while learning.
	NewEdge *DetectionRule `json:"newEdge,omitempty"`
	// RateSpike: an edge's request rate beyond its learnt band.
	RateSpike *DetectionRule `json:"rateSpike,omitempty"`
	// ErrorSpike: an edge's error rate beyond its learnt band.
	ErrorSpike *DetectionRule `json:"errorSpike,omitempty"`
	// DenialBurst: many authorization denials of one source's requests.
	DenialBurst *DetectionRule `json:"denialBurst,omitempty"`
	// RouteScan: one source requesting many distinct paths, mostly
	// refused.
	RouteScan *DetectionRule `json:"routeScan,omitempty"`
	// UnknownCA: handshakes with a certificate of no trusted root.
	UnknownCA *DetectionRule `json:"unknownCA,omitempty"`
	// RevokedPeer: handshakes with a revoked certificate or identity.
	RevokedPeer *DetectionRule `json:"revokedPeer,omitempty"`
	// Plaintext: plaintext connections refused on a STRICT port.
	Plaintext *DetectionRule `json:"plaintext,omitempty"`
	// CodeChanged: a workload attested with another code digest.
	CodeChanged *DetectionRule `json:"codeChanged,omitempty"`
}

// DetectionRule is the setting of one detection.
type DetectionRule struct {
	// Disabled switches the detection off.
	Disabled bool `json:"disabled,omitempty"`
	// Action is the response: Alert (record and send the event) or
	// Quarantine (also isolate the source identity for the policy's
	// quarantineDuration). Left out: Alert.
	Action DetectionAction `json:"action,omitempty"`
	// Severity overrides the detection's default severity.
	Severity DetectionSeverity `json:"severity,omitempty"`
	// Threshold is a decimal number whose meaning depends on the
	// detection (docs/insights.md): a factor, a share or a count. Left
	// out: the detection's default.
	// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?$`
	// +kubebuilder:validation:MaxLength=16
	Threshold string `json:"threshold,omitempty"`
	// Window is the span the detection counts over, and how long an
	// event for the same parties is not repeated. From 1s to 24h; left
	// out: the detection's default.
	Window *metav1.Duration `json:"window,omitempty"`
}

// DetectionAction is the response to a detection.
// +kubebuilder:validation:Enum=Alert;Quarantine
type DetectionAction string

// Detection actions.
const (
	DetectionActionAlert      DetectionAction = "Alert"
	DetectionActionQuarantine DetectionAction = "Quarantine"
)

// DetectionSeverity ranks events.
// +kubebuilder:validation:Enum=low;medium;high;critical
type DetectionSeverity string

// Bounds of a DetectionPolicy.
const (
	MinLearningPeriod     = time.Minute
	MaxLearningPeriod     = 30 * 24 * time.Hour
	MinQuarantineDuration = time.Minute
	MaxQuarantineDuration = 7 * 24 * time.Hour
	MinDetectionWindow    = time.Second
	MaxDetectionWindow    = 24 * time.Hour
	MaxDetectionExempt    = 256
	// MaxDetectionThreshold bounds a threshold, whatever its meaning.
	MaxDetectionThreshold = 1e6
)

// Default fills the namespace.
func (p *DetectionPolicy) Default() {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
}

// detectionField pairs a field of DetectionSettings with its detection.
type detectionField struct {
	name      string // JSON name, for paths
	detection insights.Detection
	rule      func(*DetectionSettings) *DetectionRule
}

var detectionFields = []detectionField{
	{"newEdge", insights.NewEdge, func(s *DetectionSettings) *DetectionRule { return s.NewEdge }},
	{"rateSpike", insights.RateSpike, func(s *DetectionSettings) *DetectionRule { return s.RateSpike }},
	{"errorSpike", insights.ErrorSpike, func(s *DetectionSettings) *DetectionRule { return s.ErrorSpike }},
	{"denialBurst", insights.DenialBurst, func(s *DetectionSettings) *DetectionRule { return s.DenialBurst }},
	{"routeScan", insights.RouteScan, func(s *DetectionSettings) *DetectionRule { return s.RouteScan }},
	{"unknownCA", insights.UnknownCA, func(s *DetectionSettings) *DetectionRule { return s.UnknownCA }},
	{"revokedPeer", insights.RevokedPeer, func(s *DetectionSettings) *DetectionRule { return s.RevokedPeer }},
	{"plaintext", insights.Plaintext, func(s *DetectionSettings) *DetectionRule { return s.Plaintext }},
	{"codeChanged", insights.CodeChanged, func(s *DetectionSettings) *DetectionRule { return s.CodeChanged }},
}

// DetectionFieldName returns the key of spec.detections that sets d, ""
// for an unknown detection.
func DetectionFieldName(d insights.Detection) string {
	for _, f := range detectionFields {
		if f.detection == d {
			return f.name
		}
	}
	return ""
}

var severities = []insights.Severity{insights.SeverityLow, insights.SeverityMedium, insights.SeverityHigh, insights.SeverityCritical}

// Validate reports every invalid field of p as FieldErrors.
func (p *DetectionPolicy) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindDetectionPolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	p.compile(&errs)
	return errs.errOrNil()
}

// Compile returns the insights.Policy that p sets, or the FieldErrors of
// Validate.
func (p *DetectionPolicy) Compile() (insights.Policy, error) {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindDetectionPolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	pol := p.compile(&errs)
	if err := errs.errOrNil(); err != nil {
		return insights.Policy{}, err
	}
	if err := pol.Validate(); err != nil {
		// The checks above are the engine's; this is a backstop.
		return insights.Policy{}, FieldErrors{{Path: "spec", Msg: err.Error()}}
	}
	return pol, nil
}

// compile checks the spec, adding what is wrong to errs, and returns the
// policy it sets (meaningful only without errors).
func (p *DetectionPolicy) compile(errs *FieldErrors) insights.Policy {
	spec := &p.Spec
	var pol insights.Policy
	if d := spec.LearningPeriod; d != nil {
		if d.Duration < MinLearningPeriod || d.Duration > MaxLearningPeriod {
			errs.add("spec.learningPeriod", "%v is not within 1m..720h", d.Duration)
		}
		pol.LearningPeriod = d.Duration
	}
	if d := spec.QuarantineDuration; d != nil {
		if d.Duration < MinQuarantineDuration || d.Duration > MaxQuarantineDuration {
			errs.add("spec.quarantineDuration", "%v is not within 1m..168h", d.Duration)
		}
		pol.QuarantineDuration = d.Duration
	}
	if n := len(spec.Exempt); n > MaxDetectionExempt {
		errs.add("spec.exempt", "lists %d identities, at most %d", n, MaxDetectionExempt)
	}
	seen := make(map[spiffeid.ID]int, len(spec.Exempt))
	for i, s := range spec.Exempt {
		path := fmt.Sprintf("spec.exempt[%d]", i)
		id, err := spiffeid.FromString(s)
		if err != nil {
			errs.add(path, "%s is not a SPIFFE ID (spiffe://<trust-domain>/<path>): %v", quote(s), err)
			continue
		}
		if j, dup := seen[id]; dup {
			errs.add(path, "duplicate identity %s (also spec.exempt[%d])", id, j)
			continue
		}
		seen[id] = i
		pol.Exempt = append(pol.Exempt, id)
	}
	if spec.Detections == nil {
		return pol
	}
	for _, f := range detectionFields {
		r := f.rule(spec.Detections)
		if r == nil {
			continue
		}
		if pol.Rules == nil {
			pol.Rules = make(map[insights.Detection]insights.Rule)
		}
		pol.Rules[f.detection] = compileRule(errs, "spec.detections."+f.name, f.detection, r)
	}
	return pol
}

func compileRule(errs *FieldErrors, path string, d insights.Detection, r *DetectionRule) insights.Rule {
	out := insights.Rule{Disabled: r.Disabled}
	switch r.Action {
	case "", DetectionActionAlert:
		out.Action = insights.ActionAlert
	case DetectionActionQuarantine:
		out.Action = insights.ActionQuarantine
	default:
		errs.add(path+".action", "%s is not supported: use Alert or Quarantine", quote(string(r.Action)))
	}
	if r.Severity != "" {
		if !slices.Contains(severities, insights.Severity(r.Severity)) {
			errs.add(path+".severity", "%s is not supported: use low, medium, high or critical", quote(string(r.Severity)))
		}
		out.Severity = insights.Severity(r.Severity)
	}
	if r.Threshold != "" {
		v, err := strconv.ParseFloat(r.Threshold, 64)
		switch {
		case err != nil || !validDecimal(r.Threshold):
			errs.add(path+".threshold", "%s is not a decimal number such as 3 or 0.25", quote(r.Threshold))
		case v <= 0 || v > MaxDetectionThreshold || math.IsNaN(v):
			errs.add(path+".threshold", "%s is not within 0 (excluded)..%g", r.Threshold, float64(MaxDetectionThreshold))
		case d == insights.NewEdge || d == insights.CodeChanged:
			errs.add(path+".threshold", "is not used by this detection: leave it out")
		case d == insights.ErrorSpike && v > 1:
			errs.add(path+".threshold", "%s is a share of failed requests: at most 1 (0.2 is 20%%)", r.Threshold)
		case d == insights.RateSpike && v < 1:
			errs.add(path+".threshold", "%s is a factor over the learnt band's high: at least 1", r.Threshold)
		default:
			out.Threshold = v
		}
	}
	if d := r.Window; d != nil {
		if d.Duration < MinDetectionWindow || d.Duration > MaxDetectionWindow {
			errs.add(path+".window", "%v is not within 1s..24h", d.Duration)
		}
		out.Window = d.Duration
	}
	return out
}

// validDecimal reports whether s is digits with an optional fraction, as
// the CRD's pattern says: no sign, exponent, Inf or NaN.
func validDecimal(s string) bool {
	if len(s) > 16 {
		return false
	}
	dot, digits := false, 0
	for i, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot && i > 0 && i < len(s)-1:
			dot = true
		default:
			return false
		}
	}
	return digits > 0
}
