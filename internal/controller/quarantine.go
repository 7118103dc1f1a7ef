package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/quarantine"
)

// QuarantineFile, in Config.StateDir, lists the quarantined identities
// (rampart quarantine).
const QuarantineFile = "quarantine.json"

// Labels of rampart_controller_quarantine_changes_total.
const (
	QuarantineAdd     = "add"
	QuarantineRelease = "release"
	QuarantineExpire  = "expire"
)

// quarantines is the controller's view of the quarantine file: the last
// good list read and the entries in force.
type quarantines struct {
	gauge   prometheus.Gauge
	changes *prometheus.CounterVec // by action and by
	reloads *prometheus.CounterVec // by result

	mu      sync.Mutex
	loaded  *quarantine.List            // last good content of the file
	stamp   fileStamp                   // of the file loaded
	failed  fileStamp                   // of the last file that did not load
	lastErr string                      // last load error logged
	active  map[string]quarantine.Entry // in force, by SPIFFE ID
	pushed  *meshv1.Quarantine          // given to the model last
	wake    chan struct{}               // signalled when the next expiry may have changed
	next    time.Time                   // earliest expiry of active; zero when none
}

// QuarantinePath is where the quarantine file is.
func (c *Controller) QuarantinePath() string { return filepath.Join(c.cfg.StateDir, QuarantineFile) }

// initQuarantine registers the metrics and loads the quarantine file; a
// file that does not load stops the start, rather than start with nobody
// quarantined.
func (c *Controller) initQuarantine() error {
	q := &c.quarantined
	q.wake = make(chan struct{}, 1)
	q.gauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rampart_controller_quarantined_identities",
		Help: "Identities quarantined now (rampart quarantine, or a detection whose response is to quarantine): every proxy refuses their handshakes.",
	})
	q.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_quarantine_changes_total",
		Help: "Changes of the quarantine in force, by action (add, release, expire) and by whom the entry was set (operator, detection).",
	}, []string{"action", "by"})
	q.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_controller_quarantine_reloads_total",
		Help: "Reads of the quarantine file after a change, by result (ok, error); an error keeps the quarantine in force.",
	}, []string{"result"})
	for _, a := range []string{QuarantineAdd, QuarantineRelease, QuarantineExpire} {
		for _, by := range []string{quarantine.ByOperator, quarantine.ByDetection} {
			q.changes.WithLabelValues(a, by)
		}
	}
	q.reloads.WithLabelValues("ok")
	q.reloads.WithLabelValues("error")
	c.reg.MustRegister(q.gauge, q.changes, q.reloads)
	if err := c.reloadQuarantine(true); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	return nil
}

// reloadQuarantine reads the file if it changed since the last read (or
// always, when always is set), then puts in force the entries not expired
// at now and pushes them to every proxy if they changed. A file that does
// not load keeps the quarantine in force.
func (c *Controller) reloadQuarantine(always bool) error {
	q := &c.quarantined
	q.mu.Lock()
	defer q.mu.Unlock()
	path := c.QuarantinePath()
	st, err := stampOf(path)
	fresh := err == nil && (q.loaded == nil || st != q.stamp && st != q.failed)
	if !always && !fresh && q.loaded != nil {
		return nil
	}
	if fresh {
		var l *quarantine.List
		l, err = quarantine.Load(path)
		if err != nil {
			q.failed = st
		} else {
			q.loaded, q.stamp, q.lastErr = l, st, ""
			q.reloads.WithLabelValues("ok").Inc()
		}
	}
	if err != nil {
		if q.loaded == nil {
			return err
		}
		q.reloads.WithLabelValues("error").Inc()
		if fresh || err.Error() != q.lastErr {
			c.logger.Error("cannot read the quarantine list; keeping the quarantine in force", "file", path, "error", err.Error())
			q.lastErr = err.Error()
		}
	}
	c.applyQuarantineLocked()
	return nil
}

