package demo

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The proxy series the demo reads (see internal/proxy/metrics).
const (
	requestsMetric = "rampart_proxy_requests_total"
	durationMetric = "rampart_proxy_request_duration_seconds"
	outbound       = "outbound"
)

// edge is one caller → service pair, measured on the caller's proxy's
// outbound side.
type edge struct {
	// Source is the calling workload.
	Source string
	// Service is the destination as the proxy labels it: "name.namespace".
	Service string
}

func (e edge) String() string {
	name, _, _ := strings.Cut(e.Service, ".")
	return e.Source + " -> " + name
}

// bucket is one cumulative histogram bucket: Count observations were at
// most UpperBound.
type bucket struct {
	UpperBound float64
	Count      float64
}

// counts is the cumulative traffic of one destination service in one scrape
// of a proxy, or, after Sub, the traffic between two scrapes.
type counts struct {
	// Requests and Failures count requests; a failure is a 5xx status or a
	// gRPC status other than OK.
	Requests, Failures float64
	// ByPeer counts requests by the SPIFFE ID of the peer proxy that
	// answered: the identity verified over mTLS.
	ByPeer map[string]float64
	// Buckets is the request duration histogram in seconds, summed over
	// peers, sorted by upper bound, ending with +Inf.
	Buckets []bucket
}

// snapshot is one scrape of a proxy: outbound traffic by service.
type snapshot map[string]*counts

// parseSnapshot reads a proxy's /metrics (Prometheus text format) and keeps
// its outbound request counts and latency histograms, by service.
func parseSnapshot(r io.Reader) (snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("demo: parsing metrics: %w", err)
	}
	snap := make(snapshot)
	get := func(service string) *counts {
		c := snap[service]
		if c == nil {
			c = &counts{ByPeer: make(map[string]float64)}
			snap[service] = c
		}
		return c
	}
	if mf := families[requestsMetric]; mf != nil {
		for _, m := range mf.GetMetric() {
			l := labels(m)
			if l["direction"] != outbound || l["dst_service"] == "" {
				continue
			}
			v := m.GetCounter().GetValue()
			c := get(l["dst_service"])
			c.Requests += v
			c.ByPeer[l["dst_identity"]] += v
			if failed(l["code"], l["grpc_status"]) {
				c.Failures += v
			}
		}
	}
	if mf := families[durationMetric]; mf != nil {
		sums := make(map[string]map[float64]float64) // service → le → count
		for _, m := range mf.GetMetric() {
			l := labels(m)
			h := m.GetHistogram()
			if l["direction"] != outbound || l["dst_service"] == "" || h == nil {
				continue
			}
			s := sums[l["dst_service"]]
			if s == nil {
				s = make(map[float64]float64)
				sums[l["dst_service"]] = s
			}
			for _, b := range h.GetBucket() {
				s[b.GetUpperBound()] += bucketCount(b)
			}
			// The text format always has a +Inf bucket; other sources
			// may leave it implicit in the sample count.
			if n := len(h.GetBucket()); n == 0 || !math.IsInf(h.GetBucket()[n-1].GetUpperBound(), +1) {
				s[math.Inf(+1)] += sampleCount(h)
			}
		}
		for service, s := range sums {
			c := get(service)
			for le, n := range s {
				c.Buckets = append(c.Buckets, bucket{UpperBound: le, Count: n})
			}
			slices.SortFunc(c.Buckets, func(a, b bucket) int { return cmp.Compare(a.UpperBound, b.UpperBound) })
		}
	}
	return snap, nil
}

func labels(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.GetLabel()))
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func bucketCount(b *dto.Bucket) float64 {
	if b.CumulativeCountFloat != nil {
		return b.GetCumulativeCountFloat()
	}
	return float64(b.GetCumulativeCount())
}

func sampleCount(h *dto.Histogram) float64 {
	if h.SampleCountFloat != nil {
		return h.GetSampleCountFloat()
	}
	return float64(h.GetSampleCount())
}

// failed reports whether a request with HTTP status code and gRPC status
// grpcStatus (either may be empty) failed: a 5xx, which includes the 502
// and 503 the proxy answers itself when it cannot reach a peer, or a gRPC
// status other than OK.
func failed(code, grpcStatus string) bool {
	if n, err := strconv.Atoi(code); err == nil && n >= 500 {
		return true
	}
	return grpcStatus != "" && grpcStatus != "0"
}

// Sub returns the traffic between prev and c, two scrapes of the same
// proxy. When a count went down the proxy restarted, and c itself is the
// traffic since.
func (c *counts) Sub(prev *counts) *counts {
	if prev == nil || c.Requests < prev.Requests || c.Failures < prev.Failures {
		return c
	}
	d := &counts{
		Requests: c.Requests - prev.Requests,
		Failures: c.Failures - prev.Failures,
		ByPeer:   make(map[string]float64, len(c.ByPeer)),
	}
	for peer, n := range c.ByPeer {
		d.ByPeer[peer] = max(n-prev.ByPeer[peer], 0)
	}
	before := make(map[float64]float64, len(prev.Buckets))
	for _, b := range prev.Buckets {
		before[b.UpperBound] = b.Count
	}
	for _, b := range c.Buckets {
		d.Buckets = append(d.Buckets, bucket{UpperBound: b.UpperBound, Count: max(b.Count-before[b.UpperBound], 0)})
	}
	return d
}

