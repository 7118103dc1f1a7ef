package controller

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/rampart-mesh/rampart/internal/ca"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/revocation"
)

// RevocationsFile, in Config.StateDir, lists the revoked certificates and
// identities (rampart identity revoke).
const RevocationsFile = "revocations.json"

// Kinds of entries, the "kind" label of rampart_controller_revocations.
const (
	RevokedCertificates = "certificate"
	RevokedIdentities   = "identity"
	ReleasedIdentities  = "released_identity"
)

// revocations is the controller's view of the revocations file: the last
// good list read, and what follows from it now.
type revocations struct {
	gauge   *prometheus.GaugeVec
	reloads *prometheus.CounterVec
	dropped *prometheus.CounterVec // entries of the file not applied, by reason
	writes  *prometheus.CounterVec // rewrites of the file by the controller, by result

	mu           sync.Mutex
	loaded       *revocation.List       // last good content of the file, without the entries dropped
	stamp        fileStamp              // of the file loaded
	active       *revocation.List       // loaded, without lapsed entries, with the certificates renewed from revoked ones
	set          *meshtls.RevocationSet // what peers refuse under active
	pushed       *meshv1.Revocations    // given to the model last
	failed       fileStamp              // of the last file that did not load
	lastErr      string                 // last load error logged
	lastWriteErr string                 // last rewrite error logged
	retryWrite   time.Time              // no rewrite before, after one failed
	droppedSeen  map[string]bool        // entries dropped from the file last loaded, reported
}

// Reasons an entry of the file is not applied, the "reason" label of
// rampart_controller_revocation_entries_dropped_total.
const (
	DroppedControllerIdentity    = "controller_identity"
	DroppedControllerCertificate = "controller_certificate"
)

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	exists bool
	mod    time.Time
	size   int64
	ino    uint64
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileStamp{}, nil
	}
	if err != nil {
		return fileStamp{}, err
	}
	fs := fileStamp{exists: true, mod: st.ModTime(), size: st.Size()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		fs.ino = sys.Ino
	}
	return fs, nil
}

// RevocationsPath is where the revocations file is.
func (c *Controller) RevocationsPath() string { return filepath.Join(c.cfg.StateDir, RevocationsFile) }

// initRevocations registers the metrics and loads the revocations file; a
// file that does not load stops the start, rather than start with nothing
// revoked.
func (c *Controller) initRevocations() error {
	r := &c.revoked
	r.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rampart_controller_revocations",
		Help: "Entries of the revocation list in force (rampart identity revoke), by kind: certificate (by serial), identity (refused and not issued), released_identity (issued again; its older certificates still refused).",
	}, []string{"kind"})
	r.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_revocation_reloads_total",
		Help: "Reads of the revocations file after a change, by result (ok, error); an error keeps the list in force.",
	}, []string{"result"})
	for _, k := range []string{RevokedCertificates, RevokedIdentities, ReleasedIdentities} {
		r.gauge.WithLabelValues(k)
	}
	r.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_revocation_entries_dropped_total",
		Help: "Entries of the revocations file not applied, by reason (controller_identity, controller_certificate: they would cut every proxy off the control plane); the other entries apply.",
	}, []string{"reason"})
	r.writes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_revocation_writes_total",
		Help: "Rewrites of the revocations file by the controller (lapsed entries removed, certificates renewed from revoked ones added), by result (ok, error).",
	}, []string{"result"})
	r.reloads.WithLabelValues("ok")
	r.reloads.WithLabelValues("error")
	r.dropped.WithLabelValues(DroppedControllerIdentity)
	r.dropped.WithLabelValues(DroppedControllerCertificate)
	r.writes.WithLabelValues("ok")
	r.writes.WithLabelValues("error")
	c.reg.MustRegister(r.gauge, r.reloads, r.dropped, r.writes)
	if err := c.reloadRevocations(); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	return nil
}

// revocationLifetime is how long an entry refuses certificates issued
// before it: one certificate lifetime, plus the CA's backdating of
// NotBefore (ca.ClockSkew), plus the poll interval within which the
// controller reads the file after a change without notification.
func (c *Controller) revocationLifetime() time.Duration {
	return c.cfg.SVIDTTL + ca.ClockSkew + c.cfg.CAPollInterval
}

// reloadRevocations reads the file if it changed since the last read and
// puts it in force, then drops lapsed entries and pushes the list to every
// proxy if it changed. A file that does not load keeps the list in force;
// an entry that revokes the controller itself is dropped, the others
// apply.
func (c *Controller) reloadRevocations() error { return c.reloadRevocationsIf(true) }

