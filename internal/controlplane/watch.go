package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/discovery"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// Watch implements meshv1.DiscoveryServer.
func (ds discoveryService) Watch(req *meshv1.WatchRequest, stream grpc.ServerStreamingServer[meshv1.ProxyConfig]) error {
	s := ds.s
	ctx := stream.Context()
	c := callerOf(ctx)

	refuse := func(ref *refusal) error {
		s.metrics.watchRefused.WithLabelValues(ref.reason).Inc()
		attrs := []any{"peer", c.addr, "reason", ref.reason}
		if !ref.id.IsZero() {
			attrs = append(attrs, "spiffe_id", ref.id.String())
		}
		if ref.err != nil {
			attrs = append(attrs, "error", ref.err.Error())
		}
		s.logger.Warn("watch refused", attrs...)
		return status.Error(ref.code, ref.msg)
	}

	id, err := meshtls.VerifyPeer(c.certs, s.bundle, s.now())
	if err != nil {
		reason := watchReason(meshtls.Reason(err))
		msg := "client certificate refused (" + reason + "): " + err.Error()
		if errors.Is(err, meshtls.ErrNoCertificate) {
			msg = "client certificate required: Watch needs the SVID issued by Identity.Certify"
		}
		return refuse(&refusal{code: codes.Unauthenticated, reason: reason, err: err, msg: msg})
	}
	if err := s.peerRevoked(c.certs[0]); err != nil {
		return refuse(&refusal{code: codes.PermissionDenied, reason: meshtls.ReasonRevoked, id: id, err: err,
			msg: "client certificate revoked: " + err.Error() + "; the workload must attest again"})
	}
	ns, _, err := identity.ParseWorkloadID(id)
	if err != nil || id.TrustDomain() != s.ca.TrustDomain() {
		if err == nil {
			err = fmt.Errorf("trust domain %q is not %q", id.TrustDomain(), s.ca.TrustDomain())
		}
		return refuse(&refusal{
			code: codes.PermissionDenied, reason: WatchNotWorkload, id: id, err: err,
			msg: "identity " + id.String() + " is not a workload identity of trust domain " + s.ca.TrustDomain().String(),
		})
	}
	if err := validateWatch(req, ns); err != nil {
		return refuse(&refusal{code: codes.InvalidArgument, reason: WatchBadRequest, id: id, err: err, msg: err.Error()})
	}

	w := req.GetWorkload()
	unregister, err := s.model.Register(discovery.Registration{
		ID:            id,
		Name:          w.GetName(),
		Labels:        w.GetLabels(),
		TunnelAddress: w.GetTunnelAddress(),
		Address:       w.GetAddress(),
		PeerIP:        peerIP(c.addr),
	})
	if err != nil {
		// validateWatch checked the same; only a disagreement between the
		// two would get here.
		code := codes.Internal
		if errors.Is(err, discovery.ErrInvalid) {
			code = codes.InvalidArgument
		}
		return refuse(&refusal{code: code, reason: WatchBadRequest, id: id, err: err, msg: err.Error()})
	}
	defer func() {
		if s.linger <= 0 {
			unregister()
			return
		}
		time.AfterFunc(s.linger, unregister)
	}()

	s.metrics.watchStreams.Inc()
	defer s.metrics.watchStreams.Dec()
	log := s.logger.With("peer", c.addr, "spiffe_id", id.String(), "workload", w.GetName())
	log.Info("watch started", "upstreams", len(req.GetUpstreams()), "transparent", req.GetTransparent())

	// A proxy certified before this server started is reconnecting after a
	// restart: give its peers the grace to re-register first, so that a
	// restart never pushes empty endpoint lists to proxies serving traffic.
	if wait := s.started.Add(s.grace).Sub(s.now()); wait > 0 &&
		c.certs[0].NotBefore.Add(ca.ClockSkew).Before(s.started) {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}

	// The stream lives no longer than the certificate that opened it: the
	// proxy reconnects with its renewed one, or is refused.
	expiry := time.NewTimer(c.certs[0].NotAfter.Sub(s.now()))
	defer expiry.Stop()

	var last string
	for {
		// Take the channel before computing, so that a change made while
		// computing wakes the loop again.
		changed := s.model.Changed()
		// A revocation changes the model: a revoked proxy loses its
		// configuration stream, and with it its place as an endpoint.
		if err := s.peerRevoked(c.certs[0]); err != nil {
			s.metrics.watchRefused.WithLabelValues(meshtls.ReasonRevoked).Inc()
			log.Warn("watch ended", "reason", "client certificate revoked", "error", err.Error())
			return status.Error(codes.PermissionDenied, "client certificate revoked: "+err.Error()+"; the workload must attest again")
		}
		var cfg *meshv1.ProxyConfig
		if req.GetTransparent() {
			cfg = s.model.TransparentConfigFor(id, w.GetName())
		} else {
			cfg = s.model.ConfigFor(id, w.GetName(), req.GetUpstreams())
		}
		if cfg.GetVersion() != last {
			if err := stream.Send(cfg); err != nil {
				log.Info("watch ended", "error", err.Error())
				return err
			}
			last = cfg.GetVersion()
			s.metrics.configPushes.Inc()
			log.Debug("config pushed", "version", last)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			log.Info("watch ended", "reason", "stream closed")
			return nil
		case <-expiry.C:
			log.Info("watch ended", "reason", "client certificate expired")
			return status.Error(codes.Unavailable, "client certificate expired; reconnect with the renewed certificate")
		case <-s.draining:
			log.Info("watch ended", "reason", "controller shutting down")
			return status.Error(codes.Unavailable, "controller shutting down; reconnect")
		}
	}
}

