package insights

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// party names one side of an edge.
type party struct {
	id    spiffeid.ID
	idStr string // id.String(), "" for the zero ID
	ns    string
	name  string
}

func newParty(id spiffeid.ID, ns, name string) party {
	p := party{id: id, ns: ns, name: name}
	if !id.IsZero() {
		p.idStr = id.String()
	}
	return p
}

func (p party) export() Party {
	return Party{SPIFFEID: p.idStr, Namespace: p.ns, Workload: p.name}
}

func (p party) label() string {
	if p.id.IsZero() {
		if p.name != "" {
			return p.ns + "/" + p.name + " (no identity)"
		}
		return "a caller without identity"
	}
	return p.idStr
}

func peerParty(id spiffeid.ID, name string) party {
	p := newParty(id, "", name)
	if !id.IsZero() {
		if ns, _, err := identity.ParseWorkloadID(id); err == nil {
			p.ns = ns
		}
	}
	return p
}

// ObserveReport learns from, and detects in, one validated report. The
// destination's own (inbound) view of an edge is used; the source's
// (outbound) view only when the destination has never reported, and
// never to create the baseline of a destination with a SPIFFE ID (its
// own proxy is authoritative). What the report creates counts towards
// its reporter's shares, and the events it raises towards its bucket.
func (e *Engine) ObserveReport(r graph.Report) {
	if r.ID.IsZero() {
		return
	}
	now := e.now()
	self := newParty(r.ID, r.Namespace, r.Workload)
	e.mu.Lock()
	e.startLocked(now)
	e.gcLocked(now)
	learning := e.learningLocked(now)
	if !e.reporters[self.idStr] && len(e.reporters) < MaxReporters {
		e.reporters[self.idStr] = true
	}
	rep := e.reporterLocked(now, self.idStr)
	for i := range r.Edges {
		er := &r.Edges[i]
		var src, dst party
		create := learning
		switch er.Direction {
		case graph.Inbound:
			src, dst = peerParty(er.PeerID, er.PeerWorkload), self
		case graph.Outbound:
			e.selfReportLocked(now, rep, self.idStr, er)
			if !er.PeerID.IsZero() && e.reporters[er.PeerID.String()] {
				continue // the destination's inbound report counts it
			}
			src, dst = self, peerParty(er.PeerID, er.PeerWorkload)
			if dst.id.IsZero() && dst.name == "" {
				dst.name = er.Service
			}
			// A mesh destination's baseline is what its own proxy
			// reports; the caller's claims never create it.
			create = create && dst.id.IsZero()
		default:
			continue
		}
		e.observeEdgeLocked(now, rep, learning, create, src, dst, er)
	}
	e.gen++
	e.mu.Unlock()
	e.flush()
}

