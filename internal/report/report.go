// Package report assembles Rampart's compliance report: the share of
// traffic over mutual TLS and the plaintext edges, policy coverage of every
// workload and edge, trust anchors and certificates with their expiry,
// the attestation status of every workload, and the denials and
// detections of a period, with a summary of findings on top. It renders
// the report as JSON, as one self-contained printable HTML page, and as
// PDF through a headless Chromium.
//
// Assembly takes plain inputs, so the package is tested without a
// controller; the controller (internal/controller/report.go) gathers them.
// It must not depend on the controller, the control plane or the proxy.
package report

import (
	"time"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/discovery"
	"github.com/rampart-mesh/rampart/internal/insights"
)

// Version is the version of the report's JSON format.
const Version = 1

// Bounds of the period a report covers.
const (
	MinPeriod     = time.Hour
	MaxPeriod     = 7 * 24 * time.Hour
	DefaultPeriod = 24 * time.Hour
)

// RecentEvents is how many events a report lists, the most recent first.
const RecentEvents = 50

// Inputs is everything a report is made from.
type Inputs struct {
	// Now is when the report is made; Period how far back it looks.
	Now    time.Time
	Period time.Duration
	// TrustDomain of the mesh.
	TrustDomain string
	// Totals is the traffic of every edge over the period, from the
	// engine's hourly ledger.
	Totals []insights.EdgeTotal
	// Workloads is every workload the mesh knows, with the policies
	// that select it.
	Workloads []discovery.WorkloadCoverage
	// Identity is the trust anchors, the issuer and the certificates in
	// use, with the expiry warnings.
	Identity Identity
	// RevokedIdentities are the SPIFFE IDs revoked (not released);
	// RevokedSerials the serials of revoked certificates.
	RevokedIdentities map[string]string // SPIFFE ID -> reason
	RevokedSerials    map[string]bool
	// Quarantined are the identities in quarantine; nil when quarantine
	// is not available, and the report then has no quarantine column.
	Quarantined []Quarantined
	// Events are the detections of the period, in any order.
	Events []insights.Event
}

// Identity is the CA's side of the report.
type Identity struct {
	TrustAnchors []Cert    `json:"trustAnchors"`
	Issuer       Cert      `json:"issuer"`
	Certificates []ca.Leaf `json:"-"`
	// Warnings are the expiry warnings of the trust anchors and issuer
	// (30 days: WARNING, 7 days: CRITICAL).
	Warnings []string `json:"warnings"`
}

// Cert is a CA certificate.
type Cert struct {
	Serial   string    `json:"serial"`
	Subject  string    `json:"subject"`
	Role     string    `json:"role,omitempty"`
	NotAfter time.Time `json:"notAfter"`
	// DaysLeft is the whole days until NotAfter (negative once expired).
	DaysLeft int `json:"daysLeft"`
}

// Quarantined is one identity in quarantine.
type Quarantined struct {
	SPIFFEID string    `json:"spiffeId"`
	Until    time.Time `json:"until"`
	Reason   string    `json:"reason,omitempty"`
	Since    time.Time `json:"since"`
	By       string    `json:"by,omitempty"`
}

// Report is the compliance report, as `rampart report --json` writes it.
type Report struct {
	Version     int         `json:"version"`
	GeneratedAt time.Time   `json:"generatedAt"`
	TrustDomain string      `json:"trustDomain"`
	Period      Period      `json:"period"`
	Summary     Summary     `json:"summary"`
	Encryption  Encryption  `json:"encryption"`
	Coverage    Coverage    `json:"coverage"`
	Identity    IdentityRep `json:"identity"`
	Attestation Attestation `json:"attestation"`
	Denials     Denials     `json:"denials"`
	Detections  Detections  `json:"detections"`
}

// Period is what the report covers.
type Period struct {
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	Duration string    `json:"duration"`
	// Granularity is "hour": traffic comes from an hourly ledger, so the
	// first hour counted is the whole hour that contains Since.
	Granularity string `json:"granularity"`
	Note        string `json:"note"`
}

// Summary holds the headline figures and the findings.
type Summary struct {
	Requests     uint64 `json:"requests"`
	MTLSRequests uint64 `json:"mtlsRequests"`
	// MTLSShare is MTLSRequests / Requests, null without requests.
	MTLSShare              *float64  `json:"mtlsShare"`
	PlaintextEdges         int       `json:"plaintextEdges"`
	Workloads              int       `json:"workloads"`
	WorkloadsWithoutPolicy int       `json:"workloadsWithoutPolicy"`
	EdgesWithoutPolicy     int       `json:"edgesWithoutPolicy"`
	Denied                 uint64    `json:"denied"`
	Detections             int       `json:"detections"`
	Findings               []Finding `json:"findings"`
}

