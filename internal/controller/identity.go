package controller

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampart-mesh/rampart/internal/ca"
)

// DefaultCAPollInterval is how often the controller reads the CA state for
// changes made by `rampart identity`.
const DefaultCAPollInterval = 2 * time.Second

// Expiry warnings of /identity: a root or issuer that expires within these.
const (
	ExpiryWarning  = 30 * 24 * time.Hour
	ExpiryCritical = 7 * 24 * time.Hour
)

// Kinds of issued certificates, the "kind" label of
// rampart_controller_certificates_issued_total.
const (
	KindWorkload = "workload"
	KindServing  = "serving"
)

// leafBook is the controller's record of the leaf certificates in use: the
// latest one issued to each holder, until it expires or is renewed. The CA
// reads its published copy before retiring a root.
type leafBook struct {
	mu     sync.Mutex
	leaves map[string]ca.Leaf // by serial
	dirty  bool               // changed since last taken
}

// add records l, replacing the leaf with serial replaces (a renewal).
func (b *leafBook) add(l ca.Leaf, replaces string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.leaves == nil {
		b.leaves = make(map[string]ca.Leaf)
	}
	if replaces != "" {
		delete(b.leaves, replaces)
	}
	b.leaves[l.Serial] = l
	b.dirty = true
}

// list returns the unexpired leaves, sorted by SPIFFE ID then expiry, and
// forgets the expired ones.
func (b *leafBook) list(now time.Time) []ca.Leaf {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]ca.Leaf, 0, len(b.leaves))
	for serial, l := range b.leaves {
		if !now.Before(l.NotAfter) {
			delete(b.leaves, serial)
			b.dirty = true
			continue
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b ca.Leaf) int {
		return cmp.Or(cmp.Compare(a.SPIFFEID, b.SPIFFEID), a.NotAfter.Compare(b.NotAfter), cmp.Compare(a.Serial, b.Serial))
	})
	return out
}

// takeDirty reports whether the book changed since the last call.
func (b *leafBook) takeDirty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.dirty
	b.dirty = false
	return d
}

func (b *leafBook) setDirty() {
	b.mu.Lock()
	b.dirty = true
	b.mu.Unlock()
}

// loadLeaves starts the record of leaves in use from the one an earlier run
// published, keeping its unexpired workload certificates: without them a
// restart would forget every certificate issued before it, and RetireRoot
// would let a root go while proxies still hold certificates under it. The
// earlier run's serving certificate is left out: it is no longer in use.
func (c *Controller) loadLeaves() error {
	recorded, err := c.ca.RecordedLeaves()
	if err != nil {
		return fmt.Errorf("controller: record of certificates in use: %w", err)
	}
	now := c.cfg.Now()
	self := ControllerID(c.td).String()
	for _, l := range recorded {
		if l.Kind == ca.KindServing || l.SPIFFEID == self || !now.Before(l.NotAfter) {
			continue
		}
		c.leaves.add(l, "")
	}
	return nil
}

// workloadIssued is controlplane's Issued hook.
func (c *Controller) workloadIssued(chain []*x509.Certificate, digest string, renewed *x509.Certificate) {
	c.issuedTotal.WithLabelValues(KindWorkload).Inc()
	l := c.ca.LeafOf(chain, digest)
	l.RenewedFrom = c.leaves.lineage(renewed, c.cfg.Now()) // revoke.go
	c.leaves.add(l, ca.SerialOf(renewed))
}

// setServingSVID installs the controller's serving certificate and records
// it as a leaf in use, in place of the one it replaces.
func (c *Controller) setServingSVID(svid *x509svid.SVID) error {
	c.servingMu.Lock()
	defer c.servingMu.Unlock()
	prev := c.svid.Get()
	if err := c.svid.Set(svid); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	c.issuedTotal.WithLabelValues(KindServing).Inc()
	var replaces string
	if prev != nil {
		replaces = ca.SerialOf(prev.Certificates[0])
	}
	l := c.ca.LeafOf(svid.Certificates, "")
	l.Kind = ca.KindServing
	c.leaves.add(l, replaces)
	return nil
}

// watchCA reads the CA state every CAPollInterval until ctx ends, applying
// what `rampart identity` changed, and publishes the leaves in use when
// they change.
func (c *Controller) watchCA(ctx context.Context, listenHost string) error {
	c.syncCA(listenHost)
	t := time.NewTicker(c.cfg.CAPollInterval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := c.ca.Reload(); err != nil {
			c.caReloads.WithLabelValues("error").Inc()
			if err.Error() != lastErr {
				c.logger.Error("cannot read the CA state; issuing with the last good one", "error", err.Error())
				lastErr = err.Error()
			}
			continue
		}
		c.caReloads.WithLabelValues("ok").Inc()
		lastErr = ""
		c.syncCA(listenHost)
	}
}