// applyQuarantineLocked puts in force the entries of the loaded list not
// expired at now: each change is logged and counted, and the list pushed
// to every proxy when it changed.
func (c *Controller) applyQuarantineLocked() {
	q := &c.quarantined
	now := c.cfg.Now()
	active := q.loaded.Active(now)
	next := make(map[string]quarantine.Entry, len(active.Identities))
	for _, e := range active.Identities {
		next[e.SPIFFEID] = e
		if old, ok := q.active[e.SPIFFEID]; ok && old == e {
			continue
		}
		q.changes.WithLabelValues(QuarantineAdd, byLabel(e)).Inc()
		c.logger.Warn("identity quarantined: every proxy refuses its handshakes",
			"spiffe_id", e.SPIFFEID, "until", e.Until.UTC().Format(time.RFC3339), "reason", e.Reason, "by", e.By)
	}
	for id, e := range q.active {
		if _, ok := next[id]; ok {
			continue
		}
		if !now.Before(e.Until) {
			q.changes.WithLabelValues(QuarantineExpire, byLabel(e)).Inc()
			c.logger.Info("quarantine expired", "spiffe_id", id, "until", e.Until.UTC().Format(time.RFC3339), "by", e.By)
			continue
		}
		q.changes.WithLabelValues(QuarantineRelease, byLabel(e)).Inc()
		c.logger.Info("quarantine released", "spiffe_id", id, "by", e.By)
	}
	q.active = next
	q.gauge.Set(float64(len(next)))
	if n := active.NextExpiry(); !n.Equal(q.next) {
		q.next = n
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	pb := active.Proto()
	if q.pushed != nil && proto.Equal(q.pushed, pb) {
		return
	}
	q.pushed = pb
	c.model.SetQuarantine(pb)
}

// byLabel is the "by" label of an entry: operator or detection.
func byLabel(e quarantine.Entry) string {
	if e.ByOperator() {
		return quarantine.ByOperator
	}
	return quarantine.ByDetection
}

// quarantineIdentity quarantines id until until on behalf of a detection:
// the entry's author is the event ID that ends reason (its last word), or
// "detection" when reason does not end with one. The quarantine is in
// force and pushed to every proxy when it returns.
func (c *Controller) quarantineIdentity(id spiffeid.ID, until time.Time, reason string) error {
	by := quarantine.ByDetection
	if f := strings.Fields(reason); len(f) > 0 && quarantine.IsEventID(f[len(f)-1]) {
		by = f[len(f)-1]
	}
	if id.TrustDomain() != c.td {
		return fmt.Errorf("controller: quarantine %s: not in the mesh's trust domain %s", id, c.td.Name())
	}
	now := c.cfg.Now().UTC()
	e := quarantine.Entry{SPIFFEID: id.String(), Since: now, Until: until.UTC(), Reason: reason, By: by}
	if _, err := quarantine.Update(c.QuarantinePath(), now, func(l *quarantine.List) error {
		// A detection never shortens a quarantine nor overrides an
		// operator's: the quarantined workload could otherwise end its
		// own by provoking a detection.
		for _, x := range l.Identities {
			if x.SPIFFEID == e.SPIFFEID && (x.By == quarantine.ByOperator || !x.Until.Before(e.Until)) {
				return nil
			}
		}
		return l.Add(e)
	}); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	return c.reloadQuarantine(false)
}

// watchQuarantine reloads the quarantine file when it changes (at once
// with file-system notifications, every CAPollInterval in any case) and
// when the next entry expires, until ctx ends.
func (c *Controller) watchQuarantine(ctx context.Context) error {
	q := &c.quarantined
	return c.watchStateFile(ctx, QuarantineFile, "quarantine list", q.wake, func() time.Time {
		// Always applied: expiries are due even when the file is unchanged.
		_ = c.reloadQuarantine(true) // logged and counted; the quarantine in force stays
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.next
	})
}

// QuarantinedIdentity is one entry of GET /api/v1/quarantine.
type QuarantinedIdentity struct {
	SPIFFEID string `json:"spiffeId"`
	Until    string `json:"until"`
	Reason   string `json:"reason"`
	Since    string `json:"since"`
	By       string `json:"by"`
}

// QuarantineResponse is the body of GET /api/v1/quarantine.
type QuarantineResponse struct {
	Identities []QuarantinedIdentity `json:"identities"`
}

// Quarantined returns the identities quarantined now, sorted by identity.
func (c *Controller) Quarantined() QuarantineResponse {
	q := &c.quarantined
	q.mu.Lock()
	l := q.loaded
	q.mu.Unlock()
	return QuarantineView(l, c.cfg.Now())
}

// QuarantineView is the answer of GET /api/v1/quarantine for the list l at
// now: its entries not expired, sorted by identity.
func QuarantineView(l *quarantine.List, now time.Time) QuarantineResponse {
	l = l.Active(now)
	out := QuarantineResponse{Identities: make([]QuarantinedIdentity, 0, len(l.Identities))}
	for _, e := range l.Identities {
		out.Identities = append(out.Identities, QuarantinedIdentity{
			SPIFFEID: e.SPIFFEID,
			Until:    e.Until.UTC().Format(time.RFC3339),
			Reason:   e.Reason,
			Since:    e.Since.UTC().Format(time.RFC3339),
			By:       e.By,
		})
	}
	return out
}

// serveQuarantine is GET /api/v1/quarantine: the identities quarantined
// now, as QuarantineResponse. A change of the file not read yet is read
// first.
func (c *Controller) serveQuarantine(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		http.Error(w, "quarantine: this endpoint takes no query parameters", http.StatusBadRequest)
		return
	}
	_ = c.reloadQuarantine(false) // logged and counted; the quarantine in force stays
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(c.Quarantined())
}
