// Package window counts two kinds of events over a sliding window of time,
// in a fixed number of buckets: requests and failures for outlier
// detection, requests and retries for retry budgets.
//
// It is a value type without locking (its owner serializes access) and
// reads no clock: callers pass the time as nanoseconds since an epoch of
// their own, never negative. Like the rest of internal/proxy/balance it must depend on the
// standard library only.
package window

import "time"

// Buckets is the number of buckets a window is divided into. A window of
// length W forgets its events in steps of W/Buckets.
const Buckets = 10

// Counter counts two kinds of events, A and B, over the last Buckets
// buckets. The zero value is unusable: make one with New.
type Counter struct {
	width   int64 // nanoseconds per bucket
	last    int64 // index of the newest bucket written or read
	buckets [Buckets]bucket
}

type bucket struct {
	idx  int64 // which bucket of time this slot holds
	a, b uint64
}

// New returns a counter over a window of length w (at least Buckets
// nanoseconds).
func New(w time.Duration) Counter {
	width := int64(w) / Buckets
	if width < 1 {
		width = 1
	}
	c := Counter{width: width}
	c.Reset()
	return c
}

// Width is the length of one bucket.
func (c *Counter) Width() time.Duration { return time.Duration(c.width) }

// index returns the bucket index of now. Time never goes back for a
// counter: a caller that read its clock before another one took the
// owner's lock counts in the newest bucket instead.
func (c *Counter) index(now int64) int64 {
	idx := max(now, 0) / c.width
	if idx < c.last {
		return c.last
	}
	c.last = idx
	return idx
}

// Add counts a events of the first kind and b of the second at time now.
func (c *Counter) Add(now int64, a, b uint64) {
	idx := c.index(now)
	s := &c.buckets[slot(idx)]
	if s.idx != idx {
		*s = bucket{idx: idx}
	}
	s.a += a
	s.b += b
}

// Sum returns the events of both kinds counted in the window that ends
// with the bucket of now: the current bucket and the Buckets-1 before it.
func (c *Counter) Sum(now int64) (a, b uint64) {
	idx := c.index(now)
	for i := range c.buckets {
		s := &c.buckets[i]
		if s.idx > idx-Buckets && s.idx <= idx {
			a += s.a
			b += s.b
		}
	}
	return a, b
}

// Reset forgets every event.
func (c *Counter) Reset() {
	for i := range c.buckets {
		// An index no time maps to: it never counts.
		c.buckets[i] = bucket{idx: minIndex}
	}
}

const minIndex = -1 << 62

func slot(idx int64) int { return int(idx % Buckets) }
