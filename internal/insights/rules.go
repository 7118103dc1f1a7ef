package insights

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Bounds of a Policy, checked by Validate.
const (
	// MaxLearningPeriod is the longest learning period a policy may set.
	MaxLearningPeriod = 30 * 24 * time.Hour
	// MaxQuarantineDuration is the longest quarantine a detection may
	// impose; longer isolation is an operator's decision (rampart
	// quarantine add).
	MaxQuarantineDuration = 7 * 24 * time.Hour
	// MinWindow and MaxWindow bound a rule's Window.
	MinWindow = time.Second
	MaxWindow = 24 * time.Hour
)

// defaultRule is the rule of each detection when the policy sets none.
var defaultRules = map[Detection]Rule{
	NewEdge:     {Action: ActionAlert, Severity: SeverityMedium, Window: time.Hour},
	RateSpike:   {Action: ActionAlert, Severity: SeverityMedium, Threshold: 3, Window: time.Minute},
	ErrorSpike:  {Action: ActionAlert, Severity: SeverityLow, Threshold: 0.2, Window: time.Minute},
	DenialBurst: {Action: ActionAlert, Severity: SeverityHigh, Threshold: 20, Window: 30 * time.Second},
	RouteScan:   {Action: ActionAlert, Severity: SeverityHigh, Threshold: 15, Window: 30 * time.Second},
	UnknownCA:   {Action: ActionAlert, Severity: SeverityHigh, Threshold: 1, Window: time.Minute},
	RevokedPeer: {Action: ActionAlert, Severity: SeverityCritical, Threshold: 1, Window: time.Minute},
	Plaintext:   {Action: ActionAlert, Severity: SeverityMedium, Threshold: 1, Window: time.Minute},
	CodeChanged: {Action: ActionAlert, Severity: SeverityHigh},
}

// DefaultRule returns the default rule of detection d (the zero Rule for
// an unknown detection).
func DefaultRule(d Detection) Rule { return defaultRules[d] }

// DefaultPolicy returns the policy in force when the mesh has no
// DetectionPolicy: a learning period of DefaultLearningPeriod, every
// detection enabled with its default rule, every action ActionAlert.
func DefaultPolicy() Policy {
	p := Policy{
		LearningPeriod:     DefaultLearningPeriod,
		QuarantineDuration: DefaultQuarantineDuration,
		Rules:              make(map[Detection]Rule, len(defaultRules)),
	}
	for d, r := range defaultRules {
		p.Rules[d] = r
	}
	return p
}

// Validate reports what is wrong with p, naming the field to fix.
func (p Policy) Validate() error {
	var errs []error
	if p.LearningPeriod < 0 || p.LearningPeriod > MaxLearningPeriod {
		errs = append(errs, fmt.Errorf("learning period %v: must be between 0 (default %v) and %v", p.LearningPeriod, DefaultLearningPeriod, MaxLearningPeriod))
	}
	if p.QuarantineDuration < 0 || p.QuarantineDuration > MaxQuarantineDuration {
		errs = append(errs, fmt.Errorf("quarantine duration %v: must be between 0 (default %v) and %v", p.QuarantineDuration, DefaultQuarantineDuration, MaxQuarantineDuration))
	}
	for i, id := range p.Exempt {
		if id.IsZero() {
			errs = append(errs, fmt.Errorf("exempt[%d]: empty SPIFFE ID", i))
		}
	}
	for d, r := range p.Rules {
		if _, ok := defaultRules[d]; !ok {
			errs = append(errs, fmt.Errorf("rule %q: unknown detection (known: %v)", d, Detections))
			continue
		}
		if err := r.validate(d); err != nil {
			errs = append(errs, fmt.Errorf("rule %q: %w", d, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("insights: invalid policy: %w", errors.Join(errs...))
	}
	return nil
}

func (r Rule) validate(d Detection) error {
	switch r.Action {
	case "", ActionAlert, ActionQuarantine:
	default:
		return fmt.Errorf("action %q: must be %q or %q", r.Action, ActionAlert, ActionQuarantine)
	}
	switch r.Severity {
	case "", SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical:
	default:
		return fmt.Errorf("severity %q: must be low, medium, high or critical", r.Severity)
	}
	if math.IsNaN(r.Threshold) || math.IsInf(r.Threshold, 0) || r.Threshold < 0 {
		return fmt.Errorf("threshold %v: must be a finite number, 0 or more (0 takes the default)", r.Threshold)
	}
	switch d {
	case ErrorSpike:
		if r.Threshold > 1 {
			return fmt.Errorf("threshold %v: an error share, must be at most 1", r.Threshold)
		}
	case RateSpike:
		if r.Threshold != 0 && r.Threshold < 1 {
			return fmt.Errorf("threshold %v: a factor over the band's high, must be at least 1", r.Threshold)
		}
	case DenialBurst, RouteScan, UnknownCA, RevokedPeer, Plaintext:
		if r.Threshold > 1e9 {
			return fmt.Errorf("threshold %v: must be at most 1e9", r.Threshold)
		}
	}
	if r.Window != 0 && (r.Window < MinWindow || r.Window > MaxWindow) {
		return fmt.Errorf("window %v: must be 0 (default) or between %v and %v", r.Window, MinWindow, MaxWindow)
	}
	return nil
}

// rule is a Rule with its defaults filled in.
type rule struct {
	enabled   bool
	action    Action
	severity  Severity
	threshold float64
	window    time.Duration
}

// policy is a validated Policy with its defaults filled in.
type policy struct {
	learning   time.Duration
	quarantine time.Duration
	exempt     map[string]bool
	rules      map[Detection]rule
	// maxWindow is the longest window of the edge detections (rate and
	// error spikes), which the per-edge windows cover.
	edgeWindow time.Duration
}

func compilePolicy(p Policy) policy {
	c := policy{
		learning:   p.LearningPeriod,
		quarantine: p.QuarantineDuration,
		exempt:     make(map[string]bool, len(p.Exempt)),
		rules:      make(map[Detection]rule, len(defaultRules)),
	}
	if c.learning == 0 {
		c.learning = DefaultLearningPeriod
	}
	if c.quarantine == 0 {
		c.quarantine = DefaultQuarantineDuration
	}
	for _, id := range p.Exempt {
		c.exempt[id.String()] = true
	}
	for d, def := range defaultRules {
		r, ok := p.Rules[d]
		if !ok {
			r = def
		}
		cr := rule{enabled: !r.Disabled, action: r.Action, severity: r.Severity, threshold: r.Threshold, window: r.Window}
		if cr.action == "" {
			cr.action = ActionAlert
		}
		if cr.severity == "" {
			cr.severity = def.Severity
		}
		if cr.threshold == 0 {
			cr.threshold = def.Threshold
		}
		if cr.window == 0 {
			cr.window = def.Window
		}
		c.rules[d] = cr
	}
	c.edgeWindow = max(c.rules[RateSpike].window, c.rules[ErrorSpike].window)
	return c
}
