package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/authzpb"
	"github.com/rampart-mesh/rampart/internal/authz/ratelimit"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/egress"
	"github.com/rampart-mesh/rampart/internal/proxy/outbound"
	"github.com/rampart-mesh/rampart/internal/proxy/route"
	"github.com/rampart-mesh/rampart/internal/proxy/tap"
)

// backoff is capped exponential backoff with full jitter.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + mrand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dialControl opens a connection to the controller, verifying that it
// proves the controller's identity. A fresh connection carries the SVID
// current at its handshake.
func (p *Proxy) dialControl() (*grpc.ClientConn, error) {
	creds := credentials.NewTLS(p.tls.Client(p.ctrl))
	return grpc.NewClient(p.cfg.Controller, grpc.WithTransportCredentials(creds), controlCallOptions())
}

// MaxConfigSize is the largest message the proxy receives from the
// controller, above gRPC's default of 4 MiB: a configuration carries the
// mesh's revocation list (at most 1 MiB encoded, revocation.MaxEncodedSize)
// besides the services, routes and policy of the mesh.
const MaxConfigSize = 16 << 20

// controlCallOptions are the call options of the control connection.
func controlCallOptions() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxConfigSize))
}

// certify asks the controller for a new SVID for a fresh key, attesting
// with the join token (first time) or with the current SVID.
func (p *Proxy) certify(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{p.id.URL()},
	}, key)
	if err != nil {
		return err
	}
	req := &meshv1.CertifyRequest{Csr: csr}
	if p.cfg.AppPID > 0 && strings.HasPrefix(p.cfg.Controller, "unix:") {
		// Only the Unix socket lets the controller check and measure it.
		req.AppPid = uint32(p.cfg.AppPID)
	}
	if p.svid.Get() == nil {
		p.tokenMu.Lock()
		req.JoinToken = p.token
		p.tokenMu.Unlock()
		if req.JoinToken == "" && !strings.HasPrefix(p.cfg.Controller, "unix:") {
			return errPermanent{errors.New("no valid certificate and no join token: start the proxy with a new --join-token")}
		}
	}
	conn, err := p.dialControl()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := meshv1.NewIdentityClient(conn).Certify(ctx, req)
	if req.JoinToken != "" && status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		// The controller saw the token: it is spent, whatever the answer.
		p.tokenMu.Lock()
		p.token = ""
		p.tokenMu.Unlock()
	}
	if err != nil {
		p.metrics.SVIDRenewals.WithLabelValues("failed").Inc()
		switch status.Code(err) {
		case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
			return errPermanent{fmt.Errorf("controller refused the certificate request: %s", status.Convert(err).Message())}
		}
		return fmt.Errorf("certify: %w", err)
	}
	svid, roots, err := p.checkIssued(resp, key)
	if err != nil {
		p.metrics.SVIDRenewals.WithLabelValues("failed").Inc()
		return errPermanent{err}
	}
	p.bundle.SetRoots(p.id.TrustDomain(), roots)
	if err := p.svid.Set(svid); err != nil {
		return err
	}
	p.metrics.SVIDRenewals.WithLabelValues("issued").Inc()
	p.metrics.SVIDExpiry.Set(float64(svid.Certificates[0].NotAfter.Unix()))
	return nil
}

// checkIssued verifies what the controller returned: a chain for our key
// and identity that verifies against the returned bundle, which itself
// must share a root with the bundle we trust now (no silent re-rooting).
func (p *Proxy) checkIssued(resp *meshv1.CertifyResponse, key *ecdsa.PrivateKey) (*x509svid.SVID, []*x509.Certificate, error) {
	roots, err := parseCerts(resp.GetTrustBundle())
	if err != nil || len(roots) == 0 {
		return nil, nil, fmt.Errorf("controller returned a bad trust bundle: %v", err)
	}
	if !sharesRoot(roots, p.bundle.Roots(p.id.TrustDomain())) {
		return nil, nil, errors.New("controller returned a trust bundle with none of the roots trusted now")
	}
	chain, err := parseCerts(resp.GetCertChain())
	if err != nil || len(chain) == 0 {
		return nil, nil, fmt.Errorf("controller returned a bad certificate chain: %v", err)
	}
	var check meshtls.Bundle
	check.SetRoots(p.id.TrustDomain(), roots)
	got, err := meshtls.VerifyPeer(chain, &check, p.cfg.Now())
	if err != nil {
		return nil, nil, fmt.Errorf("controller returned a certificate that does not verify: %w", err)
	}
	if got != p.id {
		return nil, nil, fmt.Errorf("controller returned a certificate for %s, asked for %s", got, p.id)
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		return nil, nil, errors.New("controller returned a certificate for another key")
	}
	return &x509svid.SVID{ID: got, Certificates: chain, PrivateKey: key}, roots, nil
}

