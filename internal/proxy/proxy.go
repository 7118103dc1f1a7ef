// Package proxy assembles rampart-proxy: it obtains and renews the
// workload's SVID from the controller, keeps the discovery stream open,
// serves the tunnel (inbound), the app-facing listeners (outbound) and the
// admin listener, and drains gracefully.
//
// When the controller is away the proxy keeps serving on its last
// configuration and certificate (fail static) and reconnects with backoff.
//
// The proxy must never import Kubernetes packages, the controller or the
// resource types in api/: the control-plane protocol (internal/meshapi) is
// its only contract with the controller. A test enforces this.
package proxy

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/accesslog"
	"github.com/rampart-mesh/rampart/internal/proxy/admin"
	"github.com/rampart-mesh/rampart/internal/proxy/egress"
	"github.com/rampart-mesh/rampart/internal/proxy/inbound"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/outbound"
	"github.com/rampart-mesh/rampart/internal/proxy/tap"
	"github.com/rampart-mesh/rampart/internal/proxy/telemetry"
	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// Defaults.
const (
	DefaultTunnelListen = "127.0.0.1:15008"
	DefaultAdminListen  = "127.0.0.1:15000"
	DefaultController   = "127.0.0.1:15012"
	DefaultDrainTimeout = 10 * time.Second
	// Ports of the listeners that iptables redirection points at, in
	// transparent mode.
	DefaultOutboundListen = "127.0.0.1:15001"
	DefaultInboundListen  = "0.0.0.0:15006"
)

// Config configures a Proxy.
type Config struct {
	// Controller is the controller's gRPC address.
	Controller string
	// TrustBundle holds the roots that the controller's certificate must
	// chain to on first contact. Required; see LoadBundle.
	TrustBundle []*x509.Certificate
	// TrustDomain of the mesh; empty means the one named by the trust
	// bundle's root.
	TrustDomain string
	// JoinToken attests the workload on first start.
	JoinToken string
	// AppPID is the process ID of the app this proxy runs as its child
	// (rampart-proxy -- <command>); zero when it runs none. Over the
	// controller's Unix attestation socket it is sent with every Certify,
	// and the controller measures that process as the workload's code.
	AppPID int
	// Namespace and ServiceAccount name the identity the proxy asks for:
	// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
	Namespace      string
	ServiceAccount string
	// Workload names this instance; Labels select it into services.
	Workload string
	Labels   map[string]string
	// TunnelListen is where peers reach this proxy; Advertise is the
	// address given to them (default: the bound TunnelListen address).
	TunnelListen string
	Advertise    string
	AdminListen  string
	// Address is the workload's own IP address (its pod IP), by which
	// transparent peers may dial it directly; empty means the host of
	// Advertise.
	Address   string
	Upstreams []outbound.Upstream
	// OutboundListen, when set, enables transparent mode: it is where
	// iptables redirects the app's outbound connections (see
	// `rampart-proxy iptables`), and the proxy then learns every service
	// of the mesh rather than only its upstreams.
	OutboundListen string
	// InboundListen, when set, is where iptables redirects inbound
	// connections that do not come through the tunnel; they are refused
	// under strict mTLS and counted, and served without an identity on
	// the ports that the authorization policy makes PERMISSIVE.
	InboundListen string
	// MaxPlaintextConns bounds the plaintext connections served at once
	// on PERMISSIVE ports; zero means inbound.DefaultMaxPlaintextConns.
	MaxPlaintextConns int
	// EgressResolver resolves the host names of egress rules, in
	// transparent mode; nil is the system's resolver.
	EgressResolver egress.Resolver
	// DrainDelay is how long the proxy keeps serving after it starts
	// draining (readiness false, endpoint withdrawn from the controller)
	// before it stops accepting, so that peers learn of its departure
	// first. Zero stops accepting at once.
	DrainDelay time.Duration
	// DrainTimeout bounds graceful shutdown.
	DrainTimeout time.Duration
	// TelemetryInterval is how often the proxy sends its per-edge traffic
	// summary to the controller; zero means telemetry.DefaultInterval,
	// negative turns telemetry off.
	TelemetryInterval time.Duration
	// Tracing configures a span per HTTP request, exported over OTLP
	// (package tracing); without an Endpoint (or Exporter) tracing is
	// off. The proxy fills in its workload, namespace, identity, metrics
	// registry and logger.
	Tracing tracing.Config
	// AccessLog receives a JSON line per HTTP request (package
	// accesslog); nil writes none.
	AccessLog io.Writer
	Logger    *slog.Logger
	// Now is the clock for certificate checks and renewal; nil is time.Now.
	Now func() time.Time
}

