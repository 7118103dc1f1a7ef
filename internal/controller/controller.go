// Package controller assembles rampart-controller as one component: the CA
// and join-token store kept in a state directory, the mesh model fed from a
// directory of resource files, the attestation policies, the gRPC control
// plane served over TLS with the controller's own SVID (on TCP and,
// optionally, on a Unix socket where local processes are attested), and the
// admin HTTP listener (metrics, readiness, liveness, the traffic API of the live
// traffic graph). cmd/rampart-controller is a thin wrapper around it,
// and end-to-end tests run it in process.
//
// It wires packages together and owns their lifecycles; the logic lives in
// internal/ca, internal/identity, internal/attest, internal/discovery,
// internal/controlplane and internal/localconfig. It must not depend on the proxy or on
// Kubernetes client libraries (a Kubernetes source will be an adapter
// beside localconfig).
package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/attest"
	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controlplane"
	"github.com/rampart-mesh/rampart/internal/discovery"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/insights/eventlog"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// Defaults of Config.
const (
	DefaultListen          = "127.0.0.1:15012"
	DefaultAdminListen     = "127.0.0.1:15014"
	DefaultTrustDomain     = "rampart.local"
	DefaultSVIDTTL         = 24 * time.Hour
	DefaultServingTTL      = 24 * time.Hour
	DefaultShutdownTimeout = 10 * time.Second
)

// The controller's own identity: spiffe://<td>/ns/SystemNamespace/sa/ServiceAccount.
const (
	SystemNamespace = identity.ControllerNamespace
	ServiceAccount  = identity.ControllerServiceAccount
)

// Files and directories inside Config.StateDir.
const (
	// CADir holds the CA's keys and certificates.
	CADir = "ca"
	// TokensFile is the join-token store.
	TokensFile = "tokens.json"
	// BundleFile is the trust bundle (PEM roots) that proxies bootstrap
	// with: they verify the controller against it before their first
	// Certify.
	BundleFile = "bundle.pem"
)

// ControllerID is the SPIFFE ID the controller serves with in trust domain
// td; proxies accept no other identity from the controller. It is
// identity.ControllerID.
func ControllerID(td spiffeid.TrustDomain) spiffeid.ID { return identity.ControllerID(td) }

