// Package route is how a proxy routes the app's HTTP requests by the routes
// attached to the service they address (Gateway API HTTPRoutes, compiled by
// the controller into meshv1.Route): Compile turns a configuration's
// services into one Table per service port that has routes; Table.Match
// finds the rule of a request with Gateway API's precedence, without
// allocating; Rule.Pick chooses a backend by weight; the rule's and the
// backend's header modifiers change the request.
//
// It depends on the standard library and the control-plane protocol (with
// what that depends on) only, so that the proxy links it without pulling
// anything in; a test enforces it. It holds no state that changes: a new
// configuration is a new Compile, and tables are safe for concurrent use.
package route

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// MaxWeight is the largest weight of a backend.
const MaxWeight = 1_000_000

// Bounds of a rule's idle timeout, as the controller validates the
// annotation that sets it.
const (
	MinIdleTimeout = time.Second
	MaxIdleTimeout = 24 * time.Hour
)

// Limits on what one route may hold, as the controller's: a route larger
// than this comes from a broken controller.
const (
	maxRules    = 16
	maxMatches  = 128
	maxBackends = 16
	maxHeaders  = 16
)

// ErrInvalid is wrapped by every error of Compile: the configuration's
// routes cannot be applied as written, and the proxy must not guess.
var ErrInvalid = errors.New("route: invalid route")

// Tables are the routing tables of a configuration's services.
type Tables struct {
	tables map[tableKey]*Table
}

type tableKey struct {
	service int
	port    uint32
}

// Table returns the table of requests to the port (ServicePort.port) of
// the service at index service of the services given to Compile, or nil
// when no route applies to that port: its requests then go to the
// service's own endpoints.
func (ts *Tables) Table(service int, port uint32) *Table {
	if ts == nil {
		return nil
	}
	return ts.tables[tableKey{service, port}]
}

// Table routes the requests to one port of one service: the rules of every
// route that applies to it, ordered by precedence. It is safe for
// concurrent use.
type Table struct {
	entries []entry
}

// entry is one RouteMatch, with the rule it selects.
type entry struct {
	exact   bool
	path    string // exact path, or prefix without its trailing "/"
	method  string // "" for any
	headers []headerMatch
	rule    *Rule
}

type headerMatch struct {
	key   string // canonical name
	value string
}

// Rule is one rule of a route: where the requests it matches go.
type Rule struct {
	// Namespace and Route name the HTTPRoute; Name is the rule's name in it
	// ("" if it has none) and Index its position. They are for logs and
	// metrics.
	Namespace, Route, Name string
	Index                  int
	// Backends, as the controller listed them, weight 0 included.
	Backends []Backend
	// RequestTimeout bounds the whole request, every attempt included;
	// BackendRequestTimeout one attempt. Zero means no limit.
	RequestTimeout, BackendRequestTimeout time.Duration
	// IdleTimeout, when not zero, replaces the idle timeout of the service
	// the app addressed for the requests of the rule (gRPC included):
	// from MinIdleTimeout to MaxIdleTimeout.
	IdleTimeout time.Duration

	headers modifier
	cum     []uint64 // cumulative weights of Backends
}

// Backend is a service port a rule may send a request to.
type Backend struct {
	// Service is the backend service, an entry of the services given to
	// Compile, at index ServiceIndex; Port is the port of it the requests
	// go to (its TargetPort is the app's port). Both are nil, and
	// ServiceIndex -1, when the backend is invalid.
	Service      *meshv1.Service
	ServiceIndex int
	Port         *meshv1.ServicePort
	// Weight is the backend's share of its rule's requests.
	Weight uint32
	// Problem says why the backend is invalid ("" when it is valid): its
	// service is not in the configuration, or has no such port, or the port
	// is TCP. A request sent to an invalid backend is answered 500.
	Problem string

	headers modifier
}

// Valid reports whether requests can be sent to b.
func (b *Backend) Valid() bool { return b.Problem == "" }

