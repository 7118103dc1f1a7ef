package sketch

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestIndexAgreesWithBounds(t *testing.T) {
	for i := 1; i < Buckets-1; i++ {
		lo, hi := UpperBound(i-1), UpperBound(i)
		for _, v := range []float64{math.Nextafter(lo, math.Inf(1)), (lo + hi) / 2, hi} {
			if got := Index(v); got != i {
				t.Errorf("Index(%g) = %d, want %d (bucket (%g, %g])", v, got, i, lo, hi)
			}
		}
	}
	for _, v := range []float64{0, -1, math.NaN(), MinSeconds} {
		if got := Index(v); got != 0 {
			t.Errorf("Index(%g) = %d, want 0", v, got)
		}
	}
	for _, v := range []float64{math.Nextafter(MaxSeconds, math.Inf(1)), 1e6, math.Inf(1)} {
		if got := Index(v); got != Buckets-1 {
			t.Errorf("Index(%g) = %d, want the overflow bucket %d", v, got, Buckets-1)
		}
	}
	if MaxSeconds < 100 {
		t.Errorf("MaxSeconds = %g, want at least 100 s", MaxSeconds)
	}
}

// TestQuantileError checks quantiles against the exact ones of random
// latencies spread over five orders of magnitude: within the bucket width.
func TestQuantileError(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var s Sketch
	vals := make([]float64, 20000)
	for i := range vals {
		vals[i] = 200e-6 * math.Pow(10, 4*r.Float64()) // 200 µs to 2 s
		s.Observe(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.95, 0.99, 0.999} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := s.Quantile(q)
		if rel := math.Abs(got-exact) / exact; rel > 0.19 { // 2^(1/4)-1
			t.Errorf("Quantile(%v) = %g, exact %g: relative error %.3f", q, got, exact, rel)
		}
	}
	if s.Count() != uint64(len(vals)) {
		t.Errorf("Count = %d, want %d", s.Count(), len(vals))
	}
}

func TestQuantileEdges(t *testing.T) {
	var s Sketch
	if !math.IsNaN(s.Quantile(0.5)) {
		t.Error("the quantile of an empty sketch must be NaN")
	}
	s.Observe(0)
	if got := s.Quantile(1); got != MinSeconds {
		t.Errorf("Quantile of a zero latency = %g, want %g", got, MinSeconds)
	}
	s.Observe(1e9)
	if got := s.Quantile(1); got != MaxSeconds {
		t.Errorf("Quantile in the overflow bucket = %g, want %g", got, MaxSeconds)
	}
}

func TestMergeAndProtoRoundTrip(t *testing.T) {
	var a, b Sketch
	for i := range 100 {
		a.Observe(float64(i) * 1e-3)
		b.Observe(float64(i) * 1e-2)
	}
	var m Sketch
	m.Merge(&a)
	m.Merge(&b)
	if m.Count() != 200 || math.Abs(m.Sum()-(a.Sum()+b.Sum())) > 1e-9 {
		t.Fatalf("merged count %d sum %g", m.Count(), m.Sum())
	}
	counts, sum := m.Encode()
	if len(counts) >= Buckets || counts[len(counts)-1] == 0 {
		t.Errorf("Encode kept trailing empty buckets: %d counts", len(counts))
	}
	back, err := Decode(counts, sum)
	if err != nil {
		t.Fatal(err)
	}
	if *back != m {
		t.Error("Decode(Encode(s)) != s")
	}
	if e, err := Decode(nil, 0); err != nil || e.Count() != 0 {
		t.Errorf("Decode(nil, 0) = %v, %v; want an empty sketch", e, err)
	}
	var z Sketch
	if counts, _ := z.Encode(); len(counts) != 0 {
		t.Errorf("an empty sketch encodes %d counts", len(counts))
	}
}

func TestDecodeRefusesForeignSketches(t *testing.T) {
	for name, p := range map[string]struct {
		counts []uint64
		sum    float64
	}{
		"too many buckets": {counts: make([]uint64, Buckets+1)},
		"negative sum":     {counts: []uint64{1}, sum: -1},
		"NaN sum":          {counts: []uint64{1}, sum: math.NaN()},
		"infinite sum":     {counts: []uint64{1}, sum: math.Inf(1)},
		"overflow":         {counts: []uint64{math.MaxUint64, 1}},
	} {
		if _, err := Decode(p.counts, p.sum); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Decode = %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{1, 2, 3}, 0.5)
	f.Fuzz(func(t *testing.T, raw []byte, sum float64) {
		counts := make([]uint64, 0, len(raw))
		for _, b := range raw {
			counts = append(counts, uint64(b)<<(b%64))
		}
		s, err := Decode(counts, sum)
		if err != nil {
			return
		}
		q := s.Quantile(0.99)
		if s.Count() > 0 && (math.IsNaN(q) || q < MinSeconds || q > MaxSeconds) {
			t.Fatalf("Quantile(0.99) = %g outside [%g, %g]", q, MinSeconds, MaxSeconds)
		}
	})
}

func BenchmarkObserve(b *testing.B) {
	var s Sketch
	for i := 0; b.Loop(); i++ {
		s.Observe(float64(i%1000) * 1e-4)
	}
}