// Config configures a Controller. The zero value of every field but StateDir
// is useful.
type Config struct {
	// StateDir holds the CA, the join tokens and the published trust
	// bundle. Required; created (0700) if missing.
	StateDir string
	// ConfigDir is a directory of resource files (Services, Workloads),
	// watched for changes. Empty means none: only the workloads that
	// proxies register.
	ConfigDir string
	// Listen is the gRPC address; empty means DefaultListen.
	Listen string
	// AttestSocket is the path of a Unix socket on which the gRPC API is
	// also served, where a process may obtain an identity without a join
	// token when a WorkloadAttestationPolicy admits its user and code
	// (docs/attestation.md). The socket is created mode AttestSocketMode;
	// a stale socket left by a controller that died is replaced. Empty
	// means none.
	AttestSocket string
	// AdminListen is the admin HTTP address (/metrics, /ready, /live);
	// empty means DefaultAdminListen and "off" disables it.
	AdminListen string
	// TrustDomain of the mesh; empty means DefaultTrustDomain.
	TrustDomain string
	// SVIDTTL is the lifetime of issued SVIDs; zero means DefaultSVIDTTL.
	SVIDTTL time.Duration
	// ServingTTL is the lifetime of the controller's own serving
	// certificate, renewed at half-life; zero means DefaultServingTTL.
	ServingTTL time.Duration
	// ShutdownTimeout bounds the graceful stop of the gRPC server; zero
	// means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Egress says what transparent proxies do with connections to
	// destinations outside the mesh: EgressAllowAny (the default, pass
	// them through), EgressMeshOnly (refuse them) or EgressAllowListed
	// (pass those that the EgressPolicies selecting the workload admit).
	Egress string
	// Logger receives the controller's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock of the CA, the token store and certificate
	// verification; nil means time.Now.
	Now func() time.Time
	// ExternalCA, when set, is a CA run outside Rampart whose root bundle
	// and intermediate (certificate and key) the controller issues with;
	// Rampart then never holds a root key (docs/identity.md). Nil means
	// the CA in StateDir (created on first start), or the external one
	// an earlier start recorded there.
	ExternalCA *ca.External
	// CAPollInterval is how often the CA state in StateDir is read for
	// changes made by `rampart identity` (rotations); zero means
	// DefaultCAPollInterval.
	CAPollInterval time.Duration
	// EventsWebhook, when set, is an http or https URL that receives a
	// POST of every security event's JSON (docs/insights.md);
	// EventsWebhookCA, a PEM file of the roots that verify an https
	// webhook instead of the system's. EventLogMax bounds the event log
	// (zero: eventlog.DefaultMax).
	EventsWebhook   string
	EventsWebhookCA string
	EventLogMax     int
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.SVIDTTL == 0 {
		c.SVIDTTL = DefaultSVIDTTL
	}
	if c.ServingTTL == 0 {
		c.ServingTTL = DefaultServingTTL
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.CAPollInterval == 0 {
		c.CAPollInterval = DefaultCAPollInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// adminDisabled reports whether the admin listener is switched off.
func (c Config) adminDisabled() bool { return c.AdminListen == "off" }

// Validate reports every problem with c, defaults applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("controller: state directory is required"))
	}
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("controller: trust domain %q: %w", c.TrustDomain, err))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("controller: listen address %q: want host:port: %w", c.Listen, err))
	}
	if !c.adminDisabled() {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			errs = append(errs, fmt.Errorf("controller: admin listen address %q: want host:port or \"off\": %w", c.AdminListen, err))
		}
	}
	if c.SVIDTTL < 0 {
		errs = append(errs, fmt.Errorf("controller: SVID TTL %v is negative", c.SVIDTTL))
	}
	if c.ServingTTL < 0 {
		errs = append(errs, fmt.Errorf("controller: serving certificate TTL %v is negative", c.ServingTTL))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("controller: shutdown timeout %v is negative", c.ShutdownTimeout))
	}
	if c.CAPollInterval < 0 {
		errs = append(errs, fmt.Errorf("controller: CA poll interval %v is negative", c.CAPollInterval))
	}
	if e := c.ExternalCA; e != nil && (e.BundleFile == "" || e.CertFile == "" || e.KeyFile == "") {
		errs = append(errs, errors.New("controller: an external CA needs all of its bundle, certificate and key files (--ca-bundle, --ca-cert, --ca-key)"))
	}
	if _, err := egressMode(c.Egress); err != nil {
		errs = append(errs, err)
	}
	if c.EventLogMax < 0 {
		errs = append(errs, fmt.Errorf("controller: event log bound %d is negative", c.EventLogMax))
	}
	if c.EventsWebhook != "" {
		if err := validateWebhookURL(c.EventsWebhook, c.EventsWebhookCA); err != nil {
			errs = append(errs, err)
		}
	} else if c.EventsWebhookCA != "" {
		errs = append(errs, errors.New("controller: an events webhook CA needs an events webhook (--events-webhook)"))
	}
	if c.AttestSocket != "" {
		if err := checkSocketPath(c.AttestSocket); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Egress modes of Config.Egress.
const (
	EgressAllowAny    = "allow-any"
	EgressMeshOnly    = "mesh-only"
	EgressAllowListed = "allow-listed"
)

func egressMode(s string) (meshv1.EgressMode, error) {
	switch s {
	case "", EgressAllowAny:
		return meshv1.EgressMode_EGRESS_ALLOW_ANY, nil
	case EgressMeshOnly:
		return meshv1.EgressMode_EGRESS_MESH_ONLY, nil
	case EgressAllowListed:
		return meshv1.EgressMode_EGRESS_ALLOW_LISTED, nil
	}
	return 0, fmt.Errorf("controller: egress mode %q: want %q, %q or %q", s, EgressAllowAny, EgressMeshOnly, EgressAllowListed)
}

// Controller is rampart-controller.
type Controller struct {
	cfg    Config
	td     spiffeid.TrustDomain
	logger *slog.Logger
	ca     *ca.CA
	tokens *identity.TokenStore
	// policies are the WorkloadAttestationPolicies in force.
	policies *attest.Policies
	model    *discovery.Model
	bundle   *meshtls.Bundle
	svid     *meshtls.SVID
	cp       *controlplane.Server
	graph    *graph.Graph         // the live traffic graph the proxies' telemetry feeds
	watcher  *localconfig.Watcher // nil without a config dir
	// resources is what the model was last given from the watcher.
	resources atomic.Pointer[localconfig.Resources]
	reg       *prometheus.Registry
	reloads   *prometheus.CounterVec
	// issuedTotal counts certificates issued, by kind.
	issuedTotal *prometheus.CounterVec
	// caReloads counts reads of the CA state by result.
	caReloads *prometheus.CounterVec
	// leaves are the leaf certificates in use.
	leaves leafBook
	// servingMu serialises replacements of the serving certificate.
	servingMu sync.Mutex
	// caVersion is the CA version last applied; owned by watchCA.
	caVersion string
	// revoked is the revocation list in force (revoke.go).
	revoked revocations
	// quarantined is the quarantine in force (quarantine.go).
	quarantined quarantines
	// tap is GET /api/v1/tap's token and series (tap.go).
	tap tapAPI
	// insights detects threats; events, detections and webhook are the
	// sinks of its events (insights.go).
	insights   *insights.Engine
	events     *eventlog.Log
	detections *prometheus.CounterVec
	webhook    *webhook

	runOnce   sync.Once
	ready     chan struct{} // closed once both listeners are bound
	serving   atomic.Bool   // /ready answers 200
	addr      string        // set before ready is closed
	adminAddr string        // set before ready is closed
}

// New opens the state directory (creating the CA on first start), publishes
// the trust bundle, loads the config directory and builds the control
// plane. It refuses to start on any problem in the config directory,
// listing them all.
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	td, _ := spiffeid.TrustDomainFromString(cfg.TrustDomain) // checked by Validate
	c := &Controller{
		cfg:    cfg,
		td:     td,
		logger: cfg.Logger,
		ready:  make(chan struct{}),
		reg:    prometheus.NewRegistry(),
		bundle: &meshtls.Bundle{},
		svid:   &meshtls.SVID{},
	}

	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("controller: state directory: %w", err)
	}
	authority, err := ca.Open(ca.Config{
		Dir:         filepath.Join(cfg.StateDir, CADir),
		TrustDomain: td,
		Now:         cfg.Now,
		External:    cfg.ExternalCA,
	})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	c.ca = authority
	if err := c.loadLeaves(); err != nil {
		return nil, err
	}
	c.bundle.SetRoots(td, authority.Roots())
	if err := writeBundle(filepath.Join(cfg.StateDir, BundleFile), authority.Roots()); err != nil {
		return nil, err
	}

	tokens, err := identity.OpenTokenStore(filepath.Join(cfg.StateDir, TokensFile), cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	c.tokens = tokens
	c.policies = attest.NewPolicies(td)

	egress, _ := egressMode(cfg.Egress) // checked by Validate
	model, err := discovery.New(discovery.Config{
		TrustDomain: td,
		Egress:      egress,
		TrustBundle: authority.Roots(),
		Logger:      cfg.Logger.With("component", "discovery"),
	})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	c.model = model

	c.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	c.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_config_reloads_total",
		Help: "Reloads of the config directory by result (ok, error); an error keeps the last good configuration.",
	}, []string{"result"})
	c.reloads.WithLabelValues("ok")
	c.reloads.WithLabelValues("error")
	c.issuedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_certificates_issued_total",
		Help: "Certificates signed by the CA, by kind: workload (SVIDs; refusals are in rampart_controller_certify_total) and serving (the controller's own).",
	}, []string{"kind"})
	c.issuedTotal.WithLabelValues(KindWorkload)
	c.issuedTotal.WithLabelValues(KindServing)
	c.caReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_ca_reloads_total",
		Help: "Reads of the CA state (every --ca-poll-interval) by result (ok, error); an error, such as an external bundle that drops a root still in use, keeps the last good CA state.",
	}, []string{"result"})
	c.caReloads.WithLabelValues("ok")
	c.caReloads.WithLabelValues("error")
	c.reg.MustRegister(c.reloads, c.issuedTotal, c.caReloads, newExpiryCollector(authority))
	if err := c.initRevocations(); err != nil {
		return nil, err
	}
	if err := c.initQuarantine(); err != nil {
		return nil, err
	}
	if err := c.initTap(); err != nil {
		return nil, err
	}

	if cfg.ConfigDir != "" {
		w, err := localconfig.NewWatcher(localconfig.WatcherConfig{
			Dir:    cfg.ConfigDir,
			Logger: cfg.Logger.With("component", "localconfig"),
			OnChange: func(res *localconfig.Resources) {
				// The watcher also calls OnChange with the resources
				// already in force (when Run starts): not a reload.
				if c.resources.Load() == res {
					return
				}
				// All or nothing: attestation policies that cannot be
				// put in force keep the whole last good configuration.
				applyDetection, err := c.checkDetectionPolicy(res)
				if err == nil {
					err = c.SetAttestationPolicies(res.WorkloadAttestationPolicies)
				}
				if err != nil {
					c.reloads.WithLabelValues("error").Inc()
					c.logger.Error("configuration reload failed; keeping the last good configuration",
						"dir", cfg.ConfigDir, "error", err.Error())
					return
				}
				applyDetection()
				c.resources.Store(res)
				c.reloads.WithLabelValues("ok").Inc()
				c.model.SetResources(res)
				c.logger.Info("configuration reloaded", "dir", cfg.ConfigDir,
					"services", len(res.Services), "workloads", len(res.Workloads))
			},
			OnError: func(err error) {
				c.reloads.WithLabelValues("error").Inc()
				c.logger.Error("configuration reload failed; keeping the last good configuration",
					"dir", cfg.ConfigDir, "error", err.Error())
			},
		})
		if err != nil {
			return nil, configDirError(cfg.ConfigDir, err)
		}
		c.watcher = w
		res := w.Current()
		if err := c.SetAttestationPolicies(res.WorkloadAttestationPolicies); err != nil {
			return nil, configDirError(cfg.ConfigDir, err)
		}
		c.resources.Store(res)
		model.SetResources(res)
		cfg.Logger.Info("configuration loaded", "dir", cfg.ConfigDir,
			"services", len(res.Services), "workloads", len(res.Workloads))
	}

	if err := c.initInsights(); err != nil {
		return nil, err
	}
	c.graph, err = graph.New(graph.Config{Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	cp, err := controlplane.New(controlplane.Config{
		CA:         authority,
		Tokens:     tokens,
		Policies:   c.policies,
		Model:      model,
		Bundle:     c.bundle,
		SVIDTTL:    cfg.SVIDTTL,
		Logger:     cfg.Logger.With("component", "controlplane"),
		Registerer: c.reg,
		Now:        cfg.Now,
		Issued:     c.workloadIssued,
		Telemetry:  c.graph,
		Insights:   c.insights,
		Revoked:    c.checkRevoked,
		Revocations: func() *meshtls.RevocationSet {
			c.revoked.mu.Lock()
			defer c.revoked.mu.Unlock()
			return c.revoked.set
		},
	})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	c.cp = cp
	return c, nil
}

// TrustDomain is the mesh's trust domain.
func (c *Controller) TrustDomain() spiffeid.TrustDomain { return c.td }

// Tokens is the join-token store, for in-process callers (tests, an
// embedded CLI) that mint tokens while the controller runs.
func (c *Controller) Tokens() *identity.TokenStore { return c.tokens }

// SetAttestationPolicies replaces the WorkloadAttestationPolicies in force,
// all or nothing: when one is invalid, the policies in force stay and the
// error lists every problem. Call it with every policy of the config
// directory whenever it (re)loads; certificates are checked against the new
// policies from the next Certify on. Safe for concurrent use.
func (c *Controller) SetAttestationPolicies(ps []v1alpha1.WorkloadAttestationPolicy) error {
	if err := c.policies.Set(ps); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	c.logger.Info("attestation policies in force", "policies", len(ps))
	return nil
}

// Model is the mesh model, for in-process inspection.
func (c *Controller) Model() *discovery.Model { return c.model }

// BundlePath is where the PEM trust bundle is published.
func (c *Controller) BundlePath() string { return filepath.Join(c.cfg.StateDir, BundleFile) }

// Registry is the controller's metrics registry, served on /metrics.
func (c *Controller) Registry() *prometheus.Registry { return c.reg }

// Ready is closed once Run has bound its listeners; Addr and AdminAddr are
// set from then on.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Addr is the bound gRPC address, or "" before Ready.
func (c *Controller) Addr() string {
	select {
	case <-c.ready:
		return c.addr
	default:
		return ""
	}
}

// AdminAddr is the bound admin address, or "" before Ready or when the
// admin listener is off.
func (c *Controller) AdminAddr() string {
	select {
	case <-c.ready:
		return c.adminAddr
	default:
		return ""
	}
}

// ConfigError is a config directory that does not load: every problem, one
// "path:line: message" a line.
type ConfigError struct {
	Dir string
	Err error // the *localconfig.LoadError, or why the directory could not be read
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	var le *localconfig.LoadError
	if !errors.As(e.Err, &le) {
		fmt.Fprintf(&b, "controller: config directory %s: %v", e.Dir, e.Err)
		return b.String()
	}
	fmt.Fprintf(&b, "controller: config directory %s has %d problem(s); fix them and start again:", e.Dir, len(le.Problems))
	for _, p := range le.Problems {
		p.File = filepath.Join(e.Dir, p.File)
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *ConfigError) Unwrap() error { return e.Err }

func configDirError(dir string, err error) error {
	return &ConfigError{Dir: dir, Err: err}
}

// writeBundle publishes roots as PEM at path, atomically, readable by all:
// it holds only public certificates.
func writeBundle(path string, roots []*x509.Certificate) error {
	var b strings.Builder
	for _, r := range roots {
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw}); err != nil {
			return fmt.Errorf("controller: encode trust bundle: %w", err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("controller: write trust bundle: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return fmt.Errorf("controller: write trust bundle: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("controller: write trust bundle: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("controller: write trust bundle: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("controller: write trust bundle: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("controller: write trust bundle: %w", err)
	}
	return nil
}

// issueServingSVID makes a fresh key and has the CA certify it as the
// controller, valid for ServingTTL, for DNS name localhost, 127.0.0.1 and the
// listen IP.
func (c *Controller) issueServingSVID(listenHost string) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("controller: serving key: %w", err)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	if a, err := netip.ParseAddr(listenHost); err == nil && !a.IsUnspecified() && a != netip.MustParseAddr("127.0.0.1") {
		ips = append(ips, net.IP(a.Unmap().AsSlice()))
	}
	id := ControllerID(c.td)
	chain, err := c.ca.IssueServing(key.Public(), id, []string{"localhost"}, ips, c.cfg.ServingTTL)
	if err != nil {
		return nil, fmt.Errorf("controller: serving certificate: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}
