package authz

import (
	"time"
)

// Bounds of rate limits.
const (
	maxCoolDown      = 24 * time.Hour
	maxCoolDownAfter = 3600
)

// RateLimitMatcher is the compiled match of a RateLimit: which requests it
// counts, and for a PerRoute limit which route (entry of To) a request
// takes. It is immutable and safe for concurrent use.
type RateLimitMatcher struct {
	from []source
	to   []operation
}

// CompileRateLimit checks l and compiles its match. The error is
// FieldErrors, with fields named from the RateLimit ("to[0].paths[1]").
func CompileRateLimit(l *RateLimit) (*RateLimitMatcher, error) {
	var errs FieldErrors
	m := compileRateLimit("", l, &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	return m, nil
}

func compileRateLimit(path string, l *RateLimit, errs *FieldErrors) *RateLimitMatcher {
	if l.Policy == "" {
		errs.add(join(path, "policy"), "is required")
	}
	if l.Name == "" {
		errs.add(join(path, "name"), "is required")
	}
	switch l.Per {
	case PerSource, PerOverall:
	case PerRoute:
		if len(l.To) == 0 {
			errs.add(join(path, "to"), "per route needs routes: list them in to, each gets its own bucket")
		}
	default:
		errs.add(join(path, "per"), "must be source, route or overall")
	}
	if l.RequestsPerSecond < 1 || l.RequestsPerSecond > maxPerRequest {
		errs.add(join(path, "requestsPerSecond"), "must be between 1 and %d", maxPerRequest)
	}
	if l.Burst < 1 || l.Burst > maxPerRequest {
		errs.add(join(path, "burst"), "must be between 1 and %d", maxPerRequest)
	}
	switch {
	case l.CoolDown == 0 && l.CoolDownAfter == 0:
	case l.Per != PerSource:
		errs.add(join(path, "coolDown"), "cuts a source off, so it needs per source")
	case l.CoolDown < time.Second || l.CoolDown > maxCoolDown:
		errs.add(join(path, "coolDown"), "must be between 1s and %s", maxCoolDown)
	case l.CoolDownAfter < 1 || l.CoolDownAfter > maxCoolDownAfter:
		errs.add(join(path, "coolDownAfter"), "must be between 1 and %d windows", maxCoolDownAfter)
	}
	r := Rule{From: l.From, To: l.To}
	c := compileRule(path, &r, errs)
	return &RateLimitMatcher{from: c.from, to: c.to}
}

// Match reports whether the limit counts r and, for a PerRoute limit,
// the index of the entry of To that r takes (0 when To is empty). A field
// that r has no value for does not match (an identity field of a request
// without a verified identity, an HTTP field of a TCP connection): limits
// count the requests they positively match. Match does not allocate. It
// expects a request that Decide has allowed (and so validated).
func (m *RateLimitMatcher) Match(r *Request) (ok bool, route int) {
	v := view{id: r.identity(), http: r.Protocol == ProtocolHTTP}
	if v.id != "" {
		v.ns = NamespaceOf(v.id)
	}
	if v.http {
		v.method, v.path, v.host = r.Method, r.Path, r.Host
	}
	if len(m.from) > 0 {
		ok := false
		for i := range m.from {
			if m.from[i].match(r, &v, false, nil, i) {
				ok = true
				break
			}
		}
		if !ok {
			return false, 0
		}
	}
	if len(m.to) == 0 {
		return true, 0
	}
	for i := range m.to {
		if m.to[i].match(r.Port, &v, false, nil, i) {
			return true, i
		}
	}
	return false, 0
}
