package egress

import "sync"

// DefaultMaxDestinations is how many distinct destination labels from
// apps the egress metrics take before the rest are counted as
// OtherDestination.
const DefaultMaxDestinations = 100

// OtherDestination is the destination label past the cap.
const OtherDestination = "other"

// Labels bounds the destination label values of the egress metrics that
// apps supply: names they send (a TLS server name, an HTTP host) and
// addresses they dial. The first Max distinct values are kept for the
// life of the proxy, any later one becomes OtherDestination; without a
// cap an app could grow the metrics without bound. The patterns and
// networks of rules are not passed through it: the configuration bounds
// them, and names an app makes up must not push them into
// OtherDestination. It is safe for concurrent use.
type Labels struct {
	// Max is the cap; zero means DefaultMaxDestinations.
	Max int

	mu   sync.Mutex
	seen map[string]struct{}
}

// Of returns the label to count v under.
func (l *Labels) Of(v string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[v]; ok {
		return v
	}
	limit := l.Max
	if limit <= 0 {
		limit = DefaultMaxDestinations
	}
	if len(l.seen) >= limit {
		return OtherDestination
	}
	if l.seen == nil {
		l.seen = make(map[string]struct{})
	}
	l.seen[v] = struct{}{}
	return v
}
