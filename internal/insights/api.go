package insights

// This file is the contract between the engine (engine.go, baseline.go,
// detect*.go) and the controller that feeds it and serves what it learns.

import (
	"context"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// Config configures an Engine. The zero value of every field is useful.
type Config struct {
	// Now is the engine's clock; nil means time.Now.
	Now func() time.Time
	// Policy is the thresholds and responses in force until SetPolicy;
	// the zero Policy means DefaultPolicy().
	Policy Policy
	// Store keeps the baseline across restarts; nil keeps it in memory.
	Store Store
	// OnEvent receives every event, in order, from one goroutine at a
	// time, never under the engine's locks. It must not block for long:
	// the controller queues events for its sinks. Nil drops them.
	OnEvent func(Event)
	// Quarantine isolates id until the given time, for an event whose
	// action is ActionQuarantine; it returns an error when it could not
	// (the event then says Alert, and the error is logged). Nil means
	// quarantine is not available: every action is ActionAlert.
	Quarantine func(id spiffeid.ID, until time.Time, reason string) error
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
}

// Store persists what the engine learns. Load returns (nil, nil) when
// nothing was saved yet.
type Store interface {
	Load() (*State, error)
	Save(*State) error
}

// State is what a Store keeps: the baseline and the hourly ledger of
// traffic that compliance reports are made from. Its exact shape is the
// engine's (engine.go); FileStore saves it as JSON.
type State struct {
	Baseline Snapshot `json:"baseline"`
	// Ledger holds one entry per edge and hour, for at most
	// LedgerRetention, the oldest hours dropped first.
	Ledger []EdgeHour `json:"ledger,omitempty"`
}

// EdgeTotal is the traffic of one edge over a period, as its
// destination's proxy counted it (its source's, when the destination is
// outside the mesh or did not report).
type EdgeTotal struct {
	Source      Party  `json:"source"`
	Destination Party  `json:"destination"`
	Service     string `json:"service,omitempty"`
	MTLS        bool   `json:"mtls"`
	Requests    uint64 `json:"requests"`
	Failures    uint64 `json:"failures"`
	Denied      uint64 `json:"denied"`
	RateLimited uint64 `json:"rateLimited"`
	// First and Last bound the hours the edge carried traffic in.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// SecurityObservation is one SecurityCount of a proxy's report, validated
// by the control plane.
type SecurityObservation struct {
	// Reporter is the verified identity of the proxy that saw it, and
	// Namespace/Workload its workload.
	Reporter            spiffeid.ID
	Namespace, Workload string
	Kind                SecurityKind
	PeerIP              string
	// PresentedID is what the peer's certificate claimed (zero when
	// nothing); Serial and Issuer describe that certificate.
	PresentedID    spiffeid.ID
	Serial, Issuer string
	Port           uint32
	Count          uint64
}

// SecurityKind mirrors meshv1.SecurityKind without depending on the
// control-plane API.
type SecurityKind int

// Security kinds.
const (
	TLSUnknownCA SecurityKind = iota + 1
	TLSRevoked
	TLSBadCertificate
	PlaintextOnStrict
	TLSQuarantined
)

// Snapshot is the learnt baseline: what the Store saves, what GET
// /api/v1/baseline answers, what `rampart policy recommend` reads.
type Snapshot struct {
	// Version is the format's version, 1.
	Version int `json:"version"`
	// LearningStarted and LearningEnds bound the learning period;
	// Learning is true until LearningEnds has passed.
	LearningStarted time.Time `json:"learningStarted"`
	LearningEnds    time.Time `json:"learningEnds"`
	Learning        bool      `json:"learning"`
	// Workloads are the destinations, sorted by namespace then workload.
	Workloads []WorkloadBaseline `json:"workloads"`
}

// WorkloadBaseline is what one workload (by identity and name) was
// called by while learning, as its own proxy saw it (inbound edges are
// authoritative: the identity of each caller is verified there).
type WorkloadBaseline struct {
	SPIFFEID  string `json:"spiffeId"`
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	// Labels are the workload's labels when the baseline was served (the
	// controller fills them from discovery; they are not saved).
	Labels map[string]string `json:"labels,omitempty"`
	// Digests are the code digests the workload attested with.
	Digests []string `json:"digests,omitempty"`
	// Callers are sorted by SPIFFE ID; a plaintext caller (no identity)
	// is listed with an empty SPIFFEID and MTLS false.
	Callers []Caller `json:"callers"`
	// CallersOverflow says callers past the bound were not kept.
	CallersOverflow bool `json:"callersOverflow,omitempty"`
}

// Caller is one source of a workload's traffic.
type Caller struct {
	SPIFFEID  string    `json:"spiffeId,omitempty"`
	Workload  string    `json:"workload,omitempty"`
	Services  []string  `json:"services,omitempty"`
	MTLS      bool      `json:"mtls"`
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
	Requests  uint64    `json:"requests"`
	Failures  uint64    `json:"failures"`
	Denied    uint64    `json:"denied"`
	// Rate is the learnt band of requests per second over report
	// intervals; ErrorRate that of the share of failed requests.
	Rate      Band `json:"rate"`
	ErrorRate Band `json:"errorRate"`
	// Routes are sorted by path then method.
	Routes []Route `json:"routes,omitempty"`
	// RoutesOverflow says routes past the bound (or requests the proxies
	// could not attribute to a route) were not kept: a policy made from
	// Routes alone would deny some of this caller's traffic.
	RoutesOverflow bool `json:"routesOverflow,omitempty"`
}

// Band summarises a series of observations.
type Band struct {
	Samples uint64  `json:"samples"`
	Mean    float64 `json:"mean"`
	StdDev  float64 `json:"stdDev"`
	Max     float64 `json:"max"`
}

// Route is one method and path (as the proxies report it: at most three
// segments, Truncated when the requests went deeper) with its counts by
// status class.
type Route struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Truncated bool   `json:"truncated,omitempty"`
	Requests  uint64 `json:"requests"`
	// Refused counts 403 and 404 answers (status class 4 as reported).
	Refused uint64 `json:"refused,omitempty"`
}

// The Engine's methods, implemented in engine.go:
//
//	New(cfg Config) (*Engine, error)
//	(*Engine).Run(ctx context.Context) error
//	(*Engine).ObserveReport(r graph.Report)
//	(*Engine).ObserveSecurity(obs []SecurityObservation)
//	(*Engine).ObserveAttestation(id spiffeid.ID, workload, digest string)
//	(*Engine).SetPolicy(p Policy) error
//	(*Engine).Snapshot() *Snapshot
//	(*Engine).Totals(since time.Time) []EdgeTotal   // from the ledger, hour granularity
//	(*Engine).Stats() Stats                         // counters for the controller's metrics
//
// and Policy, DefaultPolicy and Policy.Validate in policy.go.
var (
	_ = context.Background
	_ graph.Report
)

// EdgeHour is one edge's traffic in one hour of the ledger.
type EdgeHour struct {
	// Hour is the start of the hour, UTC.
	Hour        time.Time `json:"hour"`
	Source      Party     `json:"source"`
	Destination Party     `json:"destination"`
	Service     string    `json:"service,omitempty"`
	MTLS        bool      `json:"mtls"`
	Requests    uint64    `json:"requests"`
	Failures    uint64    `json:"failures"`
	Denied      uint64    `json:"denied"`
	RateLimited uint64    `json:"rateLimited"`
}