// reloadRevocationsIf is reloadRevocations; when always is false, it does
// nothing unless the file changed.
func (c *Controller) reloadRevocationsIf(always bool) error {
	r := &c.revoked
	r.mu.Lock()
	defer r.mu.Unlock()
	path := c.RevocationsPath()
	stamp, err := stampOf(path)
	fresh := err == nil && (r.loaded == nil || stamp != r.stamp && stamp != r.failed)
	if !always && !fresh && r.loaded != nil {
		return nil
	}
	if fresh {
		var l *revocation.List
		l, err = revocation.Load(path)
		if err != nil {
			r.failed = stamp
		} else {
			first := r.loaded == nil
			r.loaded, r.stamp, r.lastErr = c.dropSelfRevocations(l), stamp, ""
			r.reloads.WithLabelValues("ok").Inc()
			if !first {
				c.logger.Info("revocation list reloaded", "file", path,
					"certificates", len(l.Certificates), "identities", len(l.Identities))
			}
		}
	}
	if err != nil {
		if r.loaded == nil {
			return err
		}
		r.reloads.WithLabelValues("error").Inc()
		// Each new file that fails is logged; a failing stat once.
		if fresh || err.Error() != r.lastErr {
			c.logger.Error("cannot read the revocation list; keeping the list in force", "file", path, "error", err.Error())
			r.lastErr = err.Error()
		}
	}
	c.applyRevocationsLocked()
	return nil
}

// dropSelfRevocations returns l without the entries that revoke the
// controller itself (every proxy would refuse the control plane), each
// logged and counted.
func (c *Controller) dropSelfRevocations(l *revocation.List) *revocation.List {
	self := ControllerID(c.td).String()
	var serving string
	if s := c.svid.Get(); s != nil {
		serving = ca.SerialOf(s.Certificates[0])
	}
	path := c.RevocationsPath()
	// An entry is reported once, not at every rewrite of the file.
	seen := c.revoked.droppedSeen
	c.revoked.droppedSeen = make(map[string]bool)
	report := func(key string) bool {
		c.revoked.droppedSeen[key] = true
		return !seen[key]
	}
	l.Identities = slices.DeleteFunc(l.Identities, func(id revocation.Identity) bool {
		if id.SPIFFEID != self {
			return false
		}
		if !report(id.SPIFFEID) {
			return true
		}
		c.revoked.dropped.WithLabelValues(DroppedControllerIdentity).Inc()
		c.logger.Error("revocation entry ignored: it revokes the controller's own identity, which would cut every proxy off the control plane; remove it from the file",
			"file", path, "spiffe_id", id.SPIFFEID)
		return true
	})
	l.Certificates = slices.DeleteFunc(l.Certificates, func(cert revocation.Certificate) bool {
		if serving == "" || cert.Serial != serving {
			return false
		}
		if !report(cert.Serial) {
			return true
		}
		c.revoked.dropped.WithLabelValues(DroppedControllerCertificate).Inc()
		c.logger.Error("revocation entry ignored: it revokes the controller's own serving certificate, which would cut every proxy off the control plane; remove it from the file",
			"file", path, "serial", cert.Serial)
		return true
	})
	return l
}

// applyRevocationsLocked recomputes the list in force from the loaded one
// at now, with the certificates renewed from revoked ones, and pushes it
// when it changed. When entries lapsed or such certificates were found,
// the file is rewritten: lapsed entries leave it, and the renewed
// certificates stay revoked after the one they were renewed from expires.
func (c *Controller) applyRevocationsLocked() {
	r := &c.revoked
	now, lifetime := c.cfg.Now(), c.revocationLifetime()
	active := r.loaded.Active(now, lifetime)
	lapsed := active.Len() < r.loaded.Len()
	renewed := c.leaves.renewedFromRevoked(active, now)
	if len(renewed) > 0 {
		active.Certificates = append(active.Certificates, renewed...)
		slices.SortFunc(active.Certificates, func(a, b revocation.Certificate) int { return cmp.Compare(a.Serial, b.Serial) })
	}
	pb := active.Proto(lifetime)
	r.active, r.set = active, active.Set()
	var released int
	for _, id := range active.Identities {
		if id.Released() {
			released++
		}
	}
	r.gauge.WithLabelValues(RevokedCertificates).Set(float64(len(active.Certificates)))
	r.gauge.WithLabelValues(RevokedIdentities).Set(float64(len(active.Identities) - released))
	r.gauge.WithLabelValues(ReleasedIdentities).Set(float64(released))
	if (lapsed || len(renewed) > 0) && !now.Before(r.retryWrite) {
		c.rewriteRevocationsLocked(renewed, now, lifetime)
	}
	if r.pushed != nil && proto.Equal(r.pushed, pb) {
		return
	}
	if r.pushed != nil || active.Len() > 0 {
		c.logger.Info("revocation list pushed to every proxy",
			"certificates", len(pb.Certificates), "identities", len(pb.Identities))
	}
	r.pushed = pb
	c.model.SetRevocations(pb)
}