// observeEdgeLocked learns from, and detects in, one edge that rep
// reported. While learning, create says whether the edge may add its
// workload and caller to the baseline.
func (e *Engine) observeEdgeLocked(now time.Time, rep *reporter, learning, create bool, src, dst party, er *graph.EdgeReport) {
	e.ledger.add(now, src.export(), dst.export(), er, &e.stats)
	if !src.id.IsZero() {
		if er.Denied > 0 {
			e.observeDenialsLocked(now, rep, src, er.Denied)
		}
		if len(er.Routes) > 0 {
			e.observeRoutesLocked(now, rep, src, dst, er)
		}
	}
	wk := workloadKey{id: dst.idStr, name: dst.name}
	w := e.workloads[wk]
	if w == nil && learning {
		if !create {
			return
		}
		if w = e.newWorkloadLocked(rep, wk, dst.ns); w == nil {
			return
		}
	}
	ck := callerKey{id: src.idStr, name: src.name}
	var c *caller
	if w != nil {
		c = w.callers[ck]
	}
	if c == nil {
		if !learning {
			e.newEdgeLocked(now, rep, src, dst, er)
			return
		}
		if !create {
			return
		}
		if len(w.callers) >= MaxCallersPerWorkload || e.callers >= MaxCallers {
			w.callersOverflow = true
			e.stats.CallersOverflow++
			return
		}
		if !e.claim(rep, trackCallers) {
			w.callersOverflow = true
			return
		}
		c = newCaller(ck, now)
		w.callers[ck] = c
		e.callers++
	}
	c.closeSamples(now, learning, e.pol.edgeWindow)
	c.last = now
	c.requests += er.Requests
	c.failures += er.Failures
	c.denied += er.Denied
	c.mtls = c.mtls && er.MTLS
	c.sampleRequests += er.Requests
	c.sampleFails += er.Failures
	c.win.add(now, e.pol.edgeWindow, er.Requests, er.Failures)
	if er.Service != "" && !c.services[er.Service] && len(c.services) < MaxServicesPerCaller {
		c.services[er.Service] = true
	}
	var routed uint64
	for _, rc := range er.Routes {
		routed += rc.Count
		k := routeKey{method: rc.Method, path: rc.Path, truncated: rc.Truncated}
		rt := c.routes[k]
		if rt == nil {
			if !learning {
				continue // the route set is what was learnt
			}
			if len(c.routes) >= MaxRoutesPerCaller {
				c.routesOverflow = true
				e.stats.RoutesOverflow++
				continue
			}
			if e.routes >= MaxBaselineRoutes {
				c.routesOverflow = true
				e.stats.BaselineRoutesOverflow++
				continue
			}
			rt = &Route{Method: rc.Method, Path: rc.Path, Truncated: rc.Truncated}
			c.routes[k] = rt
			e.routes++
		}
		rt.Requests += rc.Count
		if rc.StatusClass == 4 {
			rt.Refused += rc.Count
		}
	}
	if learning && routed < er.Requests {
		// The proxy could not attribute every request to a route.
		c.routesOverflow = true
	}
	if !learning {
		e.edgeSpikesLocked(now, rep, src, dst, er, c)
	}
}

// newWorkloadLocked adds the workload k to the baseline on behalf of rep
// (nil: the controller's attestation); nil when a bound or rep's share
// does not allow it (counted).
func (e *Engine) newWorkloadLocked(rep *reporter, k workloadKey, namespace string) *workload {
	if len(e.workloads) >= MaxWorkloads {
		e.stats.WorkloadsOverflow++
		return nil
	}
	if k.id != "" && e.names[k.id] >= MaxWorkloadsPerIdentity {
		e.stats.NamesOverflow++
		return nil
	}
	if !e.claim(rep, trackWorkloads) {
		return nil
	}
	w := newWorkload(k, namespace)
	e.workloads[k] = w
	if k.id != "" {
		e.names[k.id]++
	}
	return w
}

func (e *Engine) newEdgeLocked(now time.Time, rep *reporter, src, dst party, er *graph.EdgeReport) {
	d := dst.export()
	if e.quietLocked(now, NewEdge, src.export(), &d) {
		return
	}
	e.enqueueLocked(now, rep, NewEdge, src.id, Event{
		Source:      src.export(),
		Destination: &d,
		Summary:     fmt.Sprintf("new edge: %s called %s/%s, not seen while learning (%d requests, %d denied)", src.label(), dst.ns, dst.name, er.Requests, er.Denied),
		Evidence:    Evidence{Requests: er.Requests, Failures: er.Failures, Denied: er.Denied, Service: er.Service, Reporter: dst.ns + "/" + dst.name},
	})
}

