package insights

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Policy is what the engine detects and how it responds: compiled from
// the mesh's DetectionPolicy resource (api/v1alpha1), or DefaultPolicy
// when there is none.
type Policy struct {
	// LearningPeriod is how long the baseline is learnt from the first
	// report on; zero means DefaultLearningPeriod. Changing it moves
	// LearningEnds of a baseline still learning; a finished baseline
	// stays finished.
	LearningPeriod time.Duration
	// QuarantineDuration is how long a quarantine by a detection lasts;
	// zero means DefaultQuarantineDuration.
	QuarantineDuration time.Duration
	// Exempt identities are never quarantined by a detection (their
	// events say Alert): the mesh's own infrastructure, for example.
	Exempt []spiffeid.ID
	// Rules by detection; a detection missing from the map takes its
	// default rule (DefaultPolicy).
	Rules map[Detection]Rule
}

// Rule is the setting of one detection. Threshold and Window mean, per
// detection (zero takes the default in brackets):
//
//	NewEdge      -                                  Window: how long one edge's event is not repeated [1h]
//	RateSpike    Threshold: factor over the band's high [3]   Window: [1m]
//	ErrorSpike   Threshold: error share that fires, above the band [0.2]  Window: [1m]
//	DenialBurst  Threshold: denials [20]            Window: [30s]
//	RouteScan    Threshold: distinct paths [15]     Window: [30s]
//	UnknownCA, RevokedPeer, Plaintext: Threshold: handshakes or connections [1]  Window: [1m]
//	CodeChanged  -
//
// Window is also how long an event for the same detection and parties is
// not repeated, where the line above says no otherwise.
type Rule struct {
	// Disabled switches the detection off.
	Disabled bool
	// Action is ActionAlert or ActionQuarantine; empty means ActionAlert.
	Action Action
	// Severity overrides the detection's default severity.
	Severity  Severity
	Threshold float64
	Window    time.Duration
}

// Defaults of Policy.
const (
	DefaultLearningPeriod     = time.Hour
	DefaultQuarantineDuration = 15 * time.Minute
)
