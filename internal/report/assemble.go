package report

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/rampart-mesh/rampart/internal/discovery"
	"github.com/rampart-mesh/rampart/internal/insights"
)

// granularityNote is what the report says about how its traffic figures
// are counted.
const granularityNote = "Traffic, encryption and denial figures come from the controller's hourly ledger: " +
	"the first hour counted is the whole hour that contains the start of the period, and the current hour is counted up to now."

// CheckPeriod reports whether d is a period a report may cover.
func CheckPeriod(d time.Duration) error {
	if d < MinPeriod || d > MaxPeriod {
		return fmt.Errorf("report: period %s: want 1h to 7d (168h)", d)
	}
	if d%time.Hour != 0 {
		return fmt.Errorf("report: period %s: want whole hours (the ledger counts by hour)", d)
	}
	return nil
}

// ParsePeriod parses a period: a Go duration in whole hours ("24h") or a
// number of days ("7d"), from 1h to 7d; "" is DefaultPeriod.
func ParsePeriod(s string) (time.Duration, error) {
	if s == "" {
		return DefaultPeriod, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || fmt.Sprint(n) != days {
			return 0, fmt.Errorf("report: period %q: want hours (24h) or days (7d)", s)
		}
		if n < 1 || n > 7 {
			return 0, fmt.Errorf("report: period %q: want 1h to 7d", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("report: period %q: want hours (24h) or days (7d)", s)
		}
	}
	if err := CheckPeriod(d); err != nil {
		return 0, err
	}
	return d, nil
}

// Assemble makes the report from in.
func Assemble(in Inputs) (*Report, error) {
	if err := CheckPeriod(in.Period); err != nil {
		return nil, err
	}
	if in.Now.IsZero() {
		return nil, errors.New("report: no time of report")
	}
	now := in.Now.UTC()
	r := &Report{
		Version:     Version,
		GeneratedAt: now,
		TrustDomain: in.TrustDomain,
		Period: Period{
			Since:       now.Add(-in.Period),
			Until:       now,
			Duration:    formatPeriod(in.Period),
			Granularity: "hour",
			Note:        granularityNote,
		},
	}
	cov := make(map[string][]*discovery.WorkloadCoverage) // "ns/name" -> entries (one per service account)
	for i := range in.Workloads {
		w := &in.Workloads[i]
		k := w.Namespace + "/" + w.Name
		cov[k] = append(cov[k], w)
	}
	r.encryptionAndDenials(in.Totals, cov)
	r.coverage(in.Workloads)
	r.identity(in, now)
	r.attestation(in)
	r.detections(in.Events)
	r.summarize()
	return r, nil
}

func formatPeriod(d time.Duration) string {
	if d > 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return fmt.Sprintf("%dh", d/time.Hour)
}

// partyName names one side of an edge for people.
func partyName(p insights.Party) string {
	switch {
	case p.Namespace != "" && p.Workload != "":
		return p.Namespace + "/" + p.Workload
	case p.SPIFFEID != "":
		return p.SPIFFEID
	case p.IP != "":
		return p.IP + " (outside the mesh)"
	}
	return "unknown (outside the mesh)"
}

func share(part, whole uint64) *float64 {
	if whole == 0 {
		return nil
	}
	s := float64(part) / float64(whole)
	return &s
}

func (r *Report) encryptionAndDenials(totals []insights.EdgeTotal, cov map[string][]*discovery.WorkloadCoverage) {
	e := &r.Encryption
	e.PlaintextEdges = []Edge{}
	r.Coverage.EdgesWithoutPolicy = []Edge{}
	byDest := make(map[string]*DestinationDenials)
	for _, t := range totals {
		edge := Edge{
			Source:      partyName(t.Source),
			SourceID:    t.Source.SPIFFEID,
			Destination: partyName(t.Destination),
			Service:     t.Service,
			MTLS:        t.MTLS,
			Requests:    t.Requests,
			Denied:      t.Denied,
		}
		e.Requests += t.Requests
		if t.MTLS {
			e.MTLSRequests += t.Requests
		} else {
			e.Plaintext += t.Requests
			if t.Requests > 0 {
				e.PlaintextEdges = append(e.PlaintextEdges, edge)
			}
		}
		if ws, known := cov[t.Destination.Namespace+"/"+t.Destination.Workload]; known && t.Destination.Workload != "" {
			if !slices.ContainsFunc(ws, (*discovery.WorkloadCoverage).HasAllow) {
				r.Coverage.EdgesWithoutPolicy = append(r.Coverage.EdgesWithoutPolicy, edge)
			}
		}
		d := byDest[edge.Destination]
		if d == nil {
			d = &DestinationDenials{Destination: edge.Destination}
			byDest[edge.Destination] = d
		}
		d.Requests += t.Requests
		d.Denied += t.Denied
		d.RateLimited += t.RateLimited
		r.Denials.Denied += t.Denied
		r.Denials.RateLimited += t.RateLimited
	}
	e.MTLSShare = share(e.MTLSRequests, e.Requests)
	sortEdges(e.PlaintextEdges)
	sortEdges(r.Coverage.EdgesWithoutPolicy)
	r.Denials.ByDestination = []DestinationDenials{}
	for _, k := range slices.Sorted(maps.Keys(byDest)) {
		if d := byDest[k]; d.Denied > 0 || d.RateLimited > 0 {
			r.Denials.ByDestination = append(r.Denials.ByDestination, *d)
		}
	}
	slices.SortStableFunc(r.Denials.ByDestination, func(a, b DestinationDenials) int {
		return cmp.Compare(b.Denied+b.RateLimited, a.Denied+a.RateLimited)
	})
}

// sortEdges sorts by requests, most first, then by names.
func sortEdges(es []Edge) {
	slices.SortFunc(es, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(b.Requests, a.Requests), cmp.Compare(a.Destination, b.Destination),
			cmp.Compare(a.Source, b.Source), cmp.Compare(a.Service, b.Service))
	})
}

