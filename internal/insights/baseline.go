package insights

import (
	"math"
	"sort"
	"time"
)

const snapshotVersion = 1

// window counts (a, b) over the last span, in at most about 17 entries:
// an entry younger than span/16 takes the next counts in.
type window struct {
	entries []winEntry
	// owner is the reporter that created a tracker's window (nil for a
	// caller's).
	owner *reporter
}

type winEntry struct {
	t    time.Time
	a, b uint64
}

func (w *window) add(now time.Time, span time.Duration, a, b uint64) {
	w.prune(now, span)
	if n := len(w.entries); n > 0 && now.Sub(w.entries[n-1].t) < span/16 {
		w.entries[n-1].a += a
		w.entries[n-1].b += b
		return
	}
	w.entries = append(w.entries, winEntry{t: now, a: a, b: b})
}

// prune drops the entries at or before now-span.
func (w *window) prune(now time.Time, span time.Duration) {
	cut := now.Add(-span)
	i := 0
	for i < len(w.entries) && !w.entries[i].t.After(cut) {
		i++
	}
	if i > 0 {
		n := copy(w.entries, w.entries[i:])
		w.entries = w.entries[:n]
	}
}

// sum adds up the entries after now-span.
func (w *window) sum(now time.Time, span time.Duration) (a, b uint64) {
	cut := now.Add(-span)
	for _, x := range w.entries {
		if x.t.After(cut) {
			a += x.a
			b += x.b
		}
	}
	return a, b
}

// band is a Band being learnt: Welford's running mean and (population)
// variance while learning, exponential weighting after.
type band struct {
	n              uint64
	mean, variance float64
	max            float64
}

func (b *band) learn(x float64) {
	b.n++
	d := x - b.mean
	b.mean += d / float64(b.n)
	b.variance += (d*(x-b.mean) - b.variance) / float64(b.n)
	if b.n == 1 || x > b.max {
		b.max = x
	}
}

// adaptAlpha is the weight of one sample after learning: a sample
// AdaptHalfLife old weighs half as much as a new one.
var adaptAlpha = 1 - math.Exp2(-float64(SampleInterval)/float64(AdaptHalfLife))

// adapt moves the band towards x; the maximum moves towards x at the same
// pace when x exceeds it, and decays towards the mean otherwise, so that
// no single sample widens the band.
func (b *band) adapt(x float64) {
	if b.n == 0 {
		b.learn(x)
		return
	}
	b.n++
	d := x - b.mean
	inc := adaptAlpha * d
	b.mean += inc
	b.variance = (1 - adaptAlpha) * (b.variance + d*inc)
	if x > b.max {
		b.max += adaptAlpha * (x - b.max)
	} else {
		b.max -= adaptAlpha * (b.max - b.mean)
	}
	b.max = max(b.max, b.mean)
}

func (b band) std() float64 { return math.Sqrt(max(b.variance, 0)) }

// high is the highest value the band admits: its maximum or BandSigmas
// deviations above its mean, whichever is higher.
func (b band) high() float64 { return max(b.max, b.mean+BandSigmas*b.std()) }

func (b band) export() Band {
	return Band{Samples: b.n, Mean: b.mean, StdDev: b.std(), Max: b.max}
}

func importBand(x Band) band {
	ok := func(f float64) float64 {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return 0
		}
		return f
	}
	sd := ok(x.StdDev)
	return band{n: x.Samples, mean: ok(x.Mean), variance: sd * sd, max: ok(x.Max)}
}

type workloadKey struct{ id, name string }

type callerKey struct{ id, name string }

type routeKey struct {
	method, path string
	truncated    bool
}

// workload is a destination of the baseline.
type workload struct {
	key             workloadKey
	namespace       string
	digests         []string
	callers         map[callerKey]*caller
	callersOverflow bool
}

// caller is one source of a workload's traffic: what was learnt (saved)
// and the runtime state of its detections (not saved).
type caller struct {
	key                         callerKey
	services                    map[string]bool
	mtls                        bool
	first, last                 time.Time
	requests, failures, denied  uint64
	rate, errRate               band
	routes                      map[routeKey]*Route
	routesOverflow              bool
	win                         window // requests, failures over the edge window
	sampleStart                 time.Time
	sampleRequests, sampleFails uint64
	pending                     []sample
}

func newWorkload(k workloadKey, namespace string) *workload {
	return &workload{key: k, namespace: namespace, callers: make(map[callerKey]*caller)}
}

func newCaller(k callerKey, now time.Time) *caller {
	return &caller{key: k, services: make(map[string]bool), routes: make(map[routeKey]*Route), first: now, last: now, sampleStart: now, mtls: true}
}

// closeSamples ends the samples of c that ended by now: the counts so far
// make one sample, each further span without a report a zero sample (up
// to maxIdleSamples). While learning the bands learn them at once. After,
// a sample waits until delay (the edge window) has passed after it without
// an event on the edge, then the bands adapt to it; an event discards the
// samples waiting (clearPending), so that a spike never widens the band it
// is measured against.
func (c *caller) closeSamples(now time.Time, learning bool, delay time.Duration) {
	if c.sampleStart.IsZero() {
		c.sampleStart = now
		return
	}
	if elapsed := now.Sub(c.sampleStart); elapsed >= SampleInterval {
		k := int64(elapsed / SampleInterval)
		record := func(start time.Time, req, fail uint64) {
			s := sample{start: start, rate: float64(req) / SampleInterval.Seconds()}
			if req >= MinErrorSample {
				s.share, s.hasShare = float64(fail)/float64(req), true
			}
			if learning {
				c.apply(s, true)
				return
			}
			if len(c.pending) >= maxPendingSamples {
				c.apply(c.pending[0], false)
				c.pending = c.pending[1:]
			}
			c.pending = append(c.pending, s)
		}
		record(c.sampleStart, c.sampleRequests, c.sampleFails)
		for i := int64(1); i < k && i <= maxIdleSamples; i++ {
			record(c.sampleStart.Add(time.Duration(i)*SampleInterval), 0, 0)
		}
		c.sampleRequests, c.sampleFails = 0, 0
		c.sampleStart = c.sampleStart.Add(time.Duration(k) * SampleInterval)
	}
	n := 0
	for n < len(c.pending) && !c.pending[n].start.Add(SampleInterval+delay).After(now) {
		c.apply(c.pending[n], false)
		n++
	}
	if n > 0 {
		c.pending = append(c.pending[:0], c.pending[n:]...)
	}
}

