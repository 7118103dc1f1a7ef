// Package logsample bounds the log lines that callers can cause: a token
// bucket per kind of event lets a steady trickle and short bursts through
// and counts the lines it holds back, so that the next line let through
// can say how many were suppressed. Metrics, not the log, count every
// event.
//
// It uses the standard library only and must not depend on Kubernetes
// packages or other parts of the proxy.
package logsample

import (
	"sync"
	"time"
)

// The bucket's shape: Rate lines a second on average, Burst at once.
const (
	Rate  = 10
	Burst = 50
)

// Bucket lets Rate events a second through, Burst at once, and counts the
// others. Its zero value is a full bucket, ready to use; it is safe for
// concurrent use.
type Bucket struct {
	mu         sync.Mutex
	started    bool
	tokens     float64
	last       time.Time // when tokens was last refilled
	suppressed int64
}

// Allow reports whether to log the event that happens at now, and how many
// events were held back since the last one let through.
func (b *Bucket) Allow(now time.Time) (ok bool, suppressed int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		b.started, b.tokens, b.last = true, Burst, now
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(Burst, b.tokens+d.Seconds()*Rate)
		b.last = now
	}
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}
