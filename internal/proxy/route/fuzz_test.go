package route

import (
	"net/http"
	"strings"
	"testing"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// Small pools, so that fuzzed routes overlap and ties are frequent.
var (
	fuzzPaths   = []string{"/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b", "/a/b/"}
	fuzzMethods = []string{"", "GET", "POST"}
	fuzzHeaders = []string{"x-a", "X-B", "x-c"}
	fuzzValues  = []string{"1", "2", "1,2"}
)

// fuzzRoutes builds routes from spec, four bytes a match: path and its
// type, method, headers, and whether the match starts a new rule or a new
// route.
func fuzzRoutes(spec []byte) []*meshv1.Route {
	var routes []*meshv1.Route
	for i := 0; i+4 <= len(spec) && i < 4*64; i += 4 {
		b := spec[i : i+4]
		m := &meshv1.RouteMatch{
			Path: &meshv1.PathMatch{
				Type:  meshv1.PathMatchType(1 + b[0]&1),
				Value: fuzzPaths[int(b[0]>>1)%len(fuzzPaths)],
			},
			Method: fuzzMethods[int(b[1])%len(fuzzMethods)],
		}
		for k, name := range fuzzHeaders {
			if b[2]&(1<<k) != 0 {
				m.Headers = append(m.Headers, header(name, fuzzValues[int(b[2]>>(3+k))%len(fuzzValues)]))
			}
		}
		switch {
		case len(routes) == 0 || b[3]%4 == 0:
			routes = append(routes, &meshv1.Route{Namespace: "shop", Name: string(rune('a' + len(routes)))})
			fallthrough
		case b[3]%4 == 1:
			r := routes[len(routes)-1]
			r.Rules = append(r.Rules, &meshv1.RouteRule{Backends: []*meshv1.RouteBackend{backend("web-v1", 80, 1)}})
		}
		r := routes[len(routes)-1]
		rule := r.Rules[len(r.Rules)-1]
		rule.Matches = append(rule.Matches, m)
	}
	return routes
}

// refMatch is Gateway API's precedence written out the slow way: of every
// match the request satisfies, the most specific, then the first in route,
// rule and match order. It returns the route and rule indexes.
func refMatch(routes []*meshv1.Route, method, path string, h http.Header) (int, int, bool) {
	type cand struct {
		route, rule int
		m           *meshv1.RouteMatch
	}
	prefixLen := func(m *meshv1.RouteMatch) int { return len(strings.TrimSuffix(m.GetPath().GetValue(), "/")) }
	isExact := func(m *meshv1.RouteMatch) bool {
		return m.GetPath().GetType() == meshv1.PathMatchType_PATH_MATCH_TYPE_EXACT
	}
	more := func(a, b *meshv1.RouteMatch) bool { // a strictly more specific than b
		switch {
		case isExact(a) != isExact(b):
			return isExact(a)
		case !isExact(a) && prefixLen(a) != prefixLen(b):
			return prefixLen(a) > prefixLen(b)
		case (a.GetMethod() != "") != (b.GetMethod() != ""):
			return a.GetMethod() != ""
		}
		return len(a.GetHeaders()) > len(b.GetHeaders())
	}
	var best *cand
	for i, r := range routes {
		for j, rule := range r.GetRules() {
			for _, m := range rule.GetMatches() {
				v := m.GetPath().GetValue()
				if isExact(m) {
					if path != v {
						continue
					}
				} else if p := strings.TrimSuffix(v, "/"); p != "" && path != p && !strings.HasPrefix(path, p+"/") {
					continue
				}
				if m.GetMethod() != "" && m.GetMethod() != method {
					continue
				}
				ok := true
				for _, hm := range m.GetHeaders() {
					vals := h.Values(hm.GetName())
					ok = ok && len(vals) > 0 && strings.Join(vals, ",") == hm.GetValue()
				}
				if ok && (best == nil || more(m, best.m)) {
					best = &cand{i, j, m}
				}
			}
		}
	}
	if best == nil {
		return 0, 0, false
	}
	return best.route, best.rule, true
}

// fuzzRequest builds a request from sel, mostly out of the pools so that
// it meets the fuzzed routes, else from the fuzzed strings: bits 0-3 pick
// the path (past the pool, path itself), bit 4 appends "/x"; bits 5-7 add
// each pooled header, bits 8-13 pick their values; bits 14-15 pick the
// method (0: method itself). name and values (split at NUL) add one more
// header, on several field lines.
func fuzzRequest(sel uint16, method, path, name, values string) (string, string, http.Header) {
	if i := int(sel & 15); i < len(fuzzPaths) {
		path = fuzzPaths[i]
	}
	if sel&16 != 0 {
		path += "/x"
	}
	h := http.Header{}
	for k, hn := range fuzzHeaders {
		if sel&(32<<k) != 0 {
			h.Add(hn, fuzzValues[int(sel>>(8+2*k)&3)%len(fuzzValues)])
		}
	}
	if m := int(sel >> 14); m > 0 {
		method = []string{"GET", "POST", "PUT"}[m-1]
	}
	if name != "" {
		for _, v := range strings.Split(values, "\x00") {
			h.Add(name, v)
		}
	}
	return method, path, h
}

// FuzzMatch checks Match against refMatch on fuzzed routes and requests.
func FuzzMatch(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, 5, 1, 0, 1, 0, 0, 9, 0}, uint16(1|1<<14), "", "", "", "")
	f.Add([]byte{3, 0, 0, 0, 4, 1, 0, 0, 6, 2, 3, 1}, uint16(2|32|1<<15), "", "", "X-B", "1\x002")
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, uint16(255), "GET", "/ab", "", "")
	f.Add([]byte{13, 1, 1, 0, 12, 0, 7, 0}, uint16(5|96), "GET", "/a/b/c", "x-a", "1,2")
	f.Fuzz(func(t *testing.T, spec []byte, sel uint16, method, path, name, values string) {
		routes := fuzzRoutes(spec)
		if len(routes) == 0 {
			return
		}
		ts, err := Compile(services(routes...))
		if err != nil {
			return // a rule over the limits, say
		}
		method, path, h := fuzzRequest(sel, method, path, name, values)
		wantRoute, wantRule, wantOK := refMatch(routes, method, path, h)
		got, ok := ts.Table(0, 80).Match(method, path, h)
		if ok != wantOK {
			t.Fatalf("Match(%s %q, %v) matched = %v, reference %v (rule %d of route %d)", method, path, h, ok, wantOK, wantRule, wantRoute)
		}
		if ok && (got.Route != routes[wantRoute].GetName() || got.Index != wantRule) {
			t.Fatalf("Match(%s %q, %v) = %s, reference: rules[%d] of route %s", method, path, h, got, wantRule, routes[wantRoute].GetName())
		}
	})
}