// Finding is one thing an auditor should know: what, why it matters and
// what to do.
type Finding struct {
	Severity insights.Severity `json:"severity"`
	What     string            `json:"what"`
	Why      string            `json:"why"`
	Do       string            `json:"do"`
}

// Edge is one observed edge's traffic over the period.
type Edge struct {
	Source      string `json:"source"`
	SourceID    string `json:"sourceSpiffeId,omitempty"`
	Destination string `json:"destination"`
	Service     string `json:"service,omitempty"`
	MTLS        bool   `json:"mtls"`
	Requests    uint64 `json:"requests"`
	Denied      uint64 `json:"denied"`
}

// Encryption is the share of requests over mutual TLS.
type Encryption struct {
	Requests       uint64   `json:"requests"`
	MTLSRequests   uint64   `json:"mtlsRequests"`
	Plaintext      uint64   `json:"plaintextRequests"`
	MTLSShare      *float64 `json:"mtlsShare"`
	PlaintextEdges []Edge   `json:"plaintextEdges"`
}

// Coverage is the authorization policy of every workload.
type Coverage struct {
	Workloads []discovery.WorkloadCoverage `json:"workloads"`
	// WorkloadsWithoutPolicy are "namespace/name" of the workloads that
	// no ALLOW policy selects and whose default is not deny-all.
	WorkloadsWithoutPolicy []string `json:"workloadsWithoutPolicy"`
	// EdgesWithoutPolicy are the observed edges whose destination no
	// ALLOW policy selects.
	EdgesWithoutPolicy []Edge `json:"edgesWithoutPolicy"`
}

// IdentityRep is the identity section of the report.
type IdentityRep struct {
	TrustAnchors []Cert   `json:"trustAnchors"`
	Issuer       Cert     `json:"issuer"`
	Warnings     []string `json:"warnings"`
	// Certificates are the workload certificates in use.
	Certificates []LeafCert `json:"certificates"`
}

// LeafCert is one workload certificate in use.
type LeafCert struct {
	Serial     string    `json:"serial"`
	SPIFFEID   string    `json:"spiffeId"`
	CodeDigest string    `json:"codeDigest,omitempty"`
	NotAfter   time.Time `json:"notAfter"`
	Revoked    bool      `json:"revoked"`
}

// Attestation is the attestation status of every workload.
type Attestation struct {
	// QuarantineKnown says the Quarantined column is filled: false when
	// the controller has no quarantine.
	QuarantineKnown bool                  `json:"quarantineKnown"`
	Workloads       []WorkloadAttestation `json:"workloads"`
}

// Attestation statuses.
const (
	StatusAttested      = "attested"
	StatusJoinTokenOnly = "join token only"
	StatusNoCertificate = "no certificate in use"
)

// WorkloadAttestation is one workload's attestation status.
type WorkloadAttestation struct {
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	SPIFFEID  string `json:"spiffeId"`
	// Status is StatusAttested (Digests lists the attested code),
	// StatusJoinTokenOnly or StatusNoCertificate.
	Status           string     `json:"status"`
	Digests          []string   `json:"digests,omitempty"`
	Revoked          bool       `json:"revoked"`
	RevokedReason    string     `json:"revokedReason,omitempty"`
	Quarantined      bool       `json:"quarantined"`
	QuarantinedUntil *time.Time `json:"quarantinedUntil,omitempty"`
}

// Denials are the authorization denials of the period.
type Denials struct {
	Denied        uint64               `json:"denied"`
	RateLimited   uint64               `json:"rateLimited"`
	ByDestination []DestinationDenials `json:"byDestination"`
}

// DestinationDenials are one destination's denials.
type DestinationDenials struct {
	Destination string `json:"destination"`
	Requests    uint64 `json:"requests"`
	Denied      uint64 `json:"denied"`
	RateLimited uint64 `json:"rateLimited"`
}

// Detections are the events of the period.
type Detections struct {
	Total       int              `json:"total"`
	ByDetection []Count          `json:"byDetection"`
	BySeverity  []Count          `json:"bySeverity"`
	Recent      []insights.Event `json:"recent"`
}

// Count is a number of events with one key.
type Count struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}