// Compile compiles the routes of services (a ProxyConfig's) into tables.
// A route applies to the ports it lists (every port of its service when it
// lists none); a backend is resolved to the service of services it names.
// An error, wrapping ErrInvalid, means a route that cannot be applied as
// written (an unknown match type, a path that does not start with "/", a
// header the proxy must not modify, ...): the proxy should refuse the whole
// configuration rather than route differently from what was meant.
func Compile(services []*meshv1.Service) (*Tables, error) {
	ts := &Tables{tables: make(map[tableKey]*Table)}
	index := make(map[[2]string]int, len(services))
	for i, s := range services {
		k := [2]string{s.GetNamespace(), s.GetName()}
		if _, dup := index[k]; !dup {
			index[k] = i
		}
	}
	for i, s := range services {
		if len(s.GetRoutes()) == 0 {
			continue
		}
		var rules [][]*Rule // by route
		for j, r := range s.GetRoutes() {
			rs, err := compileRoute(r, services, index)
			if err != nil {
				return nil, fmt.Errorf("%w: service %s.%s: route %s/%s (routes[%d]): %w",
					ErrInvalid, s.GetName(), s.GetNamespace(), r.GetNamespace(), r.GetName(), j, err)
			}
			rules = append(rules, rs)
		}
		for _, p := range s.GetPorts() {
			var t Table
			for j, r := range s.GetRoutes() {
				if len(r.GetPorts()) > 0 && !slices.Contains(r.GetPorts(), p.GetPort()) {
					continue
				}
				for k, rule := range r.GetRules() {
					for _, m := range rule.GetMatches() {
						t.entries = append(t.entries, newEntry(m, rules[j][k]))
					}
				}
			}
			if t.entries == nil {
				continue
			}
			// Stable: ties keep the order of routes, rules and matches.
			slices.SortStableFunc(t.entries, precedence)
			ts.tables[tableKey{i, p.GetPort()}] = &t
		}
	}
	return ts, nil
}

// precedence orders a before b when a is the more specific match, as
// Gateway API says: an exact path, else the longer prefix; then a method;
// then more headers.
func precedence(a, b entry) int {
	if a.exact != b.exact {
		if a.exact {
			return -1
		}
		return 1
	}
	if !a.exact {
		if c := cmp.Compare(len(b.path), len(a.path)); c != 0 {
			return c
		}
	}
	if (a.method != "") != (b.method != "") {
		if a.method != "" {
			return -1
		}
		return 1
	}
	return cmp.Compare(len(b.headers), len(a.headers))
}

func newEntry(m *meshv1.RouteMatch, rule *Rule) entry {
	e := entry{
		exact:  m.GetPath().GetType() == meshv1.PathMatchType_PATH_MATCH_TYPE_EXACT,
		path:   m.GetPath().GetValue(),
		method: m.GetMethod(),
		rule:   rule,
	}
	if !e.exact {
		e.path = strings.TrimSuffix(e.path, "/")
	}
	for _, h := range m.GetHeaders() {
		e.headers = append(e.headers, headerMatch{key: textproto.CanonicalMIMEHeaderKey(h.GetName()), value: h.GetValue()})
	}
	return e
}

func compileRoute(r *meshv1.Route, services []*meshv1.Service, index map[[2]string]int) ([]*Rule, error) {
	switch n := len(r.GetRules()); {
	case n == 0:
		return nil, errors.New("no rules")
	case n > maxRules:
		return nil, fmt.Errorf("%d rules, at most %d", n, maxRules)
	}
	for _, p := range r.GetPorts() {
		if p == 0 || p > 65535 {
			return nil, fmt.Errorf("port %d out of range", p)
		}
	}
	matches := 0
	out := make([]*Rule, 0, len(r.GetRules()))
	for i, mr := range r.GetRules() {
		rule, err := compileRule(mr, services, index)
		if err != nil {
			return nil, fmt.Errorf("rules[%d]: %w", i, err)
		}
		rule.Namespace, rule.Route, rule.Index = r.GetNamespace(), r.GetName(), i
		matches += len(mr.GetMatches())
		out = append(out, rule)
	}
	if matches > maxMatches {
		return nil, fmt.Errorf("%d matches, at most %d", matches, maxMatches)
	}
	return out, nil
}

