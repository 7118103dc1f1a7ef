package retry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Defaults of Backoff, as in Envoy.
const (
	DefaultBackoffBase = 25 * time.Millisecond
	DefaultBackoffMax  = 250 * time.Millisecond
)

// Backoff spaces retries out: the n-th retry waits a uniformly random time
// below min(Max, Base×2ⁿ⁻¹) ("full jitter"), so that clients that failed
// together do not retry together. The zero value gives the defaults.
type Backoff struct {
	// Base bounds the wait before the first retry. Zero means
	// DefaultBackoffBase.
	Base time.Duration
	// Max bounds every wait. Zero means DefaultBackoffMax; it may not be
	// below Base.
	Max time.Duration
	// Rand returns uniformly random numbers; nil means math/rand/v2's
	// global source. It must be safe for concurrent use if the Backoff is.
	Rand func() uint64
}

// Validate reports a setting out of range.
func (b *Backoff) Validate() error {
	if b.Base < 0 || b.Max < 0 {
		return errors.New("retry: negative backoff")
	}
	if base, maxd := b.bounds(); maxd < base {
		return fmt.Errorf("retry: backoff max %v is below its base %v", maxd, base)
	}
	return nil
}

func (b *Backoff) bounds() (base, maxd time.Duration) {
	base, maxd = b.Base, b.Max
	if base == 0 {
		base = DefaultBackoffBase
	}
	if maxd == 0 {
		maxd = DefaultBackoffMax
	}
	return base, maxd
}

// Ceiling returns the bound of the wait before retry n (1 for the first).
func (b *Backoff) Ceiling(n int) time.Duration {
	base, maxd := b.bounds()
	if n < 1 {
		n = 1
	}
	if n-1 >= 62 || base > maxd>>(n-1) {
		return maxd
	}
	return base << (n - 1)
}

// Delay returns how long to wait before retry n (1 for the first): a
// random duration in [0, Ceiling(n)).
func (b *Backoff) Delay(n int) time.Duration {
	c := b.Ceiling(n)
	if c <= 0 {
		return 0
	}
	r := b.Rand
	if r == nil {
		r = rand.Uint64
	}
	return time.Duration(r() % uint64(c))
}
