// Package sketch is the latency histogram that proxies send to the
// controller in their per-edge telemetry (meshv1.LatencySketch): log-spaced
// buckets on one fixed scheme, so that summaries from any proxy merge by
// adding counts, and quantiles read back within a bucket's width (under 10%
// relative error). It does not depend on the control-plane API: callers
// move the counts in and out of meshv1.LatencySketch (Encode, Decode), so
// that packages that only read telemetry stay free of gRPC.
//
// Bucket 0 holds latencies up to MinSeconds; bucket i (1 <= i < Buckets-1)
// holds (MinSeconds·G^(i-1), MinSeconds·G^i] with G = 2^(1/4); the last
// bucket holds everything above MaxSeconds.
package sketch

import (
	"errors"
	"fmt"
	"math"
)

const (
	// MinSeconds is the upper bound of the first bucket: 100 µs.
	MinSeconds = 100e-6
	// perOctave is the number of buckets per doubling of latency.
	perOctave = 4
	// Buckets is the number of buckets, the overflow bucket included.
	Buckets = 1 + perOctave*20 + 1
)

// MaxSeconds is the upper bound of the last finite bucket (about 105 s).
var MaxSeconds = bounds[Buckets-2]

// UpperBound returns the upper bound in seconds of bucket i, +Inf for the
// overflow bucket.
func UpperBound(i int) float64 { return bounds[i] }

var bounds = func() (b [Buckets]float64) {
	for i := range Buckets - 1 {
		b[i] = MinSeconds * math.Exp2(float64(i)/perOctave)
	}
	b[Buckets-1] = math.Inf(1)
	return b
}()

// Index returns the bucket that holds a latency of seconds. Negative and
// NaN latencies go to bucket 0.
func Index(seconds float64) int {
	if !(seconds > MinSeconds) { // NaN and <= MinSeconds
		return 0
	}
	if seconds > MaxSeconds {
		return Buckets - 1
	}
	// ceil(4·log2(x)) without a logarithm: x = m·2^e with m in [0.5, 1).
	m, e := math.Frexp(seconds / MinSeconds)
	i := 4 * e
	switch {
	case m == 0.5:
		i -= 4
	case m <= quarter[0]:
		i -= 3
	case m <= quarter[1]:
		i -= 2
	case m <= quarter[2]:
		i--
	}
	// Guard the rounding of Log2 at bucket edges.
	if i > 0 && seconds <= bounds[i-1] {
		i--
	} else if seconds > bounds[i] {
		i++
	}
	return min(i, Buckets-1)
}

// quarter holds 2^(-3/4), 2^(-1/2) and 2^(-1/4).
var quarter = [3]float64{math.Exp2(-0.75), math.Exp2(-0.5), math.Exp2(-0.25)}

// Sketch is a latency histogram. The zero value is empty and ready. It is
// not safe for concurrent use.
type Sketch struct {
	counts [Buckets]uint64
	sum    float64
}

// Observe adds one latency, in seconds.
func (s *Sketch) Observe(seconds float64) {
	s.counts[Index(seconds)]++
	if seconds > 0 && !math.IsInf(seconds, 1) {
		s.sum += seconds
	}
}

// Count returns the number of latencies observed.
func (s *Sketch) Count() uint64 {
	var n uint64
	for _, c := range s.counts {
		n += c
	}
	return n
}

// Sum returns the total of the latencies observed, in seconds.
func (s *Sketch) Sum() float64 { return s.sum }

// BucketCount returns the count of bucket i.
func (s *Sketch) BucketCount(i int) uint64 { return s.counts[i] }

// Merge adds o's latencies to s.
func (s *Sketch) Merge(o *Sketch) {
	for i, c := range o.counts {
		s.counts[i] += c
	}
	s.sum += o.sum
}

// Reset empties s.
func (s *Sketch) Reset() { *s = Sketch{} }

// Quantile returns an estimate of the q-quantile (0 <= q <= 1) in seconds:
// the geometric interpolation inside the bucket that holds it. It returns
// NaN for an empty sketch, and MaxSeconds when the quantile falls in the
// overflow bucket.
func (s *Sketch) Quantile(q float64) float64 {
	n := s.Count()
	if n == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	rank := q * float64(n) // the rank-th latency, 1-based, rounded up
	var seen float64
	for i, c := range s.counts {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			switch i {
			case 0:
				return MinSeconds
			case Buckets - 1:
				return MaxSeconds
			}
			lo, hi := UpperBound(i-1), UpperBound(i)
			frac := (rank - seen) / float64(c)
			return lo * math.Pow(hi/lo, frac)
		}
		seen += float64(c)
	}
	return MaxSeconds
}

// Encode returns s as meshv1.LatencySketch carries it: the counts
// without the trailing empty buckets (nil for an empty sketch), and the
// sum of the latencies in seconds.
func (s *Sketch) Encode() (counts []uint64, sumSeconds float64) {
	last := -1
	for i, c := range s.counts {
		if c != 0 {
			last = i
		}
	}
	if last >= 0 {
		counts = append([]uint64(nil), s.counts[:last+1]...)
	}
	return counts, s.sum
}

// ErrInvalid is wrapped by Decode's errors.
var ErrInvalid = errors.New("invalid latency sketch")

// Decode decodes a sketch from a proxy (the fields of a
// meshv1.LatencySketch), refusing one that is not on this scheme: more
// buckets than Buckets, a negative, NaN or infinite sum, or counts whose
// total overflows. No counts and a zero sum is an empty sketch.
func Decode(counts []uint64, sumSeconds float64) (*Sketch, error) {
	s := new(Sketch)
	if len(counts) > Buckets {
		return nil, fmt.Errorf("%w: %d buckets, at most %d", ErrInvalid, len(counts), Buckets)
	}
	if sum := sumSeconds; math.IsNaN(sum) || math.IsInf(sum, 0) || sum < 0 {
		return nil, fmt.Errorf("%w: sum_seconds %v is not a finite, non-negative number", ErrInvalid, sum)
	}
	var total uint64
	for i, c := range counts {
		if total+c < total {
			return nil, fmt.Errorf("%w: counts overflow at bucket %d", ErrInvalid, i)
		}
		total += c
		s.counts[i] = c
	}
	s.sum = sumSeconds
	return s, nil
}