func (r *Report) coverage(ws []discovery.WorkloadCoverage) {
	r.Coverage.Workloads = slices.Clone(ws)
	if r.Coverage.Workloads == nil {
		r.Coverage.Workloads = []discovery.WorkloadCoverage{}
	}
	slices.SortFunc(r.Coverage.Workloads, func(a, b discovery.WorkloadCoverage) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.ServiceAccount, b.ServiceAccount))
	})
	r.Coverage.WorkloadsWithoutPolicy = []string{}
	for i := range r.Coverage.Workloads {
		w := &r.Coverage.Workloads[i]
		if !w.HasAllow() && w.Default != "deny-all" {
			n := w.Namespace + "/" + w.Name
			if !slices.Contains(r.Coverage.WorkloadsWithoutPolicy, n) {
				r.Coverage.WorkloadsWithoutPolicy = append(r.Coverage.WorkloadsWithoutPolicy, n)
			}
		}
	}
}

func daysLeft(notAfter, now time.Time) int {
	return int(math.Floor(notAfter.Sub(now).Hours() / 24))
}

func (r *Report) identity(in Inputs, now time.Time) {
	id := &r.Identity
	id.TrustAnchors = make([]Cert, 0, len(in.Identity.TrustAnchors))
	for _, c := range in.Identity.TrustAnchors {
		c.DaysLeft = daysLeft(c.NotAfter, now)
		id.TrustAnchors = append(id.TrustAnchors, c)
	}
	id.Issuer = in.Identity.Issuer
	id.Issuer.DaysLeft = daysLeft(id.Issuer.NotAfter, now)
	id.Warnings = append([]string{}, in.Identity.Warnings...)
	id.Certificates = make([]LeafCert, 0, len(in.Identity.Certificates))
	for _, l := range in.Identity.Certificates {
		_, idRevoked := in.RevokedIdentities[l.SPIFFEID]
		id.Certificates = append(id.Certificates, LeafCert{
			Serial: l.Serial, SPIFFEID: l.SPIFFEID, CodeDigest: l.CodeDigest, NotAfter: l.NotAfter.UTC(),
			Revoked: in.RevokedSerials[l.Serial] || idRevoked,
		})
	}
	slices.SortFunc(id.Certificates, func(a, b LeafCert) int {
		return cmp.Or(cmp.Compare(a.SPIFFEID, b.SPIFFEID), a.NotAfter.Compare(b.NotAfter), cmp.Compare(a.Serial, b.Serial))
	})
}

