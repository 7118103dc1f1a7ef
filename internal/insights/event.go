package insights

import (
	"time"
)

// Detection names one kind of detection. They are the "detection" label of
// the controller's metrics, the keys of DetectionPolicy.spec.detections and
// the "detection" field of an Event.
type Detection string

// Detections.
const (
	// NewEdge: after learning, a source identity calls a workload it never
	// called while the baseline was learnt.
	NewEdge Detection = "new_edge"
	// RateSpike: an edge's request rate beyond its learnt band.
	RateSpike Detection = "rate_spike"
	// ErrorSpike: an edge's error rate (5xx and failed requests) beyond
	// its learnt band.
	ErrorSpike Detection = "error_spike"
	// DenialBurst: many authorization denials of one source identity's
	// requests in a short window.
	DenialBurst Detection = "denial_burst"
	// RouteScan: one source requesting many distinct paths of a workload,
	// most of them answered 403 or 404.
	RouteScan Detection = "route_scan"
	// UnknownCA: handshakes with a certificate that chains to no trusted
	// root.
	UnknownCA Detection = "tls_unknown_ca"
	// RevokedPeer: handshakes with a revoked certificate or identity.
	RevokedPeer Detection = "tls_revoked"
	// Plaintext: plaintext connections or requests refused on a STRICT
	// port.
	Plaintext Detection = "plaintext_on_strict"
	// CodeChanged: a workload attested with a code digest other than the
	// one it attested with before.
	CodeChanged Detection = "code_changed"
)

// Detections lists every Detection, in the order documentation and
// metrics list them.
var Detections = []Detection{
	NewEdge, RateSpike, ErrorSpike, DenialBurst, RouteScan,
	UnknownCA, RevokedPeer, Plaintext, CodeChanged,
}

// Severity ranks events.
type Severity string

// Severities, from least to most severe.
const (
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

// Action is the response to a detection.
type Action string

// Actions.
const (
	// ActionAlert records and sends the event, nothing more.
	ActionAlert Action = "Alert"
	// ActionQuarantine also isolates the source identity for the
	// policy's quarantine duration (rampart quarantine).
	ActionQuarantine Action = "Quarantine"
)

// Party is one side of an event. SPIFFEID is verified, except in the
// events of failed handshakes (UnknownCA, RevokedPeer), where it is what
// the peer's certificate claimed (Claimed is then set).
type Party struct {
	SPIFFEID  string `json:"spiffeId,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Workload  string `json:"workload,omitempty"`
	IP        string `json:"ip,omitempty"`
	// Claimed says SPIFFEID was presented, not verified.
	Claimed bool `json:"claimed,omitempty"`
}

// Event is one detection.
type Event struct {
	// ID is 16 lower-case hexadecimal digits, unique per event.
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Detection Detection `json:"detection"`
	Severity  Severity  `json:"severity"`
	// Source is who did it; Destination the workload it was done to, when
	// there is one.
	Source      Party  `json:"source"`
	Destination *Party `json:"destination,omitempty"`
	// Summary is one line for people: what happened, with the numbers.
	Summary  string   `json:"summary"`
	Evidence Evidence `json:"evidence"`
	// Action is the response taken; QuarantinedUntil is set when it
	// quarantined the source.
	Action           Action     `json:"action"`
	QuarantinedUntil *time.Time `json:"quarantinedUntil,omitempty"`
}

// Evidence holds the figures an event was decided on; the fields that do
// not apply to a detection are left empty.
type Evidence struct {
	// WindowSeconds is the span the figures cover.
	WindowSeconds float64 `json:"windowSeconds,omitempty"`
	Requests      uint64  `json:"requests,omitempty"`
	Failures      uint64  `json:"failures,omitempty"`
	Denied        uint64  `json:"denied,omitempty"`
	// Rate and ErrorRate are what was observed (requests per second, share
	// of failed requests); Baseline* the learnt mean and BandHigh the
	// highest value the learnt band admits.
	Rate              float64 `json:"rate,omitempty"`
	BaselineRate      float64 `json:"baselineRate,omitempty"`
	ErrorRate         float64 `json:"errorRate,omitempty"`
	BaselineErrorRate float64 `json:"baselineErrorRate,omitempty"`
	BandHigh          float64 `json:"bandHigh,omitempty"`
	// DistinctPaths and RefusedShare describe a route scan; Paths lists up
	// to 10 of the paths (as the proxies reported them: three segments).
	DistinctPaths int      `json:"distinctPaths,omitempty"`
	RefusedShare  float64  `json:"refusedShare,omitempty"`
	Paths         []string `json:"paths,omitempty"`
	// Handshakes counts failed handshakes or refused plaintext
	// connections; Serial and Issuer describe the presented certificate;
	// Port is the refusing port.
	Handshakes uint64 `json:"handshakes,omitempty"`
	Serial     string `json:"serial,omitempty"`
	Issuer     string `json:"issuer,omitempty"`
	Port       uint32 `json:"port,omitempty"`
	// Digest and PreviousDigest are the code digests of a CodeChanged
	// event ("sha256:<hex>").
	Digest         string `json:"digest,omitempty"`
	PreviousDigest string `json:"previousDigest,omitempty"`
	// Service is the "namespace/name" the requests were for, when known.
	Service string `json:"service,omitempty"`
	// Reporter is the workload whose proxy saw it ("namespace/name").
	Reporter string `json:"reporter,omitempty"`
}
