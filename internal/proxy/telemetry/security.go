package telemetry

import (
	"sort"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// MaxSecurityCounts is how many distinct security counts a report
// carries; the refusals past them are counted in security_overflow.
const MaxSecurityCounts = 64

// Security is one refusal that no request edge carries: a handshake that
// failed over the peer's certificate, or plaintext refused on a STRICT
// port. It is counted by everything but Issuer, which is kept from the
// first refusal of its kind.
type Security struct {
	Kind meshv1.SecurityKind
	// PeerIP is the peer's IP address.
	PeerIP string
	// PresentedID, Serial and Issuer are what the peer's certificate
	// claimed (meshtls.PresentedBy), empty without one.
	PresentedID, Serial, Issuer string
	// Port is the local port that refused.
	Port uint32
}

type securityKey struct {
	kind               meshv1.SecurityKind
	peerIP, id, serial string
	port               uint32
}

type securityCount struct {
	issuer string
	n      uint64
}

// Security counts one refusal. Refusals are rare next to requests (each
// one is a failed handshake or a refused connection): it takes the
// aggregator's security lock and may allocate.
func (a *Aggregator) Security(s Security) {
	if a == nil || s.Kind == meshv1.SecurityKind_SECURITY_KIND_UNSPECIFIED {
		return
	}
	k := securityKey{kind: s.Kind, peerIP: s.PeerIP, id: s.PresentedID, serial: s.Serial, port: s.Port}
	a.secMu.Lock()
	defer a.secMu.Unlock()
	if c := a.security[k]; c != nil {
		c.n++
		return
	}
	if len(a.security) >= MaxSecurityCounts {
		a.securityOverflow++
		return
	}
	if a.security == nil {
		a.security = make(map[securityKey]*securityCount)
	}
	a.security[k] = &securityCount{issuer: s.Issuer, n: 1}
}

// takeSecurity returns the security counts since the last take, most
// frequent first, and the refusals past the bound, and resets them.
func (a *Aggregator) takeSecurity() ([]*meshv1.SecurityCount, uint64) {
	a.secMu.Lock()
	counts, overflow := a.security, a.securityOverflow
	a.security, a.securityOverflow = nil, 0
	a.secMu.Unlock()
	out := make([]*meshv1.SecurityCount, 0, len(counts))
	for k, c := range counts {
		out = append(out, &meshv1.SecurityCount{
			Kind:              k.kind,
			PeerIp:            validUTF8(k.peerIP),
			PresentedSpiffeId: validUTF8(k.id),
			PresentedSerial:   validUTF8(k.serial),
			PresentedIssuer:   validUTF8(c.issuer),
			Port:              k.port,
			Count:             c.n,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case a.Count != b.Count:
			return a.Count > b.Count
		case a.Kind != b.Kind:
			return a.Kind < b.Kind
		case a.PeerIp != b.PeerIp:
			return a.PeerIp < b.PeerIp
		case a.PresentedSpiffeId != b.PresentedSpiffeId:
			return a.PresentedSpiffeId < b.PresentedSpiffeId
		case a.PresentedSerial != b.PresentedSerial:
			return a.PresentedSerial < b.PresentedSerial
		}
		return a.Port < b.Port
	})
	return out, overflow
}