func compileRule(mr *meshv1.RouteRule, services []*meshv1.Service, index map[[2]string]int) (*Rule, error) {
	rule := &Rule{Name: mr.GetName()}
	if len(mr.GetMatches()) == 0 {
		return nil, errors.New("no matches")
	}
	for i, m := range mr.GetMatches() {
		if err := checkMatch(m); err != nil {
			return nil, fmt.Errorf("matches[%d]: %w", i, err)
		}
	}
	var err error
	if rule.headers, err = compileModifier(mr.GetRequestHeaders()); err != nil {
		return nil, fmt.Errorf("request_headers: %w", err)
	}
	if rule.RequestTimeout, err = duration(mr.GetRequestTimeout()); err != nil {
		return nil, fmt.Errorf("request_timeout: %w", err)
	}
	if rule.BackendRequestTimeout, err = duration(mr.GetBackendRequestTimeout()); err != nil {
		return nil, fmt.Errorf("backend_request_timeout: %w", err)
	}
	if d := mr.GetIdleTimeout(); d != nil {
		if rule.IdleTimeout, err = duration(d); err != nil {
			return nil, fmt.Errorf("idle_timeout: %w", err)
		}
		if rule.IdleTimeout < MinIdleTimeout || rule.IdleTimeout > MaxIdleTimeout {
			return nil, fmt.Errorf("idle_timeout: %v is not within 1s..24h", rule.IdleTimeout)
		}
	}
	if n := len(mr.GetBackends()); n > maxBackends {
		return nil, fmt.Errorf("%d backends, at most %d", n, maxBackends)
	}
	var total uint64
	for i, mb := range mr.GetBackends() {
		b, err := compileBackend(mb, services, index)
		if err != nil {
			return nil, fmt.Errorf("backends[%d]: %w", i, err)
		}
		total += uint64(b.Weight)
		rule.Backends = append(rule.Backends, b)
		rule.cum = append(rule.cum, total)
	}
	return rule, nil
}

// duration converts a protobuf duration; nil and zero are no limit.
func duration(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("negative duration %v", v)
	}
	return v, nil
}

func checkMatch(m *meshv1.RouteMatch) error {
	p := m.GetPath()
	switch p.GetType() {
	case meshv1.PathMatchType_PATH_MATCH_TYPE_EXACT, meshv1.PathMatchType_PATH_MATCH_TYPE_PREFIX:
	default:
		return fmt.Errorf("path: unsupported type %v", p.GetType())
	}
	if !strings.HasPrefix(p.GetValue(), "/") {
		return fmt.Errorf("path: %q does not start with \"/\"", p.GetValue())
	}
	if m.GetMethod() != "" && !isToken(m.GetMethod()) {
		return fmt.Errorf("method: %q is not a method", m.GetMethod())
	}
	if n := len(m.GetHeaders()); n > maxHeaders {
		return fmt.Errorf("%d header matches, at most %d", n, maxHeaders)
	}
	seen := make(map[string]bool, len(m.GetHeaders()))
	for i, h := range m.GetHeaders() {
		if h.GetType() != meshv1.HeaderMatchType_HEADER_MATCH_TYPE_EXACT {
			return fmt.Errorf("headers[%d]: unsupported type %v", i, h.GetType())
		}
		if !isToken(h.GetName()) {
			return fmt.Errorf("headers[%d]: %q is not a header name", i, h.GetName())
		}
		key := textproto.CanonicalMIMEHeaderKey(h.GetName())
		if key == "Host" {
			return fmt.Errorf("headers[%d]: the Host cannot be matched", i)
		}
		if seen[key] {
			return fmt.Errorf("headers[%d]: %q is matched twice", i, h.GetName())
		}
		seen[key] = true
	}
	return nil
}

