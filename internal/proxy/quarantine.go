package proxy

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// Limits of the quarantine list a proxy accepts.
const (
	maxQuarantine       = 10000
	maxQuarantineReason = 256
)

// rejectQuarantine is the reason label of a configuration whose
// quarantine list is malformed.
const rejectQuarantine = "quarantine"

// validateQuarantine checks the quarantine list of a configuration and
// builds the set peers are checked against. A configuration without one
// quarantines nothing. An entry naming the controller's identity ctrl is
// left out and returned in ignored: in force, it would cut the proxy off
// the control plane, and with it from the list that ends the quarantine.
// An entry whose until has passed stays in the set, where it no longer
// applies (meshtls.QuarantineSet checks until at each handshake).
func validateQuarantine(q *meshv1.Quarantine, ctrl spiffeid.ID) (set *meshtls.QuarantineSet, ignored []string, err error) {
	entries := q.GetIdentities()
	if len(entries) > maxQuarantine {
		return nil, nil, reject(rejectQuarantine, "quarantine: %d entries, more than the %d allowed", len(entries), maxQuarantine)
	}
	until := make(map[spiffeid.ID]time.Time, len(entries))
	seen := make(map[spiffeid.ID]bool, len(entries))
	for i, e := range entries {
		id, err := spiffeid.FromString(e.GetSpiffeId())
		if err != nil {
			return nil, nil, reject(rejectQuarantine, "quarantine.identities[%d]: spiffe_id %q: %w", i, e.GetSpiffeId(), err)
		}
		if seen[id] {
			return nil, nil, reject(rejectQuarantine, "quarantine.identities[%d]: %s listed twice", i, id)
		}
		seen[id] = true
		if err := e.GetUntil().CheckValid(); err != nil {
			return nil, nil, reject(rejectQuarantine, "quarantine.identities[%d] (%s): until: %w", i, id, err)
		}
		if len(e.GetReason()) > maxQuarantineReason {
			return nil, nil, reject(rejectQuarantine, "quarantine.identities[%d] (%s): reason longer than %d bytes", i, id, maxQuarantineReason)
		}
		if id == ctrl {
			ignored = append(ignored, id.String())
			continue
		}
		until[id] = e.GetUntil().AsTime()
	}
	return meshtls.NewQuarantineSet(until), ignored, nil
}

// applyQuarantine puts set in force: handshakes from now on are checked
// against it, in both directions, then the tunnel connections open with a
// peer it quarantines are closed. list is the configuration's list, for
// the log; ignored the entries left out because they name the controller.
// A proxy whose own identity is quarantined keeps running, with its
// control-plane streams, and says so at every configuration: its peers
// refuse it until the quarantine ends or is released.
func (p *Proxy) applyQuarantine(set *meshtls.QuarantineSet, ignored []string, list *meshv1.Quarantine) {
	for _, id := range ignored {
		p.log.Error("quarantine entry ignored: it names the controller's identity, which would cut this proxy off the control plane",
			"spiffe_id", id)
	}
	prev := p.tls.Quarantine.Get()
	p.tls.Quarantine.Set(set)
	if set.Len() == 0 && prev.Len() == 0 {
		return
	}
	if closed := p.closeRefusedPeers(); closed > 0 {
		p.log.Warn("closed tunnel connections with peers the mesh no longer accepts", "connections", closed, "quarantined", set.Len())
	}
	if until, ok := set.Quarantines(p.id, p.cfg.Now()); ok {
		reason := ""
		for _, e := range list.GetIdentities() {
			if e.GetSpiffeId() == p.id.String() {
				reason = e.GetReason()
				break
			}
		}
		p.log.Error("THIS PROXY'S OWN IDENTITY IS QUARANTINED: every peer refuses it until the quarantine ends or an operator releases it (rampart quarantine release)",
			"until", until.UTC().Format(time.RFC3339), "reason", reason)
	}
}

// closeRefusedPeers closes the tunnel connections, in both directions,
// with peers that the lists in force refuse (revoked, quarantined), and
// returns how many it closed.
func (p *Proxy) closeRefusedPeers() int {
	closed := p.dialer.CloseRefused()
	if l := p.tunnelLis.Load(); l != nil {
		closed += l.CloseRefused()
	}
	return closed
}

// applyRefusedQuarantine puts in force the quarantine list of a
// configuration refused for another reason (refused), as
// applyRefusedRevocations does with revocations. A malformed list leaves
// the one in force.
func (p *Proxy) applyRefusedQuarantine(pc *meshv1.ProxyConfig, refused error) {
	if rejectReason(refused) == rejectQuarantine {
		return
	}
	set, ignored, err := validateQuarantine(pc.GetQuarantine(), p.ctrl)
	if err != nil {
		p.log.Error("refused the quarantine list of a refused configuration; keeping the one in force",
			"version", pc.GetVersion(), "err", err)
		return
	}
	p.applyQuarantine(set, ignored, pc.GetQuarantine())
}