// quantile returns the q-quantile (0 ≤ q ≤ 1) of the observations counted
// in buckets the way Prometheus' histogram_quantile does: it finds the
// bucket holding the q·n-th observation and interpolates linearly within
// it, taking zero as the lower bound of the first bucket; when the rank
// falls in the +Inf bucket it returns the highest finite upper bound.
// buckets are cumulative, sorted by upper bound, and end with +Inf. The
// result is NaN without observations or with fewer than two buckets.
func quantile(q float64, buckets []bucket) float64 {
	switch {
	case math.IsNaN(q):
		return math.NaN()
	case q < 0:
		return math.Inf(-1)
	case q > 1:
		return math.Inf(+1)
	}
	if len(buckets) < 2 || !math.IsInf(buckets[len(buckets)-1].UpperBound, +1) {
		return math.NaN()
	}
	// counts scraped at slightly different moments can dip; a cumulative
	// count never does.
	bs := slices.Clone(buckets)
	for i := 1; i < len(bs); i++ {
		bs[i].Count = max(bs[i].Count, bs[i-1].Count)
	}
	n := bs[len(bs)-1].Count
	if n == 0 {
		return math.NaN()
	}
	rank := q * n
	b := sort.Search(len(bs)-1, func(i int) bool { return bs[i].Count >= rank })
	if b == len(bs)-1 {
		return bs[len(bs)-2].UpperBound
	}
	if b == 0 && bs[0].UpperBound <= 0 {
		return bs[0].UpperBound
	}
	start, end, count := 0.0, bs[b].UpperBound, bs[b].Count
	if b > 0 {
		start = bs[b-1].UpperBound
		count -= bs[b-1].Count
		rank -= bs[b-1].Count
	}
	return start + (end-start)*(rank/count)
}

// edgeStats is one row of the traffic table.
type edgeStats struct {
	edge
	// Requests is how many requests the interval saw.
	Requests float64
	// Elapsed is the time between the two scrapes.
	Elapsed time.Duration
	// Success is the fraction of requests that did not fail; NaN without
	// requests.
	Success float64
	// P50 and P99 are latency quantiles in seconds; NaN without requests.
	P50, P99 float64
	// Peers lists the SPIFFE IDs that answered, verified over mTLS.
	Peers []string
	// Err is why the edge could not be measured; the other fields are then
	// meaningless.
	Err error
}

// statsFor computes e's row from two scrapes of its source proxy taken elapsed
// apart. A service absent from a scrape had no traffic yet.
func statsFor(e edge, prev, cur snapshot, elapsed time.Duration) edgeStats {
	s := edgeStats{edge: e, Elapsed: elapsed, Success: math.NaN(), P50: math.NaN(), P99: math.NaN()}
	c := cur[e.Service]
	if c == nil {
		return s
	}
	d := c.Sub(prev[e.Service])
	s.Requests = d.Requests
	if d.Requests > 0 {
		// Clamped: counters that moved inconsistently (a series reset
		// between scrapes) must not print a success rate below 0%.
		s.Success = min(max(1-d.Failures/d.Requests, 0), 1)
	}
	s.P50 = quantile(0.5, d.Buckets)
	s.P99 = quantile(0.99, d.Buckets)
	for peer, n := range d.ByPeer {
		if n > 0 && peer != "" {
			s.Peers = append(s.Peers, peer)
		}
	}
	slices.Sort(s.Peers)
	return s
}

// writeTable renders rows as the demo's periodic traffic table.
func writeTable(w io.Writer, at time.Time, rows []edgeStats) error {
	var elapsed time.Duration
	for _, r := range rows {
		elapsed = max(elapsed, r.Elapsed)
	}
	if _, err := fmt.Fprintf(w, "%s  traffic in the last %s, as each calling proxy measured it\n",
		at.Format(time.TimeOnly), elapsed.Round(100*time.Millisecond)); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  EDGE\tREQUESTS\tRPS\tSUCCESS\tP50\tP99\tSERVED BY (verified over mTLS)")
	for _, r := range rows {
		if r.Err != nil {
			fmt.Fprintf(tw, "  %s\t-\t-\t-\t-\t-\tunknown: %v\n", r.edge, r.Err)
			continue
		}
		rps := "-"
		if r.Elapsed > 0 {
			rps = strconv.FormatFloat(r.Requests/r.Elapsed.Seconds(), 'f', 1, 64)
		}
		peers := strings.Join(r.Peers, ", ")
		if peers == "" {
			peers = "-"
		}
		fmt.Fprintf(tw, "  %s\t%.0f\t%s\t%s\t%s\t%s\t%s\n",
			r.edge, r.Requests, rps, percent(r.Success), latency(r.P50), latency(r.P99), peers)
	}
	return tw.Flush()
}

func percent(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	return strconv.FormatFloat(100*f, 'f', 1, 64) + "%"
}

// latency renders seconds for people: "850µs", "3.2ms", "1.25s".
func latency(sec float64) string {
	switch {
	case math.IsNaN(sec):
		return "-"
	case math.IsInf(sec, 0):
		return "∞"
	case sec < 0.001:
		return fmt.Sprintf("%.0fµs", sec*1e6)
	case sec < 1:
		return fmt.Sprintf("%.1fms", sec*1e3)
	default:
		return fmt.Sprintf("%.2fs", sec)
	}
}