// validateWatch says what to fix in a WatchRequest from a workload of
// namespace ns.
func validateWatch(req *meshv1.WatchRequest, ns string) error {
	w := req.GetWorkload()
	if w == nil {
		return errors.New("workload is required")
	}
	if err := discovery.ValidateWorkload(w.GetName(), w.GetLabels(), w.GetTunnelAddress(), w.GetAddress()); err != nil {
		return err
	}
	ups := req.GetUpstreams()
	if len(ups) > discovery.MaxUpstreams {
		return fmt.Errorf("%d upstreams, at most %d are allowed", len(ups), discovery.MaxUpstreams)
	}
	for _, u := range ups {
		if _, _, err := discovery.ParseUpstream(u, ns); err != nil {
			return err
		}
	}
	return nil
}

// Leave implements meshv1.DiscoveryServer: a draining proxy stops being an
// endpoint at once. Only the workload's own identity may take it out.
func (ds discoveryService) Leave(ctx context.Context, req *meshv1.LeaveRequest) (*meshv1.LeaveResponse, error) {
	s := ds.s
	c := callerOf(ctx)
	id, err := meshtls.VerifyPeer(c.certs, s.bundle, s.now())
	if err != nil {
		s.metrics.watchRefused.WithLabelValues(watchReason(meshtls.Reason(err))).Inc()
		return nil, status.Error(codes.Unauthenticated, "client certificate refused: Leave needs the workload's SVID")
	}
	if err := s.peerRevoked(c.certs[0]); err != nil {
		s.metrics.watchRefused.WithLabelValues(meshtls.ReasonRevoked).Inc()
		return nil, status.Error(codes.PermissionDenied, "client certificate revoked: "+err.Error())
	}
	w := req.GetWorkload()
	if w == nil || w.GetName() == "" || w.GetTunnelAddress() == "" {
		s.metrics.watchRefused.WithLabelValues(WatchBadRequest).Inc()
		return nil, status.Error(codes.InvalidArgument, "workload name and tunnel address are required")
	}
	if s.model.Leave(id, w.GetName(), w.GetTunnelAddress(), peerIP(c.addr)) {
		s.logger.Info("workload leaving", "spiffe_id", id.String(), "workload", w.GetName(), "tunnel", w.GetTunnelAddress())
	}
	return &meshv1.LeaveResponse{}, nil
}

// peerIP is the IP of a "host:port" peer address; the zero Addr when it
// has none.
func peerIP(addr string) netip.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
