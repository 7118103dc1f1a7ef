// Package controlplane is the controller's gRPC edge: the Identity service
// that issues X.509-SVIDs against a CSR after attestation (a single-use join
// token, a process on the controller's Unix socket admitted by a
// WorkloadAttestationPolicy, or the caller's current SVID for renewal),
// recording the attested code digest in the certificate, and the Discovery
// service that registers each connected proxy's workload and streams its
// configuration, and the Telemetry service that takes each proxy's traffic
// summaries into the live traffic graph (internal/telemetry/graph) and
// carries taps (rampart tap) to them and their request heads back (tap.go). ServerCredentials captures the peer process of Unix-socket
// connections for attestation.
//
// This is the only place where errors from the CA, the attestors and the
// model become gRPC status codes, and where refusals are logged and counted.
// TLS verification of callers happens here rather than in the TLS layer, so
// that a refused caller learns why. It depends on internal/ca,
// internal/attest, internal/identity, internal/discovery and
// internal/meshtls; never on the proxy or on Kubernetes client libraries.
package controlplane

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/rampart-mesh/rampart/internal/attest"
	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/discovery"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// DefaultSVIDTTL is the lifetime of issued SVIDs when Config names none.
const DefaultSVIDTTL = 24 * time.Hour

// Config configures a Server.
type Config struct {
	// CA signs the SVIDs. Required.
	CA *ca.CA
	// Tokens holds the join tokens that attest a first start. Required.
	Tokens *identity.TokenStore
	// Policies are the WorkloadAttestationPolicies in force: who may claim
	// an identity over the Unix socket, and which code may receive one.
	// Nil means none: no process is attested by the Unix socket alone,
	// and any code may receive any identity.
	Policies *attest.Policies
	// Model registers workloads and compiles their configuration. Required.
	Model *discovery.Model
	// Bundle verifies the SVIDs callers present. Required.
	Bundle x509bundle.Source
	// SVIDTTL is the lifetime of issued SVIDs; zero means DefaultSVIDTTL.
	SVIDTTL time.Duration
	// Logger receives one line per refusal and per issued SVID. Nil
	// discards them.
	Logger *slog.Logger
	// Registerer receives the server's metrics. Nil means they are not
	// registered anywhere.
	Registerer prometheus.Registerer
	// Now is the clock for certificate verification; nil means time.Now.
	Now func() time.Time
	// Issued, when set, is told of every SVID issued: the chain (leaf
	// first), the code digest it records, and on renewal the certificate
	// the caller presented, which the new one replaces (nil otherwise).
	Issued func(chain []*x509.Certificate, digest string, renewed *x509.Certificate)
	// Revoked, when set, is asked before every SVID is signed: id is the
	// identity to issue, presented the certificate a renewal presents (nil
	// otherwise). An error refuses the call with reason CertifyRevoked
	// and says why to the caller (rampart identity revoke).
	Revoked func(id spiffeid.ID, presented *x509.Certificate) error
	// Revocations, when set, returns the certificates peers refuse now:
	// Watch, Leave and Report refuse a caller whose certificate is among
	// them, and a Watch stream ends when its certificate is revoked.
	Revocations func() *meshtls.RevocationSet
	// ReconnectGrace is how long after the server starts a proxy that was
	// certified before the start (a proxy reconnecting after a controller
	// restart) waits for its first configuration, so that its peers have
	// re-registered and it is not told that their services are empty.
	// Default 3s; negative disables.
	ReconnectGrace time.Duration
	// EndpointGrace is how long a workload stays an endpoint after its
	// Watch stream ends, so that a proxy reconnecting (after renewing its
	// certificate, or a network blip) never flaps out of its services.
	// Default 10s; negative removes it at once.
	EndpointGrace time.Duration
	// Telemetry receives the traffic summaries proxies report on the
	// Telemetry service, once validated. Nil: the service is not served.
	Telemetry *graph.Graph
	// Insights, when set, is told of every accepted telemetry report, its
	// validated security counts, and the code digest of every certificate
	// issued with one, for threat detection. Nil: nobody is.
	Insights Insights
}