// LoadBundle reads PEM certificates from a file.
func LoadBundle(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("proxy: trust bundle: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("proxy: trust bundle %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("proxy: trust bundle %s holds no PEM certificate", path)
	}
	return certs, nil
}

func (c *Config) setDefaults() {
	if c.Controller == "" {
		c.Controller = DefaultController
	}
	if c.TunnelListen == "" {
		c.TunnelListen = DefaultTunnelListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.ServiceAccount == "" {
		c.ServiceAccount = c.Workload
	}
}

// trustDomain resolves the configured or bundle-named trust domain.
func (c *Config) trustDomain() (spiffeid.TrustDomain, error) {
	if c.TrustDomain != "" {
		return spiffeid.TrustDomainFromString(c.TrustDomain)
	}
	for _, root := range c.TrustBundle {
		for _, u := range root.URIs {
			if id, err := spiffeid.FromURI(u); err == nil {
				return id.TrustDomain(), nil
			}
		}
	}
	return spiffeid.TrustDomain{}, errors.New("the trust bundle names no trust domain; set --trust-domain")
}

// Proxy is one running rampart-proxy.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	id   spiffeid.ID
	ctrl spiffeid.ID

	metrics *metrics.Metrics
	svid    *meshtls.SVID
	bundle  *meshtls.Bundle
	tls     meshtls.Config

	dialer   *tunnel.Dialer
	inbound  *inbound.Handler
	outbound *outbound.Outbound
	admin    *admin.Server
	tracer   *tracing.Tracer // nil when tracing is off
	tap      *tap.Tapper     // the taps (rampart tap) the controller starts
	tunnelL  net.Listener
	plainL   net.Listener // nil unless InboundListen
	// tunnelLis serves tunnelL once serveTunnel runs.
	tunnelLis atomic.Pointer[tunnel.Listener]

	config   atomic.Pointer[meshv1.ProxyConfig]
	draining atomic.Bool
	// ctrlConn is the connection of the discovery stream while it is
	// open; the telemetry reporter sends over it.
	ctrlConn atomic.Pointer[grpc.ClientConn]

	tokenMu sync.Mutex
	token   string // cleared once used: join tokens are single use
}