// syncCA applies a changed trust bundle or issuer: the serving certificate
// is re-issued if its issuer changed (ca.ServingIntermediate: it stays
// under the previous root until that is retired), then every proxy
// receives the bundle and the published bundle file is rewritten. Then the
// leaves in use are published if they changed. Only watchCA calls it.
func (c *Controller) syncCA(listenHost string) {
	v := c.ca.Version()
	changed := v != c.caVersion
	if changed {
		// The serving certificate first: after a retire, proxies given
		// the new bundle must find it under a root they still trust.
		servingInter := c.ca.ServingIntermediate()
		if cur := c.svid.Get(); cur != nil && len(cur.Certificates) > 1 && !cur.Certificates[1].Equal(servingInter) {
			svid, err := c.issueServingSVID(listenHost)
			if err == nil {
				err = c.setServingSVID(svid)
			}
			if err != nil {
				c.logger.Error("cannot re-issue the serving certificate from the new issuer", "error", err.Error())
			}
		}
		roots := c.ca.Roots()
		c.bundle.SetRoots(c.td, roots)
		c.model.SetTrustBundle(roots)
		if err := writeBundle(c.BundlePath(), roots); err != nil {
			c.logger.Error("cannot publish the trust bundle file", "error", err.Error())
		}
		inter := c.ca.Intermediate()
		attrs := []any{"issuer", ca.SerialOf(inter), "issuer_not_after", inter.NotAfter}
		for _, a := range c.ca.Anchors() {
			attrs = append(attrs, "anchor_"+a.Role, ca.SerialOf(a.Cert))
		}
		if c.caVersion != "" {
			c.logger.Info("trust bundle or issuer changed; pushed to every proxy", attrs...)
		}
		c.caVersion = v
	}
	if c.leaves.takeDirty() || changed {
		if err := c.ca.PublishLeaves(c.leaves.list(c.cfg.Now())); err != nil {
			c.leaves.setDirty()
			c.logger.Error("cannot record the certificates in use", "error", err.Error())
		}
	}
}

// IdentityStatus is the JSON of the admin endpoint /identity.
type IdentityStatus struct {
	TrustDomain  string          `json:"trust_domain"`
	External     bool            `json:"external"`
	TrustAnchors []CertStatus    `json:"trust_anchors"`
	Issuer       CertStatus      `json:"issuer"`
	Workloads    []WorkloadCerts `json:"workloads"`
	Warnings     []string        `json:"warnings"`
}

// CertStatus describes a CA certificate.
type CertStatus struct {
	Serial   string    `json:"serial"`
	Subject  string    `json:"subject"`
	Role     string    `json:"role,omitempty"`
	Root     string    `json:"root,omitempty"` // the issuer's root
	NotAfter time.Time `json:"not_after"`
}

// WorkloadCerts describes a leaf certificate in use.
type WorkloadCerts = ca.Leaf

// IdentityStatus reports the trust anchors, the issuer and the leaf
// certificates in use, with warnings for a root or issuer near expiry.
func (c *Controller) IdentityStatus() IdentityStatus {
	now := c.cfg.Now()
	st := IdentityStatus{
		TrustDomain: c.td.Name(),
		External:    c.ca.External(),
		Workloads:   c.leaves.list(now),
		Warnings:    []string{},
	}
	inter := c.ca.Intermediate()
	st.Issuer = CertStatus{Serial: ca.SerialOf(inter), Subject: inter.Subject.String(), NotAfter: inter.NotAfter}
	for _, a := range c.ca.Anchors() {
		st.TrustAnchors = append(st.TrustAnchors, CertStatus{
			Serial: ca.SerialOf(a.Cert), Subject: a.Cert.Subject.String(), Role: a.Role, NotAfter: a.Cert.NotAfter,
		})
		if inter.CheckSignatureFrom(a.Cert) == nil {
			st.Issuer.Root = ca.SerialOf(a.Cert)
		}
		if w := expiryWarning("trust anchor "+ca.SerialOf(a.Cert)+" ("+a.Role+")", a.Cert.NotAfter, now); w != "" {
			st.Warnings = append(st.Warnings, w)
		}
	}
	if w := expiryWarning("issuer "+st.Issuer.Serial, inter.NotAfter, now); w != "" {
		st.Warnings = append(st.Warnings, w)
	}
	return st
}

// expiryWarning is a warning for what expires at notAfter, or "".
func expiryWarning(what string, notAfter, now time.Time) string {
	left := notAfter.Sub(now)
	at := notAfter.UTC().Format(time.RFC3339)
	switch {
	case left <= 0:
		return fmt.Sprintf("CRITICAL: %s expired at %s", what, at)
	case left <= ExpiryCritical:
		return fmt.Sprintf("CRITICAL: %s expires in %s, at %s; rotate it now (docs/identity.md)", what, left.Round(time.Minute), at)
	case left <= ExpiryWarning:
		return fmt.Sprintf("WARNING: %s expires in %d days, at %s; plan its rotation (docs/identity.md)", what, int(left.Hours()/24), at)
	}
	return ""
}

func (c *Controller) serveIdentity(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(c.IdentityStatus())
}

// expiryCollector exports the expiry of the trust anchors and the issuer,
// read from the CA at each scrape.
type expiryCollector struct {
	ca     *ca.CA
	anchor *prometheus.Desc
	issuer *prometheus.Desc
}

func newExpiryCollector(authority *ca.CA) *expiryCollector {
	return &expiryCollector{
		ca: authority,
		anchor: prometheus.NewDesc("rampart_controller_trust_anchor_expiry_timestamp_seconds",
			"Expiry (NotAfter, Unix seconds) of each root in the trust bundle, by serial and role (active, next, previous, trusted).",
			[]string{"anchor", "role"}, nil),
		issuer: prometheus.NewDesc("rampart_controller_issuer_expiry_timestamp_seconds",
			"Expiry (NotAfter, Unix seconds) of the intermediate that issues certificates now, by serial.",
			[]string{"issuer"}, nil),
	}
}

func (e *expiryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- e.anchor
	ch <- e.issuer
}

func (e *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range e.ca.Anchors() {
		ch <- prometheus.MustNewConstMetric(e.anchor, prometheus.GaugeValue, float64(a.Cert.NotAfter.Unix()), ca.SerialOf(a.Cert), a.Role)
	}
	inter := e.ca.Intermediate()
	ch <- prometheus.MustNewConstMetric(e.issuer, prometheus.GaugeValue, float64(inter.NotAfter.Unix()), ca.SerialOf(inter))
}
