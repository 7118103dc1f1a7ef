package authz

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Bounds on the size of a compiled policy, so that a document cannot make
// the proxy spend unbounded memory or time.
const (
	maxListLen    = 1024 // entries of one field
	maxEntryLen   = 1024 // bytes of one entry (paths: normalize.MaxPathLen)
	maxRules      = 1024 // rules of a policy, limits of a workload
	maxPolicies   = 10000
	maxPerRequest = 1 << 20 // requests per second of a rate limit
)

// FieldError is one invalid field of a policy.
type FieldError struct {
	// Field locates the field, JSON-style, with the names the resources
	// use: "rules[0].from[1].principals[2]".
	Field string
	// Msg says what is wrong and, where it helps, what to write instead.
	Msg string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// FieldErrors is every invalid field found, in order. Compile and
// CheckRule return it; use errors.As to reach the fields.
type FieldErrors []FieldError

func (e FieldErrors) Error() string {
	msgs := make([]string, len(e))
	for i, fe := range e {
		msgs[i] = fe.Error()
	}
	return "authz: invalid policy: " + strings.Join(msgs, "; ")
}

func (e *FieldErrors) add(field, format string, args ...any) {
	*e = append(*e, FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (e FieldErrors) errOrNil() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// quoteMsg quotes a value for a message, cut short if long.
func quoteMsg(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

func idx(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// CheckRule reports every problem of a rule: entries that do not parse,
// that could never match a request, or that contradict each other (a value
// in both a field and its Not field), and a CEL condition that does not
// compile. Field paths are relative to the rule: "from[0].principals[1]".
// Compile runs the same checks.
func CheckRule(r *Rule) FieldErrors {
	var errs FieldErrors
	compileRule("", r, &errs)
	return errs
}

// join appends a field name to a path.
func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// compileSource compiles one entry of from.
func compileSource(path string, s *Source, errs *FieldErrors) source {
	var c source
	if len(s.Principals)+len(s.NotPrincipals)+len(s.Namespaces)+len(s.NotNamespaces)+len(s.IPBlocks)+len(s.NotIPBlocks) == 0 {
		errs.add(path, "is empty, and would match every source: remove it (an empty from matches any source) or set a field")
		return c
	}
	var posP, posN []pattern
	c.principals, posP = compileStrings(join(path, "principals"), s.Principals, parsePrincipal, errs)
	c.notPrincipals, _ = compileStrings(join(path, "notPrincipals"), s.NotPrincipals, parsePrincipal, errs)
	checkConflicts(path, "principals", s.Principals, posP, &c.notPrincipals, errs)
	c.namespaces, posN = compileStrings(join(path, "namespaces"), s.Namespaces, parseNamespace, errs)
	c.notNamespaces, _ = compileStrings(join(path, "notNamespaces"), s.NotNamespaces, parseNamespace, errs)
	checkConflicts(path, "namespaces", s.Namespaces, posN, &c.notNamespaces, errs)

	// An exact principal whose namespace the namespace fields exclude can
	// never match.
	for i, p := range posP {
		if p.kind != patExact {
			continue
		}
		ns := NamespaceOf(p.s)
		if ns == "" {
			continue
		}
		if (!c.namespaces.empty() && !c.namespaces.match(ns)) || (!c.notNamespaces.empty() && c.notNamespaces.match(ns)) {
			errs.add(idx(join(path, "principals"), i), "can never match: its namespace %s is excluded by this entry's namespaces or notNamespaces", quoteMsg(ns))
		}
	}

	c.ipBlocks = compileIPBlocks(join(path, "ipBlocks"), s.IPBlocks, errs)
	c.notIPBlocks = compileIPBlocks(join(path, "notIpBlocks"), s.NotIPBlocks, errs)
	for i, b := range c.ipBlocks {
		for _, n := range c.notIPBlocks {
			if n.Bits() <= b.Bits() && n.Contains(b.Addr()) {
				errs.add(idx(join(path, "ipBlocks"), i), "can never match: notIpBlocks excludes all of %s", b)
				break
			}
		}
	}
	c.idFields = !c.principals.empty() || !c.notPrincipals.empty() || !c.namespaces.empty() || !c.notNamespaces.empty()
	c.nsFields = !c.namespaces.empty() || !c.notNamespaces.empty()
	return c
}

// compileOperation compiles one entry of to.
func compileOperation(path string, o *Operation, errs *FieldErrors) operation {
	var c operation
	if len(o.Ports)+len(o.NotPorts) == 0 && !o.hasHTTP() {
		errs.add(path, "is empty, and would match every operation: remove it (an empty to matches any operation) or set a field")
		return c
	}
	c.ports = compilePorts(join(path, "ports"), o.Ports, errs)
	c.notPorts = compilePorts(join(path, "notPorts"), o.NotPorts, errs)
	for i, p := range c.ports {
		if matchPort(c.notPorts, p) {
			errs.add(idx(join(path, "ports"), i), "can never match: %d is also in notPorts", p)
		}
	}

	c.methods = compileMethods(join(path, "methods"), o.Methods, errs)
	c.notMethods = compileMethods(join(path, "notMethods"), o.NotMethods, errs)
	for i, m := range c.methods {
		for _, n := range c.notMethods {
			if m == n {
				errs.add(idx(join(path, "methods"), i), "can never match: %s is also in notMethods", quoteMsg(m))
			}
		}
	}

	var posPaths []pattern
	c.paths, posPaths = compilePaths(join(path, "paths"), o.Paths, errs)
	c.notPaths, _ = compilePaths(join(path, "notPaths"), o.NotPaths, errs)
	for i, p := range posPaths {
		if p.kind == patTemplate {
			continue
		}
		if c.notPaths.covers(p) || (p.kind == patExact && c.notPaths.match(p.s)) {
			errs.add(idx(join(path, "paths"), i), "can never match: notPaths excludes every path it matches")
		}
	}

	var posHosts []hostPattern
	c.hosts, posHosts = compileHosts(join(path, "hosts"), o.Hosts, errs)
	c.notHosts, _ = compileHosts(join(path, "notHosts"), o.NotHosts, errs)
	for i, h := range posHosts {
		neg := &c.notHosts.name
		if h.port {
			neg = &c.notHosts.full
		}
		if neg.covers(h.p) {
			errs.add(idx(join(path, "hosts"), i), "can never match: notHosts excludes every host it matches")
		}
	}
	c.http = o.hasHTTP()
	return c
}

func checkList(path string, n int, errs *FieldErrors) bool {
	if n > maxListLen {
		errs.add(path, "has %d entries, more than %d", n, maxListLen)
		return false
	}
	return true
}

// compileStrings compiles a list of principals or namespaces, reporting
// bad entries and duplicates.
func compileStrings(path string, list []string, parse func(string) (pattern, string), errs *FieldErrors) (strSet, []pattern) {
	var s strSet
	if !checkList(path, len(list), errs) {
		return s, nil
	}
	pats := make([]pattern, len(list))
	seen := make(map[string]int, len(list))
	for i, v := range list {
		p := idx(path, i)
		if len(v) > maxEntryLen {
			errs.add(p, "is longer than %d bytes", maxEntryLen)
			continue
		}
		pat, msg := parse(v)
		if msg != "" {
			errs.add(p, "%s %s", quoteMsg(v), msg)
			continue
		}
		if j, dup := seen[v]; dup {
			errs.add(p, "duplicate entry %s (also entry %d)", quoteMsg(v), j)
			continue
		}
		seen[v] = i
		pats[i] = pat
		s.add(pat)
	}
	s.seal()
	return s, pats
}

// checkConflicts reports entries of a field that its Not field excludes.
func checkConflicts(path, field string, list []string, pats []pattern, neg *strSet, errs *FieldErrors) {
	for i, p := range pats {
		if list[i] == "" || neg.empty() {
			continue
		}
		if neg.covers(p) {
			errs.add(idx(join(path, field), i), "can never match: %s excludes every value it matches", "not"+strings.ToUpper(field[:1])+field[1:])
		}
	}
}

func compilePorts(path string, list []uint32, errs *FieldErrors) []uint16 {
	if !checkList(path, len(list), errs) || len(list) == 0 {
		return nil
	}
	out := make([]uint16, 0, len(list))
	for i, p := range list {
		if p < 1 || p > 65535 {
			errs.add(idx(path, i), "must be between 1 and 65535")
			continue
		}
		if matchPort(out, uint16(p)) {
			errs.add(idx(path, i), "duplicate port %d", p)
			continue
		}
		out = append(out, uint16(p))
	}
	return out
}

func compileMethods(path string, list []string, errs *FieldErrors) []string {
	if !checkList(path, len(list), errs) || len(list) == 0 {
		return nil
	}
	out := make([]string, 0, len(list))
	for i, m := range list {
		if len(m) > maxEntryLen {
			errs.add(idx(path, i), "is longer than %d bytes", maxEntryLen)
			continue
		}
		if msg := checkMethod(m); msg != "" {
			errs.add(idx(path, i), "%s %s", quoteMsg(m), msg)
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o == m
		}
		if dup {
			errs.add(idx(path, i), "duplicate method %s", quoteMsg(m))
			continue
		}
		out = append(out, m)
	}
	return out
}

func compilePaths(path string, list []string, errs *FieldErrors) (pathSet, []pattern) {
	var s pathSet
	if !checkList(path, len(list), errs) {
		return s, nil
	}
	pats := make([]pattern, len(list))
	seen := make(map[string]int, len(list))
	for i, v := range list {
		p := idx(path, i)
		pat, t, msg := parsePath(v)
		if msg != "" {
			errs.add(p, "%s %s", quoteMsg(v), msg)
			continue
		}
		if j, dup := seen[v]; dup {
			errs.add(p, "duplicate entry %s (also entry %d)", quoteMsg(v), j)
			continue
		}
		seen[v] = i
		pats[i] = pat
		if t != nil {
			s.templates = append(s.templates, *t)
		} else {
			s.add(pat)
		}
	}
	s.seal()
	return s, pats
}

type hostPattern struct {
	p    pattern
	port bool
}

func compileHosts(path string, list []string, errs *FieldErrors) (hostSet, []hostPattern) {
	var s hostSet
	if !checkList(path, len(list), errs) {
		return s, nil
	}
	pats := make([]hostPattern, len(list))
	seen := make(map[pattern]int, len(list))
	for i, v := range list {
		p := idx(path, i)
		if len(v) > maxEntryLen {
			errs.add(p, "is longer than %d bytes", maxEntryLen)
			continue
		}
		pat, port, msg := parseHost(v)
		if msg != "" {
			errs.add(p, "%s %s", quoteMsg(v), msg)
			continue
		}
		key := pat
		if port {
			key.s += "\x00port"
		}
		if j, dup := seen[key]; dup {
			errs.add(p, "duplicate entry %s (also entry %d; hosts are case-insensitive)", quoteMsg(v), j)
			continue
		}
		seen[key] = i
		pats[i] = hostPattern{pat, port}
		if port {
			s.full.add(pat)
		} else {
			s.name.add(pat)
		}
	}
	s.name.seal()
	s.full.seal()
	return s, pats
}

func compileIPBlocks(path string, list []string, errs *FieldErrors) []netip.Prefix {
	if !checkList(path, len(list), errs) || len(list) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(list))
	for i, v := range list {
		b, msg := parseIPBlock(v)
		if msg != "" {
			errs.add(idx(path, i), "%s %s", quoteMsg(v), msg)
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o == b
		}
		if dup {
			errs.add(idx(path, i), "duplicate block %s", b)
			continue
		}
		out = append(out, b)
	}
	return out
}

// compileRule compiles a rule, reporting its problems under path.
func compileRule(path string, r *Rule, errs *FieldErrors) rule {
	var c rule
	if checkList(join(path, "from"), len(r.From), errs) {
		c.from = make([]source, len(r.From))
		for i := range r.From {
			c.from[i] = compileSource(idx(join(path, "from"), i), &r.From[i], errs)
		}
	}
	if checkList(join(path, "to"), len(r.To), errs) {
		c.to = make([]operation, len(r.To))
		for i := range r.To {
			c.to[i] = compileOperation(idx(join(path, "to"), i), &r.To[i], errs)
		}
	}
	if r.When != "" {
		cond, msg := compileCondition(r.When)
		if msg != "" {
			errs.add(join(path, "when"), "%s", msg)
		}
		c.cond = cond
	}
	return c
}