// New validates cfg and binds every listener.
func New(cfg Config) (*Proxy, error) {
	cfg.setDefaults()
	if cfg.Workload == "" {
		return nil, errors.New("proxy: a workload name is required")
	}
	if len(cfg.TrustBundle) == 0 {
		return nil, errors.New("proxy: a trust bundle is required to verify the controller")
	}
	td, err := cfg.trustDomain()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	id, err := identity.WorkloadID(td, cfg.Namespace, cfg.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &Proxy{
		cfg:     cfg,
		log:     cfg.Logger.With("spiffe_id", id.String()),
		id:      id,
		ctrl:    identity.ControllerID(td),
		metrics: metrics.NewWith(metricsOptions(cfg, id)),
		svid:    new(meshtls.SVID),
		bundle:  new(meshtls.Bundle),
		token:   cfg.JoinToken,
	}
	p.bundle.SetRoots(td, cfg.TrustBundle)
	p.tls = meshtls.Config{SVID: p.svid, Bundle: p.bundle, Now: cfg.Now,
		Revocations: new(meshtls.Revocations), Quarantine: new(meshtls.Quarantine)}

	p.dialer, err = tunnel.NewDialer(tunnel.DialerConfig{
		TLS: p.tls,
		OnRefused: func(peer tunnel.Peer, remote net.Addr, reason string, err error) {
			p.metrics.TLSRefusals.WithLabelValues(metrics.Outbound, reason).Inc()
			p.log.Warn("refused peer", "direction", metrics.Outbound, "peer", peer.String(), "reason", reason, "err", err)
			p.countRefusal(remote.String(), "", err)
		},
	})
	if err != nil {
		return nil, err
	}
	if p.tap, err = p.newTapper(); err != nil {
		return nil, err
	}
	if cfg.Tracing.Endpoint != "" || cfg.Tracing.Exporter != nil {
		tc := cfg.Tracing
		tc.Workload, tc.Namespace, tc.Identity = cfg.Workload, cfg.Namespace, id.String()
		tc.Registerer, tc.Logger = p.metrics.Registry, p.log
		if p.tracer, err = tracing.New(tc); err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
	}
	built := false
	defer func() {
		if !built {
			p.tracer.Shutdown(context.Background())
		}
	}()
	var accessLog *accesslog.Logger
	if cfg.AccessLog != nil {
		accessLog = accesslog.New(cfg.AccessLog)
	}
	p.inbound, err = inbound.New(inbound.Config{
		Metrics: p.metrics, Logger: p.log, Tap: p.tap,
		Tracer: p.tracer, AccessLog: accessLog, Identity: id.String(),
		MaxPlaintextConns: cfg.MaxPlaintextConns, DrainTimeout: cfg.DrainTimeout,
	})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			p.closeListeners()
			if p.admin != nil {
				p.admin.Close()
			}
		}
	}()
	p.tunnelL, err = net.Listen("tcp", cfg.TunnelListen)
	if err != nil {
		return nil, fmt.Errorf("proxy: tunnel listener: %w", err)
	}
	if p.cfg.Advertise == "" {
		p.cfg.Advertise = p.tunnelL.Addr().String()
	}
	if cfg.InboundListen != "" {
		if p.plainL, err = net.Listen("tcp", cfg.InboundListen); err != nil {
			return nil, fmt.Errorf("proxy: inbound listener: %w", err)
		}
	}
	p.outbound, err = outbound.New(outbound.Config{
		Upstreams: cfg.Upstreams, Transparent: cfg.OutboundListen, Namespace: cfg.Namespace,
		Dialer: p.dialer, Metrics: p.metrics, Logger: p.log, DrainTimeout: cfg.DrainTimeout,
		EgressResolver: cfg.EgressResolver, Tap: p.tap,
		Tracer: p.tracer, AccessLog: accessLog, Identity: id.String(),
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.admin, err = admin.New(admin.Config{
		Listen: cfg.AdminListen, Gatherer: p.metrics.Registry,
		Ready: p.Ready, Dump: p.dump, Logger: p.log,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: admin listener: %w", err)
	}
	ok, built = true, true
	return p, nil
}

// metricsOptions says who the proxy is in its series, and starts its
// telemetry aggregator unless telemetry is off.
func metricsOptions(cfg Config, id spiffeid.ID) metrics.Options {
	o := metrics.Options{Workload: cfg.Workload, Identity: id.String()}
	if cfg.TelemetryInterval >= 0 {
		o.Telemetry = telemetry.NewAggregator(time.Now())
	}
	return o
}

// reporter returns the reporter of the proxy's per-edge telemetry over its
// discovery stream's connection, nil when telemetry is off.
func (p *Proxy) reporter() (*telemetry.Reporter, error) {
	agg := p.metrics.Telemetry()
	if agg == nil {
		return nil, nil
	}
	return telemetry.NewReporter(telemetry.ReporterConfig{
		Aggregator: agg,
		Conn: func() grpc.ClientConnInterface {
			if c := p.ctrlConn.Load(); c != nil {
				return c
			}
			return nil
		},
		Workload:      p.cfg.Workload,
		Interval:      p.cfg.TelemetryInterval,
		Sent:          p.metrics.TelemetryReports,
		Dropped:       p.metrics.TelemetryDropped,
		OverflowEdges: p.metrics.TelemetryOverflowEdges,
		Logger:        p.log,
	})
}

// closeListeners releases the traffic listeners of a proxy whose serving
// never started; the admin listener belongs to admin.Run once Run is called.
func (p *Proxy) closeListeners() {
	if p.tunnelL != nil {
		p.tunnelL.Close()
	}
	if p.plainL != nil {
		p.plainL.Close()
	}
	if p.outbound != nil {
		p.outbound.Close()
	}
}

// ID is the SPIFFE ID the proxy holds or asks for.
func (p *Proxy) ID() spiffeid.ID { return p.id }

// TunnelAddr is the bound tunnel address.
func (p *Proxy) TunnelAddr() string { return p.tunnelL.Addr().String() }

// AdminAddr is the bound admin address.
func (p *Proxy) AdminAddr() string { return p.admin.Addr() }

// OutboundAddr is the bound address of the transparent outbound listener,
// or "" without one.
func (p *Proxy) OutboundAddr() string { return p.outbound.TransparentAddr() }

// InboundAddr is the bound address of the plaintext inbound listener, or
// "" without one.
func (p *Proxy) InboundAddr() string {
	if p.plainL == nil {
		return ""
	}
	return p.plainL.Addr().String()
}

// UpstreamAddr is the bound address of the i-th upstream.
func (p *Proxy) UpstreamAddr(i int) string { return p.outbound.Addr(i) }

// Metrics exposes the proxy's series (for tests and embedding).
func (p *Proxy) Metrics() *metrics.Metrics { return p.metrics }

// SVID returns the current certificate holder.
func (p *Proxy) SVID() *meshtls.SVID { return p.svid }

// Ready reports whether the proxy holds an unexpired certificate and a
// configuration and is not draining.
func (p *Proxy) Ready() bool {
	s := p.svid.Get()
	return !p.draining.Load() && s != nil && p.cfg.Now().Before(s.Certificates[0].NotAfter) && p.config.Load() != nil
}

// Run obtains an identity, then serves until ctx ends, then drains:
// readiness turns false and the controller withdraws the workload from
// every service at once; after DrainDelay the listeners stop accepting,
// peers get GOAWAY, and requests and connections in flight have until
// DrainTimeout to finish.
func (p *Proxy) Run(ctx context.Context) error {
	// serveCtx ends when accepting stops: DrainDelay after ctx, or at once
	// when a component fails.
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	g, gctx := errgroup.WithContext(serveCtx)
	g.Go(func() error { return p.admin.Run(gctx) })
	g.Go(func() error {
		if err := p.bootstrap(gctx); err != nil {
			if gctx.Err() != nil {
				p.closeListeners()
				return nil
			}
			p.closeListeners()
			return err
		}
		p.log.Info("identity issued", "serial", p.svid.Get().Certificates[0].SerialNumber.Text(16),
			"expires", p.svid.Get().Certificates[0].NotAfter)
		sg, sctx := errgroup.WithContext(gctx)
		sg.Go(func() error { return p.renewLoop(sctx) })
		sg.Go(func() error { return p.watchLoop(sctx) })
		sg.Go(func() error { return p.tap.Run(sctx) })
		if rep, err := p.reporter(); err != nil {
			return err
		} else if rep != nil {
			sg.Go(func() error { return rep.Run(sctx) })
		}
		// The app's outbound calls keep working while the requests it is
		// still serving drain: the outbound side stops accepting only once
		// the tunnel has drained (or failed).
		outCtx, stopOutbound := context.WithCancel(context.WithoutCancel(sctx))
		defer stopOutbound()
		sg.Go(func() error {
			defer stopOutbound()
			return p.serveTunnel(sctx)
		})
		sg.Go(func() error { return p.outbound.Run(outCtx) })
		if p.plainL != nil {
			sg.Go(func() error { return p.inbound.ServePlaintext(sctx, p.plainL) })
		}
		return sg.Wait()
	})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		select {
		case <-ctx.Done():
		case <-gctx.Done():
			p.draining.Store(true)
			return
		}
		p.draining.Store(true)
		p.log.Info("draining", "delay", p.cfg.DrainDelay.String(), "timeout", p.cfg.DrainTimeout.String())
		p.leave()
		if p.cfg.DrainDelay > 0 {
			t := time.NewTimer(p.cfg.DrainDelay)
			select {
			case <-t.C:
			case <-gctx.Done():
				t.Stop()
			}
		}
		stopServing()
	}()
	err := g.Wait()
	stopServing()
	<-drained
	p.dialer.Close()
	// Send the spans still held.
	tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if terr := p.tracer.Shutdown(tctx); terr != nil {
		p.log.Warn("could not send the last spans", "err", terr)
	}
	return err
}

// leave asks the controller to withdraw this workload from every service,
// if the proxy holds an identity to ask with. It is best effort: a
// controller that cannot be reached withdraws the workload when its
// stream ends.
func (p *Proxy) leave() {
	if p.svid.Get() == nil {
		return
	}
	conn, err := p.dialControl()
	if err != nil {
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = meshv1.NewDiscoveryClient(conn).Leave(ctx, &meshv1.LeaveRequest{Workload: p.workload()})
	if err != nil {
		p.log.Warn("could not tell the controller that the workload is leaving", "err", err)
	}
}

// workload is how this proxy describes its workload to the controller.
func (p *Proxy) workload() *meshv1.Workload {
	return &meshv1.Workload{
		Name:          p.cfg.Workload,
		Labels:        p.cfg.Labels,
		TunnelAddress: p.cfg.Advertise,
		Address:       p.cfg.Address,
	}
}

func (p *Proxy) serveTunnel(ctx context.Context) error {
	srvTLS := p.tls
	srvTLS.NextProtos = []string{tunnel.ALPN}
	l := tunnel.NewListener(p.tunnelL, tunnel.ListenerConfig{
		TLS:    srvTLS.Server(nil),
		Refuse: p.tls.CheckPeer,
		OnRefused: func(remote net.Addr, err error) {
			reason := meshtls.Reason(err)
			p.metrics.TLSRefusals.WithLabelValues(metrics.Inbound, reason).Inc()
			p.log.Warn("refused peer", "direction", metrics.Inbound, "remote", remote.String(), "reason", reason, "err", err)
			p.countRefusal(remote.String(), p.tunnelL.Addr().String(), err)
		},
	})
	var protos http.Protocols
	protos.SetHTTP2(true)
	srv := &http.Server{
		Handler:           p.inbound,
		Protocols:         &protos,
		ConnContext:       inbound.ConnContext,
		ConnState:         l.ConnState,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       10 * time.Minute,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	p.tunnelLis.Store(l)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		l.Close()
		l.Wait()
		return fmt.Errorf("proxy: tunnel listener: %w", err)
	case <-ctx.Done():
	}
	// Drain: GOAWAY to every peer, let streams in flight finish.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		srv.Close()
	}
	<-errc
	l.Wait()
	return nil
}

// apply validates a configuration from the controller and installs it; a
// bad one is refused and the last good one stays in force. A
// configuration without an authorization policy is installed: every
// inbound request is then denied (code no_policy).
func (p *Proxy) apply(pc *meshv1.ProxyConfig) error {
	v, err := validateConfig(pc, p.id)
	if err != nil {
		p.metrics.ConfigRejected.WithLabelValues(rejectReason(err)).Inc()
		return err
	}
	if err := p.checkBundle(v.roots); err != nil {
		p.metrics.ConfigRejected.WithLabelValues(rejectReason(err)).Inc()
		return err
	}
	pol := inbound.Policy{Spec: v.policy, Engine: v.engine}
	if pol.Limiter, err = buildLimiter(v.policy, p.inbound.Policy().Limiter); err != nil {
		p.metrics.ConfigRejected.WithLabelValues(rejectReason(err)).Inc()
		return err
	}
	if v.engine == nil {
		p.log.Warn("the configuration has no authorization policy: every inbound request is denied", "version", pc.GetVersion())
	}
	if len(v.roots) > 0 {
		p.bundle.SetRoots(p.id.TrustDomain(), v.roots)
	}
	p.inbound.SetConfig(pc.GetInbound(), pol)
	p.outbound.UpdateCompiled(pc, v.routes)
	p.dialer.Retain(peersOf(pc))
	p.applyRevocations(v.revoked, v.revokedIgnored)
	p.applyQuarantine(v.quarantined, v.quarantineIgnored, pc.GetQuarantine())
	p.config.Store(pc)
	p.metrics.ConfigUpdates.Inc()
	return nil
}

// checkBundle refuses a trust bundle the controller pushes that would
// re-root the proxy in one step: it must share a root with the bundle in
// force (roots are added and retired in stages, never swapped), and the
// proxy's own certificate must still chain to one of its roots (else its
// peers, trusting the same bundle, would refuse it). An empty bundle
// leaves the one in force alone.
func (p *Proxy) checkBundle(roots []*x509.Certificate) error {
	if len(roots) == 0 {
		return nil
	}
	if cur := p.bundle.Roots(p.id.TrustDomain()); len(cur) > 0 && !sharesRoot(roots, cur) {
		return reject("trust_bundle", "trust bundle shares no root with the one in force: refusing to re-root in one step (rotate in stages: rampart identity rotate-root)")
	}
	svid := p.svid.Get()
	if svid == nil {
		return nil
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range svid.Certificates[1:] {
		inter.AddCert(c)
	}
	_, err := svid.Certificates[0].Verify(x509.VerifyOptions{
		Roots: pool, Intermediates: inter, CurrentTime: p.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return reject("trust_bundle", "trust bundle does not hold the root of this proxy's own certificate (%v): peers would refuse it", err)
	}
	return nil
}

func peersOf(pc *meshv1.ProxyConfig) map[tunnel.Peer]bool {
	keep := make(map[tunnel.Peer]bool)
	for _, s := range pc.GetServices() {
		for _, e := range s.GetEndpoints() {
			if id, err := spiffeid.FromString(e.GetSpiffeId()); err == nil {
				keep[tunnel.Peer{Address: e.GetAddress(), ID: id}] = true
			}
		}
	}
	return keep
}