// edgeSpikesLocked checks a learnt edge's rate and error share over their
// windows against its bands.
func (e *Engine) edgeSpikesLocked(now time.Time, rep *reporter, src, dst party, er *graph.EdgeReport, c *caller) {
	d := dst.export()
	if r := e.pol.rules[RateSpike]; r.enabled && c.rate.n >= MinRateSamples {
		req, _ := c.win.sum(now, r.window)
		rate := float64(req) / r.window.Seconds()
		high := c.rate.high() * r.threshold
		if rate > high && rate > RateFloor {
			c.clearPending()
		}
		if rate > high && rate > RateFloor && !e.quietLocked(now, RateSpike, src.export(), &d) {
			e.enqueueLocked(now, rep, RateSpike, src.id, Event{
				Source:      src.export(),
				Destination: &d,
				Summary: fmt.Sprintf("rate spike: %s to %s/%s at %.1f req/s over %v, above %.1f req/s (learnt mean %.1f, max %.1f, ×%g)",
					src.label(), dst.ns, dst.name, rate, r.window, high, c.rate.mean, c.rate.max, r.threshold),
				Evidence: Evidence{WindowSeconds: r.window.Seconds(), Requests: req, Rate: rate, BaselineRate: c.rate.mean, BandHigh: high, Service: er.Service, Reporter: dst.ns + "/" + dst.name},
			})
		}
	}
	if r := e.pol.rules[ErrorSpike]; r.enabled {
		req, fail := c.win.sum(now, r.window)
		if req >= MinErrorRequests {
			share := float64(fail) / float64(req)
			high := c.errRate.mean + BandSigmas*c.errRate.std()
			if share > high && share > r.threshold {
				c.clearPending()
			}
			if share > high && share > r.threshold && !e.quietLocked(now, ErrorSpike, src.export(), &d) {
				e.enqueueLocked(now, rep, ErrorSpike, src.id, Event{
					Source:      src.export(),
					Destination: &d,
					Summary: fmt.Sprintf("error spike: %d of %d requests from %s to %s/%s failed over %v (%.0f%%; learnt %.1f%%, band high %.1f%%)",
						fail, req, src.label(), dst.ns, dst.name, r.window, 100*share, 100*c.errRate.mean, 100*high),
					Evidence: Evidence{WindowSeconds: r.window.Seconds(), Requests: req, Failures: fail, ErrorRate: share, BaselineErrorRate: c.errRate.mean, BandHigh: high, Service: er.Service, Reporter: dst.ns + "/" + dst.name},
				})
			}
		}
	}
}

func (e *Engine) observeDenialsLocked(now time.Time, rep *reporter, src party, denied uint64) {
	r := e.pol.rules[DenialBurst]
	k := src.idStr
	w := e.denials[k]
	if w == nil {
		if len(e.denials) >= MaxTrackedSources {
			e.stats.TrackerOverflow++
			return
		}
		if !e.claim(rep, trackDenials) {
			return
		}
		w = &window{owner: rep}
		e.denials[k] = w
	}
	w.add(now, r.window, denied, 0)
	n, _ := w.sum(now, r.window)
	if float64(n) >= r.threshold && !e.quietLocked(now, DenialBurst, src.export(), nil) {
		e.enqueueLocked(now, rep, DenialBurst, src.id, Event{
			Source:   src.export(),
			Summary:  fmt.Sprintf("denial burst: %d requests of %s denied within %v (threshold %g)", n, src.label(), r.window, r.threshold),
			Evidence: Evidence{WindowSeconds: r.window.Seconds(), Denied: n},
		})
	}
}

type scanKey struct{ src, dst string }

// scanState tracks one source's requests to one destination over the
// window: each distinct path, when it was last requested, and whether
// every answer it got was 4xx.
type scanState struct {
	paths map[string]scanPath
	win   window
}

type scanPath struct {
	seen time.Time
	// answered counts requests with another status; refused, 4xx ones.
	answered, refused uint64
}

func (p scanPath) isRefused() bool { return p.refused > 0 && p.answered == 0 }

func (s *scanState) prune(now time.Time, span time.Duration) {
	s.win.prune(now, span)
	cut := now.Add(-span)
	for p, st := range s.paths {
		if !st.seen.After(cut) {
			delete(s.paths, p)
		}
	}
}