func (r *Report) attestation(in Inputs) {
	a := &r.Attestation
	a.QuarantineKnown = in.Quarantined != nil
	quarantined := make(map[string]Quarantined)
	for _, q := range in.Quarantined {
		if prev, ok := quarantined[q.SPIFFEID]; !ok || q.Until.After(prev.Until) {
			quarantined[q.SPIFFEID] = q
		}
	}
	// The certificates in use by identity: a workload is known by its
	// identity, which all instances of a service account share.
	type certs struct {
		digests []string
		any     bool
	}
	byID := make(map[string]*certs)
	for _, c := range r.Identity.Certificates {
		if c.Revoked {
			continue
		}
		b := byID[c.SPIFFEID]
		if b == nil {
			b = &certs{}
			byID[c.SPIFFEID] = b
		}
		b.any = true
		if c.CodeDigest != "" && !slices.Contains(b.digests, c.CodeDigest) {
			b.digests = append(b.digests, c.CodeDigest)
		}
	}
	a.Workloads = make([]WorkloadAttestation, 0, len(r.Coverage.Workloads))
	for _, w := range r.Coverage.Workloads {
		wa := WorkloadAttestation{Namespace: w.Namespace, Workload: w.Name, SPIFFEID: w.SPIFFEID, Status: StatusNoCertificate}
		if b := byID[w.SPIFFEID]; b != nil {
			wa.Status = StatusJoinTokenOnly
			if len(b.digests) > 0 {
				wa.Status = StatusAttested
				wa.Digests = slices.Sorted(slices.Values(b.digests))
			}
		}
		if reason, ok := in.RevokedIdentities[w.SPIFFEID]; ok {
			wa.Revoked, wa.RevokedReason = true, reason
		}
		if q, ok := quarantined[w.SPIFFEID]; ok {
			until := q.Until.UTC()
			wa.Quarantined, wa.QuarantinedUntil = true, &until
		}
		a.Workloads = append(a.Workloads, wa)
	}
}

var severityOrder = []insights.Severity{insights.SeverityCritical, insights.SeverityHigh, insights.SeverityMedium, insights.SeverityLow}

