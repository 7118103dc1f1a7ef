package controller

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
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

	mu      sync.Mutex
	loaded  *revocation.List       // last good content of the file
	stamp   fileStamp              // of the file loaded
	active  *revocation.List       // loaded, without lapsed entries
	set     *meshtls.RevocationSet // what peers refuse under active
	pushed  *meshv1.Revocations    // given to the model last
	failed  fileStamp              // of the last file that did not load
	lastErr string                 // last load error logged
}

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
	r.reloads.WithLabelValues("ok")
	r.reloads.WithLabelValues("error")
	c.reg.MustRegister(r.gauge, r.reloads)
	if err := c.reloadRevocations(); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	return nil
}

// reloadRevocations reads the file if it changed since the last read and
// puts it in force, then drops lapsed entries and pushes the list to every
// proxy if it changed. A file that does not load keeps the list in force.
func (c *Controller) reloadRevocations() error {
	r := &c.revoked
	r.mu.Lock()
	defer r.mu.Unlock()
	path := c.RevocationsPath()
	stamp, err := stampOf(path)
	if err == nil && (r.loaded == nil || stamp != r.stamp && stamp != r.failed) {
		var l *revocation.List
		l, err = revocation.Load(path)
		if err == nil {
			err = c.checkRevocations(l)
		}
		if err != nil {
			r.failed = stamp
		}
		if err == nil {
			first := r.loaded == nil
			r.loaded, r.stamp, r.lastErr = l, stamp, ""
			r.reloads.WithLabelValues("ok").Inc()
			if !first {
				c.logger.Info("revocation list reloaded", "file", path,
					"certificates", len(l.Certificates), "identities", len(l.Identities))
			}
		}
	}
	if err != nil {
		if r.loaded != nil {
			r.reloads.WithLabelValues("error").Inc()
			if err.Error() != r.lastErr {
				c.logger.Error("cannot read the revocation list; keeping the list in force", "file", path, "error", err.Error())
				r.lastErr = err.Error()
			}
		}
		if r.loaded == nil {
			return err
		}
	}
	c.applyRevocationsLocked()
	return nil
}

// checkRevocations refuses a list that revokes the controller itself: every
// proxy would refuse the control plane.
func (c *Controller) checkRevocations(l *revocation.List) error {
	self := ControllerID(c.td).String()
	var serving string
	if s := c.svid.Get(); s != nil {
		serving = ca.SerialOf(s.Certificates[0])
	}
	for _, id := range l.Identities {
		if id.SPIFFEID == self {
			return fmt.Errorf("revocation: %s: revokes the controller's own identity %s; remove that entry", c.RevocationsPath(), self)
		}
	}
	for _, cert := range l.Certificates {
		if serving != "" && cert.Serial == serving {
			return fmt.Errorf("revocation: %s: revokes the controller's own serving certificate %s; remove that entry", c.RevocationsPath(), serving)
		}
	}
	return nil
}

// applyRevocationsLocked recomputes the list in force from the loaded one
// at now and pushes it when it changed.
func (c *Controller) applyRevocationsLocked() {
	r := &c.revoked
	active := r.loaded.Active(c.cfg.Now(), c.cfg.SVIDTTL)
	pb := active.Proto(c.cfg.SVIDTTL)
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

// checkRevoked is controlplane's Revoked hook: a renewal presented with a
// revoked certificate, and any issuance of a revoked identity, are refused.
func (c *Controller) checkRevoked(id spiffeid.ID, presented *x509.Certificate) error {
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
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(c.cfg.StateDir); err != nil {
			w.Close()
		}
	}
	if err != nil {
		c.logger.Warn("cannot watch the state directory; reading the revocation list every CA poll interval only",
			"dir", c.cfg.StateDir, "interval", c.cfg.CAPollInterval.String(), "error", err.Error())
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	t := time.NewTicker(c.cfg.CAPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if filepath.Base(ev.Name) != RevocationsFile {
				continue
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			c.logger.Warn("state directory watch error; the CA poll interval still applies", "error", err.Error())
			continue
		case <-t.C:
		}
		_ = c.reloadRevocations() // logged and counted; the list in force stays
	}
}