// Validate reports whether c can build a Server.
func (c Config) Validate() error {
	var errs []error
	if c.CA == nil {
		errs = append(errs, errors.New("controlplane: CA is required"))
	}
	if c.Tokens == nil {
		errs = append(errs, errors.New("controlplane: token store is required"))
	}
	if c.Policies != nil && c.CA != nil && c.Policies.TrustDomain() != c.CA.TrustDomain() {
		// Policies of another trust domain would apply to no identity
		// issued here: every code would pass.
		errs = append(errs, fmt.Errorf("controlplane: attestation policies are for trust domain %q, the CA issues in %q",
			c.Policies.TrustDomain().Name(), c.CA.TrustDomain().Name()))
	}
	if c.Model == nil {
		errs = append(errs, errors.New("controlplane: model is required"))
	}
	if c.Bundle == nil {
		errs = append(errs, errors.New("controlplane: trust bundle is required"))
	}
	if c.SVIDTTL < 0 {
		errs = append(errs, fmt.Errorf("controlplane: SVID TTL %v is negative", c.SVIDTTL))
	}
	return errors.Join(errs...)
}

// Server implements the Identity and Discovery services.
type Server struct {
	ca          *ca.CA
	tokens      attest.JoinToken
	unix        *attest.Unix
	policies    *attest.Policies
	model       *discovery.Model
	bundle      x509bundle.Source
	ttl         time.Duration
	logger      *slog.Logger
	now         func() time.Time
	metrics     *metrics
	started     time.Time
	grace       time.Duration
	linger      time.Duration
	issued      func(chain []*x509.Certificate, digest string, renewed *x509.Certificate)
	revoked     func(id spiffeid.ID, presented *x509.Certificate) error
	revocations func() *meshtls.RevocationSet
	// telemetry is the live traffic graph; nil without the Telemetry service.
	telemetry *graph.Graph
	tmetrics  *telemetryMetrics
	// insights is told what the server learns; nil: nobody.
	insights Insights
	// taps routes rampart tap between callers and proxies (tap.go).
	taps tapHub
	tapm *tapMetrics

	drainOnce sync.Once
	draining  chan struct{} // closed by Drain
}

// New returns a Server; Register attaches it to a grpc.Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		ca:          cfg.CA,
		tokens:      attest.JoinToken{Tokens: cfg.Tokens},
		policies:    cfg.Policies,
		model:       cfg.Model,
		bundle:      cfg.Bundle,
		ttl:         cfg.SVIDTTL,
		logger:      cfg.Logger,
		now:         cfg.Now,
		grace:       cfg.ReconnectGrace,
		linger:      cfg.EndpointGrace,
		issued:      cfg.Issued,
		revoked:     cfg.Revoked,
		revocations: cfg.Revocations,
		draining:    make(chan struct{}),

		telemetry: cfg.Telemetry,
		insights:  cfg.Insights,
	}
	if s.ttl == 0 {
		s.ttl = DefaultSVIDTTL
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.linger == 0 {
		s.linger = 10 * time.Second
	}
	if s.grace == 0 {
		s.grace = 3 * time.Second
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.policies == nil {
		s.policies = attest.NewPolicies(cfg.CA.TrustDomain())
	}
	unix, err := attest.NewUnix(attest.UnixConfig{TrustDomain: cfg.CA.TrustDomain(), Policies: s.policies})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	s.unix = unix
	s.started = s.now()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if s.tmetrics, err = newTelemetryMetrics(cfg.Registerer, cfg.Telemetry); err != nil {
		return nil, err
	}
	if s.tapm, err = newTapMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// Register registers the Identity and Discovery services on gs, and the
// Telemetry service when Config.Telemetry is set.
func (s *Server) Register(gs grpc.ServiceRegistrar) {
	meshv1.RegisterIdentityServer(gs, identityService{s: s})
	meshv1.RegisterDiscoveryServer(gs, discoveryService{s: s})
	if s.telemetry != nil {
		meshv1.RegisterTelemetryServer(gs, telemetryService{s: s})
	}
}

// Drain ends every Watch stream, now and later, with codes.Unavailable so
// that proxies reconnect to another replica, and lets a graceful stop of the
// grpc.Server complete. Call it before GracefulStop. Idempotent.
func (s *Server) Drain() {
	s.drainOnce.Do(func() { close(s.draining) })
}

// identityService and discoveryService keep the generated interfaces'
// embedding requirements apart.
type identityService struct {
	meshv1.UnimplementedIdentityServer
	s *Server
}

type discoveryService struct {
	meshv1.UnimplementedDiscoveryServer
	s *Server
}

func derChain(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

// peerRevoked returns a *meshtls.RevokedError when the caller's leaf is
// revoked, nil otherwise.
func (s *Server) peerRevoked(leaf *x509.Certificate) error {
	if s.revocations == nil {
		return nil
	}
	return s.revocations().Check(leaf)
}