// rewriteRevocationsLocked rewrites the file under its lock without the
// entries lapsed at now and with renewed added. The next reload reads it.
func (c *Controller) rewriteRevocationsLocked(renewed []revocation.Certificate, now time.Time, lifetime time.Duration) {
	r := &c.revoked
	_, err := revocation.Update(c.RevocationsPath(), now, lifetime, func(l *revocation.List) error {
		for _, cert := range renewed {
			if err := l.RevokeCertificate(cert); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.writes.WithLabelValues("error").Inc()
		r.retryWrite = now.Add(c.cfg.CAPollInterval)
		if err.Error() != r.lastWriteErr {
			c.logger.Error("cannot rewrite the revocation list; the entries in force stay in force", "file", c.RevocationsPath(), "error", err.Error())
			r.lastWriteErr = err.Error()
		}
		return
	}
	r.writes.WithLabelValues("ok").Inc()
	r.lastWriteErr = ""
	for _, cert := range renewed {
		c.logger.Warn("certificate renewed from a revoked one revoked too", "serial", cert.Serial, "spiffe_id", cert.SPIFFEID, "reason", cert.Reason)
	}
}

// lineage is what a certificate renewed from renewed inherits as
// ca.Leaf.RenewedFrom at now: renewed, then the certificates renewed was
// renewed from that have not expired, at most ca.MaxRenewedFrom.
func (b *leafBook) lineage(renewed *x509.Certificate, now time.Time) []ca.Renewal {
	if renewed == nil {
		return nil
	}
	serial := ca.SerialOf(renewed)
	out := []ca.Renewal{{Serial: serial, NotAfter: renewed.NotAfter.UTC()}}
	b.mu.Lock()
	prev := b.leaves[serial].RenewedFrom
	b.mu.Unlock()
	for _, r := range prev {
		if len(out) == ca.MaxRenewedFrom {
			break
		}
		if now.Before(r.NotAfter) {
			out = append(out, r)
		}
	}
	return out
}

// renewedFromRevoked returns the certificates in use at now that were
// renewed from a certificate l revokes and that l does not list, as
// entries revoked with it.
func (b *leafBook) renewedFromRevoked(l *revocation.List, now time.Time) []revocation.Certificate {
	if len(l.Certificates) == 0 {
		return nil
	}
	revoked := make(map[string]revocation.Certificate, len(l.Certificates))
	for _, cert := range l.Certificates {
		revoked[cert.Serial] = cert
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []revocation.Certificate
	for serial, leaf := range b.leaves {
		if _, listed := revoked[serial]; listed || !now.Before(leaf.NotAfter) {
			continue
		}
		for _, anc := range leaf.RenewedFrom {
			if parent, ok := revoked[anc.Serial]; ok {
				out = append(out, revocation.Certificate{
					Serial: serial, SPIFFEID: leaf.SPIFFEID, NotAfter: leaf.NotAfter.UTC(),
					RevokedAt: parent.RevokedAt, Reason: "renewed from revoked certificate " + parent.Serial,
				})
				break
			}
		}
	}
	return out
}

// descendsFromRevoked reports whether the certificate with serial was
// renewed from one set revokes.
func (b *leafBook) descendsFromRevoked(serial string, set *meshtls.RevocationSet) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, anc := range b.leaves[serial].RenewedFrom {
		if set.RevokesSerial(anc.Serial) {
			return true
		}
	}
	return false
}

// checkRevoked is controlplane's Revoked hook: a renewal presented with a
// revoked certificate, and any issuance of a revoked identity, are refused.
func (c *Controller) checkRevoked(id spiffeid.ID, presented *x509.Certificate) error {
	// A change of the file not read yet applies to this issuance already.
	_ = c.reloadRevocationsIf(false) // logged and counted; the list in force stays
	r := &c.revoked
	r.mu.Lock()
	set, active := r.set, r.active
	r.mu.Unlock()
	if presented != nil {
		if err := set.Check(presented); err != nil {
			var re *meshtls.RevokedError
			if errors.As(err, &re) && re.ID.IsZero() {
				return fmt.Errorf("the presented certificate %s is revoked; the workload must attest again (a new join token) to obtain a new one", re.Serial)
			}
			return fmt.Errorf("the presented certificate %s predates the revocation of %s", ca.SerialOf(presented), id)
		}
		if serial := ca.SerialOf(presented); c.leaves.descendsFromRevoked(serial, set) {
			return fmt.Errorf("the presented certificate %s was renewed from a revoked one; the workload must attest again (a new join token) to obtain a new one", serial)
		}
	}
	if active != nil {
		return active.CheckIssue(id, c.cfg.Now(), ca.ClockSkew)
	}
	return nil
}

// watchRevocations reloads the revocations file when it changes (at once
// with file-system notifications, every CAPollInterval in any case, which
// also drops entries that lapsed) until ctx ends.
func (c *Controller) watchRevocations(ctx context.Context) error {
	return c.watchStateFile(ctx, RevocationsFile, "revocation list", nil, func() time.Time {
		_ = c.reloadRevocations() // logged and counted; the list in force stays
		return time.Time{}
	})
}