func (r *Report) detections(events []insights.Event) {
	d := &r.Detections
	since := r.Period.Since
	recent := make([]insights.Event, 0, len(events))
	for _, e := range events {
		if e.Time.Before(since) {
			continue
		}
		recent = append(recent, e)
	}
	slices.SortStableFunc(recent, func(a, b insights.Event) int {
		return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(a.ID, b.ID))
	})
	d.Total = len(recent)
	byDet := make(map[string]int)
	bySev := make(map[string]int)
	for _, e := range recent {
		byDet[string(e.Detection)]++
		bySev[string(e.Severity)]++
	}
	d.ByDetection = []Count{}
	for _, det := range insights.Detections {
		if n := byDet[string(det)]; n > 0 {
			d.ByDetection = append(d.ByDetection, Count{Key: string(det), Count: n})
			delete(byDet, string(det))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(byDet)) { // detections newer than this report
		d.ByDetection = append(d.ByDetection, Count{Key: k, Count: byDet[k]})
	}
	d.BySeverity = []Count{}
	for _, s := range severityOrder {
		if n := bySev[string(s)]; n > 0 {
			d.BySeverity = append(d.BySeverity, Count{Key: string(s), Count: n})
			delete(bySev, string(s))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(bySev)) {
		d.BySeverity = append(d.BySeverity, Count{Key: k, Count: bySev[k]})
	}
	d.Recent = recent[:min(len(recent), RecentEvents)]
}

func (r *Report) summarize() {
	s := &r.Summary
	s.Requests = r.Encryption.Requests
	s.MTLSRequests = r.Encryption.MTLSRequests
	s.MTLSShare = r.Encryption.MTLSShare
	s.PlaintextEdges = len(r.Encryption.PlaintextEdges)
	s.Workloads = len(r.Coverage.Workloads)
	s.WorkloadsWithoutPolicy = len(r.Coverage.WorkloadsWithoutPolicy)
	s.EdgesWithoutPolicy = len(r.Coverage.EdgesWithoutPolicy)
	s.Denied = r.Denials.Denied
	s.Detections = r.Detections.Total
	s.Findings = []Finding{}
	add := func(sev insights.Severity, what, why, do string) {
		s.Findings = append(s.Findings, Finding{Severity: sev, What: what, Why: why, Do: do})
	}

	for _, w := range r.Identity.Warnings {
		sev := insights.SeverityMedium
		if strings.HasPrefix(w, "CRITICAL") {
			sev = insights.SeverityCritical
		}
		what := strings.TrimPrefix(strings.TrimPrefix(w, "CRITICAL: "), "WARNING: ")
		add(sev, strings.ToUpper(what[:1])+what[1:]+".",
			"When a trust anchor or the issuer expires, no workload certificate chains to a trusted root and every mTLS handshake in the mesh fails.",
			"Rotate it with rampart identity rotate-issuer or rotate-root (docs/identity.md) before it expires.")
	}
	if n := r.Encryption.Plaintext; n > 0 {
		add(insights.SeverityHigh,
			fmt.Sprintf("%d of %d requests (%s) travelled in plaintext, on %s (listed under Encryption).", n, s.Requests, percent(share(n, s.Requests)), plural(s.PlaintextEdges, "edge")),
			"Plaintext requests carry no verified identity: policy cannot tell their callers apart, and the network can read or alter them.",
			"Bring the callers listed under Encryption into the mesh, then set their destinations' MeshTLSPolicy to STRICT.")
	}
	var crit, high int
	for _, c := range r.Detections.BySeverity {
		switch insights.Severity(c.Key) {
		case insights.SeverityCritical:
			crit = c.Count
		case insights.SeverityHigh:
			high = c.Count
		}
	}
	if crit+high > 0 {
		add(insights.SeverityHigh,
			fmt.Sprintf("%d critical and %d high-severity detections in the period.", crit, high),
			"Detections are behaviour the baseline did not expect: a new caller, scanning, bursts of denials, refused certificates.",
			"Review them under Detections (rampart events), and quarantine or revoke the identities involved if they are not explained.")
	}
	if n := s.WorkloadsWithoutPolicy; n > 0 {
		add(insights.SeverityMedium,
			fmt.Sprintf("%d of %s without an ALLOW policy, with a default other than deny-all: %s.", n, plural(s.Workloads, "workload"), strings.Join(r.Coverage.WorkloadsWithoutPolicy, ", ")),
			"Any caller their default admits can reach them: a compromised workload elsewhere in the mesh is not stopped.",
			"Generate least-privilege policies with rampart policy recommend, apply them in AUDIT mode, then ENFORCE.")
	}
	if n := s.EdgesWithoutPolicy; n > 0 {
		add(insights.SeverityMedium,
			fmt.Sprintf("Observed edges to a workload without an ALLOW policy: %d.", n),
			"This traffic is allowed by default, not by a decision anyone reviewed.",
			"Write ALLOW policies for these edges (rampart policy recommend does from the observed traffic).")
	}
	var tokenOnly []string
	for _, w := range r.Attestation.Workloads {
		if w.Status == StatusJoinTokenOnly {
			tokenOnly = append(tokenOnly, w.Namespace+"/"+w.Workload)
		}
	}
	if len(tokenOnly) > 0 {
		add(insights.SeverityLow,
			fmt.Sprintf("Certificates from a join token only, with no attested code: %s (%s).", plural(len(tokenOnly), "workload"), strings.Join(tokenOnly, ", ")),
			"Whoever holds a join token obtains the identity, whatever code they run.",
			"Attest them over the attestation socket with a WorkloadAttestationPolicy that pins their code (docs/attestation.md).")
	}
	if s.Requests == 0 {
		add(insights.SeverityLow, "No traffic was recorded in the period.",
			"Encryption and coverage of edges cannot be judged without traffic.",
			"Check that the proxies report telemetry to the controller (rampart stat), or choose a longer period (--since).")
	}
	slices.SortStableFunc(s.Findings, func(a, b Finding) int {
		return cmp.Compare(slices.Index(severityOrder, a.Severity), slices.Index(severityOrder, b.Severity))
	})
}

// plural is "1 edge", "2 edges".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// percent formats a share as a percentage, "n/a" for nil.
func percent(s *float64) string {
	if s == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f%%", *s*100)
}
