package proxy

import (
	"errors"
	"net"
	"net/netip"
	"strconv"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/telemetry"
)

// securityKind classifies a failed handshake for the telemetry report's
// security counts. Only this proxy's refusal of the certificate a peer
// presented counts (a *meshtls.PeerError, with the leaf, nil when none);
// a handshake that failed otherwise (a timeout, a reset, not TLS, the
// peer refusing this proxy) is not a security count.
func securityKind(err error) (meshv1.SecurityKind, *meshtls.PeerError) {
	var pe *meshtls.PeerError
	if !errors.As(err, &pe) {
		return meshv1.SecurityKind_SECURITY_KIND_UNSPECIFIED, nil
	}
	switch meshtls.Reason(err) {
	case meshtls.ReasonUnknownAuthority:
		return meshv1.SecurityKind_SECURITY_KIND_TLS_UNKNOWN_CA, pe
	case meshtls.ReasonRevoked:
		return meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED, pe
	case meshtls.ReasonQuarantined:
		return meshv1.SecurityKind_SECURITY_KIND_TLS_QUARANTINED, pe
	case meshtls.ReasonHandshake:
		return meshv1.SecurityKind_SECURITY_KIND_UNSPECIFIED, nil
	}
	// No certificate, expired or not yet valid, no or several SPIFFE
	// IDs, another trust domain, another identity than the one expected.
	return meshv1.SecurityKind_SECURITY_KIND_TLS_BAD_CERTIFICATE, pe
}

// countRefusal counts a handshake that failed in the telemetry report's
// security counts, when it is one (securityKind). peer is the address the
// peer was reached at (IP:port); local the address of the listener that
// refused, or "" when this proxy dialled the peer: the peer's port is
// counted then, an ephemeral local port telling nothing.
func (p *Proxy) countRefusal(peer, local string, err error) {
	agg := p.metrics.Telemetry()
	if agg == nil {
		return
	}
	kind, pe := securityKind(err)
	if pe == nil {
		return
	}
	ip, peerPort := splitAddr(peer)
	port := peerPort
	if local != "" {
		_, port = splitAddr(local)
	}
	claim := meshtls.PresentedBy(pe.Leaf)
	agg.Security(telemetry.Security{
		Kind: kind, PeerIP: ip, Port: port,
		PresentedID: claim.ID, Serial: claim.Serial, Issuer: claim.Issuer,
	})
}

// splitAddr returns the IP address (unmapped; "" when the host is not
// one) and port (0 when none) of a host:port address.
func splitAddr(addr string) (ip string, port uint32) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0
	}
	if a, err := netip.ParseAddr(host); err == nil {
		ip = a.Unmap().WithZone("").String()
	}
	if n, err := strconv.ParseUint(ps, 10, 16); err == nil {
		port = uint32(n)
	}
	return ip, port
}