// observeRoutesLocked looks for a route scan: within the window, at
// least Threshold distinct paths of the destination answered only 4xx,
// making up at least ScanRefusedShare of the distinct paths the source
// requested. Counting paths rather than requests keeps a compromised
// caller's normal traffic from diluting its scan: a few busy routes are a
// few paths.
func (e *Engine) observeRoutesLocked(now time.Time, rep *reporter, src, dst party, er *graph.EdgeReport) {
	r := e.pol.rules[RouteScan]
	k := scanKey{src: src.idStr, dst: dst.idStr + "|" + dst.name}
	s := e.scans[k]
	if s == nil {
		if len(e.scans) >= MaxTrackedSources {
			e.stats.TrackerOverflow++
			return
		}
		if !e.claim(rep, trackScans) {
			return
		}
		s = &scanState{paths: make(map[string]scanPath), win: window{owner: rep}}
		e.scans[k] = s
	}
	s.prune(now, r.window)
	var req, refused uint64
	for _, rc := range er.Routes {
		req += rc.Count
		st, ok := s.paths[rc.Path]
		if !ok && len(s.paths) >= MaxPathsPerPair {
			continue
		}
		st.seen = now
		if rc.StatusClass == 4 {
			refused += rc.Count
			st.refused += rc.Count
		} else {
			st.answered += rc.Count
		}
		s.paths[rc.Path] = st
	}
	s.win.add(now, r.window, req, refused)
	var refusedPaths []string
	for p, st := range s.paths {
		if st.isRefused() {
			refusedPaths = append(refusedPaths, p)
		}
	}
	if float64(len(refusedPaths)) < r.threshold {
		return
	}
	share := float64(len(refusedPaths)) / float64(len(s.paths))
	d := dst.export()
	if share < ScanRefusedShare || e.quietLocked(now, RouteScan, src.export(), &d) {
		return
	}
	tot, ref := s.win.sum(now, r.window)
	sort.Strings(refusedPaths)
	paths := refusedPaths
	if len(paths) > 10 {
		paths = paths[:10]
	}
	e.enqueueLocked(now, rep, RouteScan, src.id, Event{
		Source:      src.export(),
		Destination: &d,
		Summary: fmt.Sprintf("route scan: %s requested %d distinct paths of %s/%s within %v, %d of them answered only 4xx (%d of %d requests refused)",
			src.label(), len(s.paths), dst.ns, dst.name, r.window, len(refusedPaths), ref, tot),
		Evidence: Evidence{WindowSeconds: r.window.Seconds(), Requests: tot, DistinctPaths: len(s.paths), RefusedShare: share, Paths: paths, Service: er.Service, Reporter: dst.ns + "/" + dst.name},
	})
}