func compileBackend(mb *meshv1.RouteBackend, services []*meshv1.Service, index map[[2]string]int) (Backend, error) {
	b := Backend{ServiceIndex: -1, Weight: mb.GetWeight()}
	if b.Weight > MaxWeight {
		return b, fmt.Errorf("weight %d is more than %d", b.Weight, MaxWeight)
	}
	if mb.GetService() == "" || mb.GetNamespace() == "" {
		return b, errors.New("service and namespace are required")
	}
	if mb.GetPort() == 0 || mb.GetPort() > 65535 {
		return b, fmt.Errorf("port %d out of range", mb.GetPort())
	}
	var err error
	if b.headers, err = compileModifier(mb.GetRequestHeaders()); err != nil {
		return b, fmt.Errorf("request_headers: %w", err)
	}
	name := mb.GetService() + "." + mb.GetNamespace()
	i, ok := index[[2]string{mb.GetNamespace(), mb.GetService()}]
	if !ok {
		b.Problem = "service " + name + " is not in the configuration"
		return b, nil
	}
	s := services[i]
	pi := slices.IndexFunc(s.GetPorts(), func(p *meshv1.ServicePort) bool { return p.GetPort() == mb.GetPort() })
	switch {
	case pi < 0:
		b.Problem = fmt.Sprintf("service %s has no port %d", name, mb.GetPort())
	case s.GetPorts()[pi].GetProtocol() == meshv1.Protocol_PROTOCOL_TCP:
		b.Problem = fmt.Sprintf("port %d of service %s is TCP", mb.GetPort(), name)
	default:
		b.Service, b.ServiceIndex, b.Port = s, i, s.GetPorts()[pi]
	}
	return b, nil
}

// Match returns the rule of a request to the table's service port: that of
// the most specific match the request satisfies (Gateway API precedence:
// an exact path, else the longest prefix; then a method; then the most
// header matches; then the earliest route, rule and match). It reports
// false when no rule matches: the request is then answered 404.
//
// path is the request's path as on the wire, without the query
// (r.URL.EscapedPath()); method is compared exactly. Header names are
// looked up in their canonical form, as http.Header.Get does: h is the
// request's header as net/http (and the proxy's servers) build it. A
// header with several values matches a value equal to them joined by ",".
// Match does not allocate.
func (t *Table) Match(method, path string, h http.Header) (*Rule, bool) {
	for i := range t.entries {
		e := &t.entries[i]
		if e.exact {
			if path != e.path {
				continue
			}
		} else if !hasPathPrefix(path, e.path) {
			continue
		}
		if e.method != "" && e.method != method {
			continue
		}
		if !headersMatch(e.headers, h) {
			continue
		}
		return e.rule, true
	}
	return nil, false
}

// hasPathPrefix reports whether path starts with prefix (which has no
// trailing "/") element by element: "/a" is a prefix of "/a", "/a/" and
// "/a/b", not of "/ab". The empty prefix (from "/") is a prefix of every
// path.
func hasPathPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || prefix == "" || path[len(prefix)] == '/'
}

func headersMatch(want []headerMatch, h http.Header) bool {
	for i := range want {
		if !joinedEqual(h[want[i].key], want[i].value) {
			return false
		}
	}
	return true
}

// joinedEqual reports whether the values, joined by ",", are want.
func joinedEqual(values []string, want string) bool {
	switch len(values) {
	case 0:
		return false
	case 1:
		return values[0] == want
	}
	rest := want
	for i, v := range values {
		if i > 0 {
			if rest == "" || rest[0] != ',' {
				return false
			}
			rest = rest[1:]
		}
		if !strings.HasPrefix(rest, v) {
			return false
		}
		rest = rest[len(v):]
	}
	return rest == ""
}

// Pick returns the backend of the rule that a request goes to, given a
// random number (math/rand/v2.Uint64()): each backend with a probability of
// its weight over the sum of the weights; a backend of weight 0 is never
// picked. It returns nil when the rule has no backend of nonzero weight:
// the request is then answered 500. A backend that is not Valid is
// answered 500 too.
func (r *Rule) Pick(rnd uint64) *Backend {
	if len(r.cum) == 0 {
		return nil
	}
	total := r.cum[len(r.cum)-1]
	if total == 0 {
		return nil
	}
	// hi is uniform in [0, total): the high word of rnd*total.
	hi, _ := bits.Mul64(rnd, total)
	for i, c := range r.cum {
		if hi < c {
			return &r.Backends[i]
		}
	}
	return &r.Backends[len(r.Backends)-1] // not reached: hi < total
}