func parseCerts(ders [][]byte) ([]*x509.Certificate, error) {
	certs := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, nil
}

func sharesRoot(a, b []*x509.Certificate) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Equal(y) {
				return true
			}
		}
	}
	return false
}

// errPermanent marks a failure that retrying cannot fix.
type errPermanent struct{ error }

func (e errPermanent) Unwrap() error { return e.error }

// bootstrap obtains the first SVID, retrying while the controller is
// unreachable.
func (p *Proxy) bootstrap(ctx context.Context) error {
	b := backoff{min: 200 * time.Millisecond, max: 15 * time.Second}
	for {
		err := p.certify(ctx)
		if err == nil {
			return nil
		}
		var perm errPermanent
		if errors.As(err, &perm) {
			return fmt.Errorf("proxy: %w", err)
		}
		p.log.Warn("cannot obtain an identity yet; retrying", "controller", p.cfg.Controller, "err", err)
		if err := sleep(ctx, b.next()); err != nil {
			return err
		}
	}
}

// renewLoop renews the SVID at half its lifetime. Failures are retried with
// backoff; the current certificate serves until it expires.
func (p *Proxy) renewLoop(ctx context.Context) error {
	b := backoff{min: time.Second, max: 30 * time.Second}
	for {
		leaf := p.svid.Get().Certificates[0]
		// Renew halfway through what is left of the certificate's life
		// from now (it was just obtained): the CA backdates NotBefore to
		// tolerate clock skew, which must not pull renewal forward (with
		// a TTL shorter than the backdating it would renew at once,
		// again and again).
		start := p.cfg.Now()
		if leaf.NotBefore.After(start) {
			start = leaf.NotBefore
		}
		half := start.Add(leaf.NotAfter.Sub(start) / 2)
		if err := sleep(ctx, half.Sub(p.cfg.Now())); err != nil {
			return nil
		}
		for {
			err := p.certify(ctx)
			if err == nil {
				b.reset()
				p.log.Info("identity renewed", "serial", p.svid.Get().Certificates[0].SerialNumber.Text(16),
					"expires", p.svid.Get().Certificates[0].NotAfter)
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			left := leaf.NotAfter.Sub(p.cfg.Now())
			p.log.Warn("certificate renewal failed; retrying", "expires_in", left.Round(time.Second).String(), "err", err)
			wait := b.next()
			if left > 0 {
				wait = min(wait, left/4+time.Millisecond)
			}
			if err := sleep(ctx, wait); err != nil {
				return nil
			}
		}
	}
}

// newTapper returns the proxy's side of rampart tap, over its discovery
// stream's connection.
func (p *Proxy) newTapper() (*tap.Tapper, error) {
	t, err := tap.New(tap.Config{
		Conn: func() grpc.ClientConnInterface {
			if c := p.ctrlConn.Load(); c != nil {
				return c
			}
			return nil
		},
		Workload:   p.cfg.Workload,
		Self:       p.id.String(),
		Registerer: p.metrics.Registry,
		Logger:     p.log,
		Now:        p.cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return t, nil
}

// watchLoop keeps a discovery stream open, applying every configuration
// received, and reconnects with backoff. Configuration stays in force
// while the stream is down.
func (p *Proxy) watchLoop(ctx context.Context) error {
	req := &meshv1.WatchRequest{
		Workload:    p.workload(),
		Transparent: p.cfg.OutboundListen != "",
	}
	for _, u := range p.cfg.Upstreams {
		req.Upstreams = append(req.Upstreams, u.Service)
	}
	b := backoff{min: 200 * time.Millisecond, max: 30 * time.Second}
	for {
		err := p.watch(ctx, req, b.reset)
		p.metrics.ControlPlaneConnected.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		wait := b.next()
		p.log.Warn("discovery stream ended; serving on the last configuration", "retry_in", wait.Round(time.Millisecond).String(), "err", err)
		if err := sleep(ctx, wait); err != nil {
			return nil
		}
	}
}

func (p *Proxy) watch(ctx context.Context, req *meshv1.WatchRequest, connected func()) error {
	conn, err := p.dialControl()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := meshv1.NewDiscoveryClient(conn).Watch(ctx, req)
	if err != nil {
		return err
	}
	p.ctrlConn.Store(conn)
	defer p.ctrlConn.CompareAndSwap(conn, nil)
	for {
		pc, err := stream.Recv()
		if err != nil {
			return err
		}
		p.metrics.ControlPlaneConnected.Set(1)
		connected()
		if prev := p.config.Load(); prev != nil && prev.GetVersion() == pc.GetVersion() {
			continue
		}
		if err := p.apply(pc); err != nil {
			p.log.Error("refused configuration from the controller; keeping the last good one",
				"version", pc.GetVersion(), "reason", rejectReason(err), "err", err)
			p.applyRefusedRevocations(pc, err)
			p.applyRefusedQuarantine(pc, err)
			continue
		}
		p.log.Info("configuration applied", "version", pc.GetVersion(), "services", len(pc.GetServices()),
			"inbound_ports", len(pc.GetInbound()), "authorization", pc.GetAuthorization() != nil)
	}
}

// Reasons a configuration is rejected: the reason label of
// rampart_proxy_config_rejected_total, naming the part at fault.
const (
	rejectIdentity      = "spiffe_id"
	rejectServices      = "services"
	rejectInbound       = "inbound"
	rejectSettings      = "settings"
	rejectTrustBundle   = "trust_bundle"
	rejectAuthorization = "authorization"
	rejectRoutes        = "routes"
	rejectEgress        = "egress"
	rejectTraffic       = "traffic"
	// rejectRevocations and rejectQuarantine: revoke.go, quarantine.go.
)

// configError is a configuration rejected, with the part at fault.
type configError struct {
	reason string
	err    error
}

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func reject(reason string, format string, args ...any) error {
	return &configError{reason: reason, err: fmt.Errorf(format, args...)}
}

// rejectReason returns the part of the configuration that err faults.
func rejectReason(err error) string {
	var ce *configError
	if errors.As(err, &ce) {
		return ce.reason
	}
	return "invalid"
}

// validConfig is what validateConfig parsed and compiled from a
// configuration.
type validConfig struct {
	roots []*x509.Certificate
	// policy and engine are the authorization policy, decoded and
	// compiled; both nil when the configuration has none (every inbound
	// request is then denied).
	policy *authz.WorkloadPolicy
	engine *authz.Engine
	// routes are the services' HTTP routes, compiled.
	routes *route.Tables
	// revoked is what peers are refused for (revoke.go); revokedIgnored
	// the entries left out because they revoke the controller.
	revoked        *meshtls.RevocationSet
	revokedIgnored []string
	// quarantined is the identities isolated for a while (quarantine.go);
	// quarantineIgnored the entries left out because they name the
	// controller.
	quarantined       *meshtls.QuarantineSet
	quarantineIgnored []string
}

// validateConfig checks a configuration from the controller before any of
// it is used, and returns its parsed trust bundle, compiled routes and
// compiled authorization policy. The error is a *configError.
func validateConfig(pc *meshv1.ProxyConfig, self spiffeid.ID) (*validConfig, error) {
	if pc.GetSpiffeId() != self.String() {
		return nil, reject(rejectIdentity, "configuration is for %q, this proxy is %s", pc.GetSpiffeId(), self)
	}
	for _, s := range pc.GetServices() {
		for _, port := range s.GetPorts() {
			if !validPort(port.GetPort()) || !validPort(port.GetTargetPort()) {
				return nil, reject(rejectServices, "service %s.%s: port %d -> %d out of range", s.GetName(), s.GetNamespace(), port.GetPort(), port.GetTargetPort())
			}
			if _, ok := meshv1.Protocol_name[int32(port.GetProtocol())]; !ok || port.GetProtocol() == meshv1.Protocol_PROTOCOL_UNSPECIFIED {
				return nil, reject(rejectServices, "service %s.%s: port %d has no known protocol", s.GetName(), s.GetNamespace(), port.GetPort())
			}
		}
		for _, a := range s.GetAddresses() {
			if !validUnicast(a) {
				return nil, reject(rejectServices, "service %s.%s: address %q is not a unicast, non-loopback IP address", s.GetName(), s.GetNamespace(), a)
			}
		}
		for _, e := range s.GetEndpoints() {
			if _, err := spiffeid.FromString(e.GetSpiffeId()); err != nil {
				return nil, reject(rejectServices, "service %s.%s: endpoint %s: %w", s.GetName(), s.GetNamespace(), e.GetAddress(), err)
			}
			if _, port, err := net.SplitHostPort(e.GetAddress()); err != nil || port == "" {
				return nil, reject(rejectServices, "service %s.%s: endpoint address %q is not host:port", s.GetName(), s.GetNamespace(), e.GetAddress())
			}
			if ip := e.GetIp(); ip != "" && !validUnicast(ip) {
				return nil, reject(rejectServices, "service %s.%s: endpoint %s: ip %q is not a unicast, non-loopback IP address", s.GetName(), s.GetNamespace(), e.GetAddress(), ip)
			}
		}
	}
	// The routes name services and ports: compiled once these are known
	// to be valid. A route the proxy cannot apply as written refuses the
	// whole configuration rather than route otherwise than meant.
	routes, err := route.Compile(pc.GetServices())
	if err != nil {
		return nil, reject(rejectRoutes, "%w", err)
	}
	if err := outbound.ValidateTraffic(pc.GetServices()); err != nil {
		return nil, reject(rejectTraffic, "%w", err)
	}
	for _, in := range pc.GetInbound() {
		if !validPort(in.GetPort()) {
			return nil, reject(rejectInbound, "inbound port %d out of range", in.GetPort())
		}
		if _, ok := meshv1.Protocol_name[int32(in.GetProtocol())]; !ok || in.GetProtocol() == meshv1.Protocol_PROTOCOL_UNSPECIFIED {
			return nil, reject(rejectInbound, "inbound port %d has no known protocol", in.GetPort())
		}
	}
	if _, ok := meshv1.EgressMode_name[int32(pc.GetSettings().GetEgress())]; !ok {
		return nil, reject(rejectSettings, "unknown egress mode %d", pc.GetSettings().GetEgress())
	}
	if _, err := egress.Compile(pc.GetEgress()); err != nil {
		return nil, reject(rejectEgress, "%w", err)
	}
	roots, err := parseCerts(pc.GetTrustBundle())
	if err != nil {
		return nil, reject(rejectTrustBundle, "trust bundle: %w", err)
	}
	for _, r := range roots {
		if !r.IsCA {
			return nil, reject(rejectTrustBundle, "trust bundle: %s is not a CA certificate", r.Subject)
		}
	}
	v := &validConfig{roots: roots, routes: routes}
	if v.revoked, v.revokedIgnored, err = validateRevocations(pc.GetRevocations(), identity.ControllerID(self.TrustDomain())); err != nil {
		return nil, err
	}
	if v.quarantined, v.quarantineIgnored, err = validateQuarantine(pc.GetQuarantine(), identity.ControllerID(self.TrustDomain())); err != nil {
		return nil, err
	}
	if pc.GetAuthorization() != nil {
		// FromProto names the field at fault ("authorization.tls.mode");
		// Compile names it within the policy.
		if v.policy, err = authzpb.FromProto(pc.GetAuthorization()); err != nil {
			return nil, reject(rejectAuthorization, "%w", err)
		}
		if v.engine, err = authz.Compile(v.policy); err != nil {
			return nil, reject(rejectAuthorization, "%w", prefixFields("authorization.", err))
		}
	}
	return v, nil
}

// prefixFields prefixes the fields of an authz.FieldErrors, so that they
// are named from the configuration's root.
func prefixFields(prefix string, err error) error {
	var fes authz.FieldErrors
	if !errors.As(err, &fes) {
		return fmt.Errorf("%s: %w", strings.TrimRight(prefix, "."), err)
	}
	out := make(authz.FieldErrors, len(fes))
	for i, fe := range fes {
		fe.Field = prefix + fe.Field
		out[i] = fe
	}
	return out
}

// buildLimiter returns the rate limiter for a valid configuration's
// policy: prev reconfigured, so that limits that stay keep their buckets,
// or a new one. Nil without limits.
func buildLimiter(policy *authz.WorkloadPolicy, prev *ratelimit.Limiter) (*ratelimit.Limiter, error) {
	if policy == nil || len(policy.RateLimits) == 0 {
		return nil, nil
	}
	var (
		l   *ratelimit.Limiter
		err error
	)
	if prev != nil {
		l, err = prev.Reconfigure(policy.RateLimits)
	} else {
		l, err = ratelimit.New(policy.RateLimits, ratelimit.Options{})
	}
	if err != nil {
		// The fields are named "[i].to[0]..." after the limit.
		return nil, reject(rejectAuthorization, "%w", prefixFields("authorization.rate_limits", err))
	}
	return l, nil
}

func validPort(p uint32) bool { return p >= 1 && p <= 65535 }

// validUnicast reports whether s is an IP address a transparent proxy may
// map: no zone, not unspecified, loopback or multicast.
func validUnicast(s string) bool {
	ip, err := netip.ParseAddr(s)
	return err == nil && ip.Zone() == "" && !ip.IsUnspecified() && !ip.IsLoopback() && !ip.IsMulticast()
}