// ObserveSecurity counts the refusals a proxy reported: handshakes with
// certificates of an unknown CA or revoked, plaintext refused on STRICT
// ports. Each is counted per presented identity (or, without one, per
// peer address) over the rule's window.
func (e *Engine) ObserveSecurity(obs []SecurityObservation) {
	if len(obs) == 0 {
		return
	}
	now := e.now()
	e.mu.Lock()
	e.gcLocked(now)
	for _, o := range obs {
		var d Detection
		switch o.Kind {
		case TLSUnknownCA:
			d = UnknownCA
		case TLSRevoked:
			d = RevokedPeer
		case PlaintextOnStrict:
			d = Plaintext
		default:
			continue
		}
		if o.Count == 0 {
			continue
		}
		r := e.pol.rules[d]
		key := "ip:" + o.PeerIP
		if !o.PresentedID.IsZero() {
			key = "id:" + o.PresentedID.String()
		}
		rep := e.reporterLocked(now, o.Reporter.String())
		rk := refusalKey{det: d, key: key}
		w := e.refusals[rk]
		if w == nil {
			if len(e.refusals) >= MaxTrackedSources {
				e.stats.TrackerOverflow++
				continue
			}
			if !e.claim(rep, trackRefusals) {
				continue
			}
			w = &window{owner: rep}
			e.refusals[rk] = w
		}
		w.add(now, r.window, o.Count, 0)
		n, _ := w.sum(now, r.window)
		if float64(n) < r.threshold {
			continue
		}
		// A refused handshake's identity is what the peer's certificate
		// claimed, and a plaintext connection has none: neither source is
		// ever verified, so neither can be quarantined.
		src := Party{IP: o.PeerIP}
		if !o.PresentedID.IsZero() && d != Plaintext {
			src.SPIFFEID = o.PresentedID.String()
			src.Claimed = true
			if ns, _, err := identity.ParseWorkloadID(o.PresentedID); err == nil {
				src.Namespace = ns
			}
		}
		dst := Party{SPIFFEID: o.Reporter.String(), Namespace: o.Namespace, Workload: o.Workload}
		if e.quietLocked(now, d, src, &dst) {
			continue
		}
		who := src.SPIFFEID
		if who == "" {
			who = "a peer"
		} else if src.Claimed {
			who += " (claimed)"
		}
		if src.IP != "" {
			who += " at " + src.IP
		}
		var what string
		switch d {
		case UnknownCA:
			what = "handshakes with a certificate of an unknown CA"
		case RevokedPeer:
			what = "handshakes with a revoked certificate"
		case Plaintext:
			what = "plaintext connections refused"
		}
		e.enqueueLocked(now, rep, d, spiffeid.ID{}, Event{
			Source:      src,
			Destination: &dst,
			Summary: strings.TrimSpace(fmt.Sprintf("%s: %d %s from %s to %s/%s port %d within %v",
				d, n, what, who, o.Namespace, o.Workload, o.Port, r.window)),
			Evidence: Evidence{WindowSeconds: r.window.Seconds(), Handshakes: n, Serial: o.Serial, Issuer: o.Issuer, Port: o.Port, Reporter: o.Namespace + "/" + o.Workload},
		})
	}
	e.mu.Unlock()
	e.flush()
}

// ObserveAttestation records that workload (of identity id) attested with
// digest ("sha256:<hex>") when a certificate was issued; a digest other
// than the last one seen raises CodeChanged. The digests are part of the
// baseline, learning or not.
func (e *Engine) ObserveAttestation(id spiffeid.ID, workloadName, digest string) {
	if id.IsZero() || digest == "" {
		return
	}
	now := e.now()
	wk := workloadKey{id: id.String(), name: workloadName}
	e.mu.Lock()
	w := e.workloads[wk]
	if w == nil {
		ns, _, _ := identity.ParseWorkloadID(id)
		if w = e.newWorkloadLocked(nil, wk, ns); w == nil {
			e.mu.Unlock()
			return
		}
	}
	var prev string
	if n := len(w.digests); n > 0 {
		prev = w.digests[n-1]
	}
	if prev != digest {
		// Keep each digest once, the most recent last.
		kept := w.digests[:0]
		for _, d := range w.digests {
			if d != digest {
				kept = append(kept, d)
			}
		}
		w.digests = append(kept, digest)
		if len(w.digests) > MaxDigests {
			w.digests = w.digests[len(w.digests)-MaxDigests:]
		}
		e.gen++
		if prev != "" {
			p := Party{SPIFFEID: id.String(), Namespace: w.namespace, Workload: workloadName}
			dst := p
			e.enqueueLocked(now, nil, CodeChanged, id, Event{
				Source:      p,
				Destination: &dst,
				Summary:     fmt.Sprintf("code changed: %s/%s attested with %s, previously %s", w.namespace, workloadName, digest, prev),
				Evidence:    Evidence{Digest: digest, PreviousDigest: prev, Reporter: w.namespace + "/" + workloadName},
			})
		}
	}
	e.mu.Unlock()
	e.flush()
}
