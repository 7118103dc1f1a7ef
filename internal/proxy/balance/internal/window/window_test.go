package window

import (
	"testing"
	"time"
)

func TestCounter(t *testing.T) {
	const s = int64(time.Second)
	type step struct {
		at    int64 // nanoseconds
		a, b  uint64
		wantA uint64 // Sum at the same time, after the Add
		wantB uint64
		reset bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"counts within the window", []step{
			{at: 0, a: 1, wantA: 1},
			{at: s / 2, a: 1, b: 1, wantA: 2, wantB: 1},
			{at: 9 * s, a: 1, wantA: 3, wantB: 1},
		}},
		{"forgets bucket by bucket", []step{
			{at: 0, a: 5, wantA: 5},
			{at: 1 * s, a: 1, wantA: 6},
			{at: 9*s + s/2, wantA: 6}, // bucket 0 is the oldest still in
			{at: 10 * s, wantA: 1},    // bucket 0 fell out
			{at: 11 * s, wantA: 0},
		}},
		{"a slot reused after a long pause", []step{
			{at: 3 * s, a: 7, b: 7, wantA: 7, wantB: 7},
			{at: 13 * s, a: 1, wantA: 1}, // same slot, ten buckets later
			{at: 100 * s, wantA: 0},
		}},
		{"time that goes back counts in the newest bucket", []step{
			{at: 5 * s, a: 1, wantA: 1},
			{at: 2 * s, a: 1, wantA: 2},
			{at: 14 * s, wantA: 2},
			{at: 15 * s, wantA: 0},
		}},
		{"reset", []step{
			{at: 0, a: 3, b: 2, wantA: 3, wantB: 2},
			{at: s, reset: true},
			{at: s, a: 1, wantA: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(10 * time.Second)
			if c.Width() != time.Second {
				t.Fatalf("width %v, want 1s", c.Width())
			}
			for i, st := range tt.steps {
				if st.reset {
					c.Reset()
					continue
				}
				c.Add(st.at, st.a, st.b)
				if a, b := c.Sum(st.at); a != st.wantA || b != st.wantB {
					t.Fatalf("step %d at %v: sum (%d, %d), want (%d, %d)", i, time.Duration(st.at), a, b, st.wantA, st.wantB)
				}
			}
		})
	}
}

func TestTinyWindow(t *testing.T) {
	c := New(time.Nanosecond)
	c.Add(0, 1, 0)
	if a, _ := c.Sum(9); a != 1 {
		t.Errorf("sum at 9ns: %d, want 1", a)
	}
	if a, _ := c.Sum(10); a != 0 {
		t.Errorf("sum at 10ns: %d, want 0", a)
	}
}