// ModifyRequest applies the rule's RequestHeaderModifier to h, the header
// of the request to send: apply it before the backend's, and before the
// proxy sets its own headers.
func (r *Rule) ModifyRequest(h http.Header) { r.headers.apply(h) }

// ModifyRequest applies the backend's RequestHeaderModifier to h, after
// the rule's.
func (b *Backend) ModifyRequest(h http.Header) { b.headers.apply(h) }

// modifier is a compiled HeaderModifier, with canonical names.
type modifier struct {
	set, add []field
	remove   []string
}

type field struct{ key, value string }

func (m *modifier) apply(h http.Header) {
	for _, k := range m.remove {
		delete(h, k)
	}
	for _, f := range m.set {
		h[f.key] = []string{f.value}
	}
	for _, f := range m.add {
		h[f.key] = append(h[f.key], f.value)
	}
}

func compileModifier(hm *meshv1.HeaderModifier) (modifier, error) {
	var m modifier
	if hm == nil {
		return m, nil
	}
	if len(hm.GetSet()) > maxHeaders || len(hm.GetAdd()) > maxHeaders || len(hm.GetRemove()) > maxHeaders {
		return m, fmt.Errorf("more than %d headers in set, add or remove", maxHeaders)
	}
	seen := make(map[string]bool)
	use := func(name string) (string, error) {
		if !isToken(name) {
			return "", fmt.Errorf("%q is not a header name", name)
		}
		if why := Reserved(name); why != "" {
			return "", fmt.Errorf("%q %s", name, why)
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		if seen[key] {
			return "", fmt.Errorf("%q is changed twice", name)
		}
		seen[key] = true
		return key, nil
	}
	for _, list := range []struct {
		in  []*meshv1.Header
		out *[]field
	}{{hm.GetSet(), &m.set}, {hm.GetAdd(), &m.add}} {
		for _, f := range list.in {
			key, err := use(f.GetName())
			if err != nil {
				return m, err
			}
			if !validValue(f.GetValue()) {
				return m, fmt.Errorf("header %s: invalid value %q", f.GetName(), f.GetValue())
			}
			*list.out = append(*list.out, field{key: key, value: f.GetValue()})
		}
	}
	for _, name := range hm.GetRemove() {
		key, err := use(name)
		if err != nil {
			return m, err
		}
		m.remove = append(m.remove, key)
	}
	return m, nil
}

// Reserved returns why a route may not modify the request header called
// name, or "" if it may, as api/httproute.ReservedHeader says: Rampart's
// own headers (and lookalikes with "_"), hop-by-hop headers,
// Content-Length and Host.
func Reserved(name string) string {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	switch {
	case strings.HasPrefix(n, "rampart-"):
		return "is Rampart's own: the proxies set it"
	case n == "host":
		return "is not supported: the Host is not a header field in HTTP/2"
	case n == "content-length":
		return "belongs to the message: the proxy sets it"
	case n == "forwarded" || strings.HasPrefix(n, "x-forwarded-") || n == "proxy-authorization" || n == "proxy-authenticate":
		return "is removed by the proxies on every hop: setting it would have no effect"
	}
	switch n {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade":
		return "is a hop-by-hop header: it belongs to each connection"
	}
	return ""
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue reports whether v may be a header field's value: not empty,
// no control characters but tab, no leading or trailing space.
func validValue(v string) bool {
	if v == "" || v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// String names the rule for logs: "namespace/route rule name" or
// "namespace/route rules[i]".
func (r *Rule) String() string {
	if r.Name != "" {
		return r.Namespace + "/" + r.Route + " rule " + r.Name
	}
	return r.Namespace + "/" + r.Route + " rules[" + strconv.Itoa(r.Index) + "]"
}
