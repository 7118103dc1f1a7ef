package proxy

import (
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// Limits of the revocation list a proxy accepts.
const (
	maxRevocations      = 10000
	maxRevocationReason = 256
	maxSerialLen        = 40 // hexadecimal digits: RFC 5280 allows 20 octets
)

// rejectRevocations is the reason label of a configuration whose
// revocation list is malformed.
const rejectRevocations = "revocations"

// validateRevocations checks the revocation list of a configuration and
// builds the set peers are checked against. A configuration without one
// revokes nothing. An entry that revokes the controller's identity ctrl
// is left out and returned in ignored: in force, it would cut the proxy
// off the control plane for good, and with it from every later list.
func validateRevocations(r *meshv1.Revocations, ctrl spiffeid.ID) (set *meshtls.RevocationSet, ignored []string, err error) {
	certs, ids := r.GetCertificates(), r.GetIdentities()
	if n := len(certs) + len(ids); n > maxRevocations {
		return nil, nil, reject(rejectRevocations, "revocations: %d entries, more than the %d allowed", n, maxRevocations)
	}
	serials := make([]string, 0, len(certs))
	seen := make(map[string]bool, len(certs))
	for i, c := range certs {
		if err := checkSerial(c.GetSerial()); err != nil {
			return nil, nil, reject(rejectRevocations, "revocations.certificates[%d]: %w", i, err)
		}
		if seen[c.GetSerial()] {
			return nil, nil, reject(rejectRevocations, "revocations.certificates[%d]: serial %s listed twice", i, c.GetSerial())
		}
		seen[c.GetSerial()] = true
		if err := c.GetNotAfter().CheckValid(); err != nil {
			return nil, nil, reject(rejectRevocations, "revocations.certificates[%d] (%s): not_after: %w", i, c.GetSerial(), err)
		}
		if len(c.GetReason()) > maxRevocationReason {
			return nil, nil, reject(rejectRevocations, "revocations.certificates[%d] (%s): reason longer than %d bytes", i, c.GetSerial(), maxRevocationReason)
		}
		serials = append(serials, c.GetSerial())
	}
	revokedAt := make(map[spiffeid.ID]time.Time, len(ids))
	for i, e := range ids {
		id, err := spiffeid.FromString(e.GetSpiffeId())
		if err != nil {
			return nil, nil, reject(rejectRevocations, "revocations.identities[%d]: spiffe_id %q: %w", i, e.GetSpiffeId(), err)
		}
		if _, dup := revokedAt[id]; dup || id == ctrl && slices.Contains(ignored, id.String()) {
			return nil, nil, reject(rejectRevocations, "revocations.identities[%d]: %s listed twice", i, id)
		}
		if err := e.GetRevokedAt().CheckValid(); err != nil {
			return nil, nil, reject(rejectRevocations, "revocations.identities[%d] (%s): revoked_at: %w", i, id, err)
		}
		if len(e.GetReason()) > maxRevocationReason {
			return nil, nil, reject(rejectRevocations, "revocations.identities[%d] (%s): reason longer than %d bytes", i, id, maxRevocationReason)
		}
		if id == ctrl {
			ignored = append(ignored, id.String())
			continue
		}
		revokedAt[id] = e.GetRevokedAt().AsTime()
	}
	return meshtls.NewRevocationSet(serials, revokedAt), ignored, nil
}

// checkSerial refuses what is not a serial number in lower-case
// hexadecimal without leading zeros.
func checkSerial(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("serial is empty")
	case len(s) > maxSerialLen:
		return fmt.Errorf("serial has more than %d hexadecimal digits", maxSerialLen)
	case s[0] == '0':
		return fmt.Errorf("serial %q has a leading zero", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("serial %q is not lower-case hexadecimal", s)
		}
	}
	return nil
}

// applyRevocations puts set in force: handshakes from now on are checked
// against it, then the tunnel connections open with a peer it revokes are
// closed, in both directions. ignored are the entries left out because
// they revoke the controller (validateRevocations). A proxy whose own
// certificate is revoked keeps running but is cut off: its peers refuse
// it, the controller ends its discovery stream and refuses its renewals;
// it says so at every configuration it still receives.
func (p *Proxy) applyRevocations(set *meshtls.RevocationSet, ignored []string) {
	for _, id := range ignored {
		p.log.Error("revocation entry ignored: it revokes the controller's identity, which would cut this proxy off the control plane for good",
			"spiffe_id", id)
	}
	prev := p.tls.Revocations.Get()
	p.tls.Revocations.Set(set)
	if set.Len() == 0 && prev.Len() == 0 {
		return
	}
	if closed := p.closeRefusedPeers(); closed > 0 {
		p.log.Warn("closed tunnel connections with revoked peers", "connections", closed, "revocations", set.Len())
	}
	if s := p.svid.Get(); s != nil {
		if err := set.Check(s.Certificates[0]); err != nil {
			p.log.Error("THIS PROXY'S OWN CERTIFICATE IS REVOKED: every peer refuses it; the workload must attest again (restart the proxy with a new join token)",
				"serial", meshtls.SerialOf(s.Certificates[0]), "err", err)
		}
	}
}

// applyRefusedRevocations puts in force the revocation list of a
// configuration refused for another reason (refused): the list does not
// depend on the rest, and a revocation must not wait for an unrelated
// fix. A malformed list leaves the one in force.
func (p *Proxy) applyRefusedRevocations(pc *meshv1.ProxyConfig, refused error) {
	if rejectReason(refused) == rejectRevocations {
		return
	}
	set, ignored, err := validateRevocations(pc.GetRevocations(), p.ctrl)
	if err != nil {
		p.log.Error("refused the revocation list of a refused configuration; keeping the one in force",
			"version", pc.GetVersion(), "err", err)
		return
	}
	p.applyRevocations(set, ignored)
}
