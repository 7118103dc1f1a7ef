package graph

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// SeriesResponse is the answer of GET /api/v1/series: each workload's
// traffic bucket by bucket, for the dashboard's sparklines.
type SeriesResponse struct {
	Window        string  `json:"window"`
	WindowSeconds float64 `json:"window_seconds"`
	// StepSeconds is the width of one point: 5 for windows up to a
	// minute, 60 above.
	StepSeconds float64          `json:"step_seconds"`
	Workloads   []WorkloadSeries `json:"workloads"`
}

// WorkloadSeries is one workload's traffic over a window, one point per
// bucket, oldest first. As in WorkloadStat, instances of one name that
// hold different identities are different workloads.
type WorkloadSeries struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Identity is the SPIFFE ID the workload's instances hold.
	Identity string        `json:"identity"`
	Points   []SeriesPoint `json:"points"`
}

// SeriesPoint is one complete bucket of a workload's traffic.
type SeriesPoint struct {
	// Start is when the bucket starts.
	Start time.Time `json:"start"`
	// Inbound and Outbound are what the workload served and sent in the
	// bucket, as in WorkloadStat.
	Inbound  Traffic `json:"inbound"`
	Outbound Traffic `json:"outbound"`
}

// SeriesStep is the width of the points Series returns for window d.
func SeriesStep(d time.Duration) time.Duration {
	if d > FineWindow {
		return CoarseWidth
	}
	return BucketWidth
}

// Series returns each workload's traffic over the window, one point per
// bucket (SeriesStep wide), oldest first, with every bucket present: a
// bucket without traffic is a point of zeros. As in Workloads, only
// complete buckets count: the newest point is the newest bucket that one
// of the workload's instances has completed. The workloads are those of
// Workloads (one per namespace, name and identity), sorted the same way;
// numbers come from the workload's own proxies (inbound and outbound
// summaries; overflow entries are on no point). Errors wrap ErrInvalid.
func (g *Graph) Series(f Filter) ([]WorkloadSeries, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	width := SeriesStep(f.Window)
	n := int64(f.Window / width)
	type point struct {
		in, out         sum
		inMTLS, outMTLS uint64
	}
	type acc struct {
		instances []*instance
		last      int64 // epoch of the newest point
		points    []point
	}
	type key struct {
		namespace, name string
		id              spiffeid.ID
	}
	byName := make(map[key]*acc)
	now := g.now()

	g.mu.Lock()
	g.expireLocked(now)
	for _, in := range g.instances {
		if !f.keeps(in.namespace, in.workload) {
			continue
		}
		k := key{in.namespace, in.workload, in.id}
		a := byName[k]
		if a == nil {
			a = &acc{last: math.MinInt64, points: make([]point, n)}
			byName[k] = a
		}
		a.instances = append(a.instances, in)
		a.last = max(a.last, in.complete(now).UnixNano()/int64(width)-1)
	}
	for _, a := range byName {
		first := a.last - n + 1
		for _, in := range a.instances {
			last := in.complete(now).UnixNano()/int64(width) - 1
			for _, s := range in.series {
				if s.key.dir == Overflow {
					continue
				}
				buckets := s.fine[:]
				if width == CoarseWidth {
					buckets = s.coarse[:]
				}
				for i := range buckets {
					b := &buckets[i]
					if b.epoch < first || b.epoch > last || (b.counts == Counts{} && b.latency == nil) {
						continue
					}
					p := &a.points[b.epoch-first]
					side, mtls := &p.out, &p.outMTLS
					if s.key.dir == Inbound {
						side, mtls = &p.in, &p.inMTLS
					}
					side.Counts.add(b.counts)
					if b.latency != nil {
						side.latency.Merge(b.latency)
					}
					if s.key.mtls {
						*mtls += b.counts.Requests
					}
					// A complete bucket spans its width, less the part
					// before the series started.
					start := time.Unix(0, b.epoch*int64(width))
					end := start.Add(width)
					if s.since.After(start) {
						start = s.since
					}
					side.span = max(side.span, end.Sub(start), time.Second)
				}
			}
		}
	}
	g.mu.Unlock()

	out := make([]WorkloadSeries, 0, len(byName))
	for k, a := range byName {
		first := a.last - n + 1
		ws := WorkloadSeries{Namespace: k.namespace, Name: k.name, Identity: k.id.String(), Points: make([]SeriesPoint, n)}
		for i := range a.points {
			p := &a.points[i]
			ws.Points[i] = SeriesPoint{
				Start:    time.Unix(0, (first+int64(i))*int64(width)).UTC(),
				Inbound:  traffic(&p.in, p.inMTLS),
				Outbound: traffic(&p.out, p.outMTLS),
			}
		}
		out = append(out, ws)
	}
	slices.SortFunc(out, func(a, b WorkloadSeries) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Identity, b.Identity))
	})
	return out, nil
}
