package retry

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffCeiling(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		b    Backoff
		n    int
		want time.Duration
	}{
		{Backoff{}, 0, 25 * ms},
		{Backoff{}, 1, 25 * ms},
		{Backoff{}, 2, 50 * ms},
		{Backoff{}, 3, 100 * ms},
		{Backoff{}, 4, 200 * ms},
		{Backoff{}, 5, 250 * ms},
		{Backoff{}, 63, 250 * ms},
		{Backoff{}, 1000, 250 * ms},
		{Backoff{Base: ms, Max: time.Hour}, 10, 512 * ms},
		{Backoff{Base: time.Second, Max: time.Second}, 3, time.Second},
	}
	for _, tt := range tests {
		if got := tt.b.Ceiling(tt.n); got != tt.want {
			t.Errorf("%+v: Ceiling(%d) = %v, want %v", tt.b, tt.n, got, tt.want)
		}
	}
}

func TestBackoffDelayIsFullJitter(t *testing.T) {
	src := rand.New(rand.NewPCG(1, 2))
	b := Backoff{Rand: src.Uint64}
	for n := 1; n <= 6; n++ {
		ceiling := b.Ceiling(n)
		var sum time.Duration
		lo, hi := ceiling, time.Duration(0)
		const draws = 20000
		for range draws {
			d := b.Delay(n)
			if d < 0 || d >= ceiling {
				t.Fatalf("retry %d: delay %v outside [0, %v)", n, d, ceiling)
			}
			sum += d
			lo, hi = min(lo, d), max(hi, d)
		}
		mean := sum / draws
		if mean < ceiling*45/100 || mean > ceiling*55/100 {
			t.Errorf("retry %d: mean delay %v, want about %v", n, mean, ceiling/2)
		}
		if lo > ceiling/100 || hi < ceiling*99/100 {
			t.Errorf("retry %d: delays span [%v, %v] of [0, %v)", n, lo, hi, ceiling)
		}
	}
	// The default source works too.
	if d := (&Backoff{}).Delay(1); d < 0 || d >= DefaultBackoffBase {
		t.Errorf("default source: %v", d)
	}
}

func TestBackoffValidate(t *testing.T) {
	tests := []struct {
		b  Backoff
		ok bool
	}{
		{Backoff{}, true},
		{Backoff{Base: time.Second}, false}, // above the default max
		{Backoff{Base: time.Second, Max: time.Second}, true},
		{Backoff{Base: -1}, false},
		{Backoff{Max: time.Millisecond}, false},
	}
	for _, tt := range tests {
		if err := tt.b.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: %v, want ok=%v", tt.b, err, tt.ok)
		}
	}
}