// sample is one SampleInterval of an edge.
type sample struct {
	start    time.Time
	rate     float64
	share    float64
	hasShare bool
}

// maxPendingSamples bounds the samples waiting to adapt the bands of one
// caller; past it the oldest adapts them early.
const maxPendingSamples = 32

func (c *caller) apply(s sample, learning bool) {
	if learning {
		c.rate.learn(s.rate)
		if s.hasShare {
			c.errRate.learn(s.share)
		}
		return
	}
	c.rate.adapt(s.rate)
	if s.hasShare {
		c.errRate.adapt(s.share)
	}
}

// clearPending discards the samples waiting to adapt the bands: the edge
// raised an event.
func (c *caller) clearPending() { c.pending = c.pending[:0] }

func (w *workload) export() WorkloadBaseline {
	wb := WorkloadBaseline{
		SPIFFEID:        w.key.id,
		Namespace:       w.namespace,
		Workload:        w.key.name,
		Digests:         append([]string(nil), w.digests...),
		Callers:         make([]Caller, 0, len(w.callers)),
		CallersOverflow: w.callersOverflow,
	}
	for _, c := range w.callers {
		wb.Callers = append(wb.Callers, c.export())
	}
	sort.Slice(wb.Callers, func(i, j int) bool {
		a, b := wb.Callers[i], wb.Callers[j]
		if a.SPIFFEID != b.SPIFFEID {
			return a.SPIFFEID < b.SPIFFEID
		}
		return a.Workload < b.Workload
	})
	return wb
}

func (c *caller) export() Caller {
	x := Caller{
		SPIFFEID:       c.key.id,
		Workload:       c.key.name,
		MTLS:           c.mtls,
		FirstSeen:      c.first,
		LastSeen:       c.last,
		Requests:       c.requests,
		Failures:       c.failures,
		Denied:         c.denied,
		Rate:           c.rate.export(),
		ErrorRate:      c.errRate.export(),
		RoutesOverflow: c.routesOverflow,
	}
	for s := range c.services {
		x.Services = append(x.Services, s)
	}
	sort.Strings(x.Services)
	for _, r := range c.routes {
		x.Routes = append(x.Routes, *r)
	}
	sort.Slice(x.Routes, func(i, j int) bool {
		a, b := x.Routes[i], x.Routes[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Method != b.Method {
			return a.Method < b.Method
		}
		return !a.Truncated && b.Truncated
	})
	return x
}

// restoreWorkload rebuilds a saved workload with at most callers callers
// and routes routes in all.
func restoreWorkload(wb WorkloadBaseline, callers, routes int) *workload {
	w := newWorkload(workloadKey{id: wb.SPIFFEID, name: wb.Workload}, wb.Namespace)
	w.callersOverflow = wb.CallersOverflow
	w.digests = append([]string(nil), wb.Digests...)
	if len(w.digests) > MaxDigests {
		w.digests = w.digests[len(w.digests)-MaxDigests:]
	}
	for _, x := range wb.Callers {
		if len(w.callers) >= min(MaxCallersPerWorkload, callers) {
			w.callersOverflow = true
			break
		}
		c := newCaller(callerKey{id: x.SPIFFEID, name: x.Workload}, x.FirstSeen)
		c.last = x.LastSeen
		c.sampleStart = time.Time{}
		c.mtls = x.MTLS
		c.requests, c.failures, c.denied = x.Requests, x.Failures, x.Denied
		c.rate, c.errRate = importBand(x.Rate), importBand(x.ErrorRate)
		c.routesOverflow = x.RoutesOverflow
		for _, s := range x.Services {
			if len(c.services) < MaxServicesPerCaller {
				c.services[s] = true
			}
		}
		for _, r := range x.Routes {
			if len(c.routes) >= MaxRoutesPerCaller || routes <= 0 {
				c.routesOverflow = true
				break
			}
			routes--
			r := r
			c.routes[routeKey{method: r.Method, path: r.Path, truncated: r.Truncated}] = &r
		}
		w.callers[c.key] = c
	}
	return w
}

func (e *Engine) snapshotLocked(now time.Time) *Snapshot {
	s := &Snapshot{
		Version:   snapshotVersion,
		Learning:  e.learningLocked(now),
		Workloads: make([]WorkloadBaseline, 0, len(e.workloads)),
	}
	if e.started {
		s.LearningStarted = e.learnStart
		s.LearningEnds = e.learnEnds
	}
	for _, w := range e.workloads {
		s.Workloads = append(s.Workloads, w.export())
	}
	sort.Slice(s.Workloads, func(i, j int) bool {
		a, b := s.Workloads[i], s.Workloads[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Workload != b.Workload {
			return a.Workload < b.Workload
		}
		return a.SPIFFEID < b.SPIFFEID
	})
	return s
}
