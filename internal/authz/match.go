package authz

import (
	"net/netip"
	"strings"

	"github.com/rampart-mesh/rampart/internal/authz/normalize"
)

// This file compiles the patterns of rules into matchers and matches them
// without allocating.

// mapThreshold is the number of exact entries from which a strSet looks
// them up in a map rather than comparing them one by one.
const mapThreshold = 8

// strSet matches a string against exact values, prefixes and suffixes.
type strSet struct {
	any      bool
	exact    []string
	exactMap map[string]struct{}
	prefix   []string
	suffix   []string
}

func (s *strSet) empty() bool {
	return !s.any && len(s.exact) == 0 && len(s.prefix) == 0 && len(s.suffix) == 0
}

func (s *strSet) add(p pattern) {
	switch p.kind {
	case patAny:
		s.any = true
	case patExact:
		s.exact = append(s.exact, p.s)
	case patPrefix:
		s.prefix = append(s.prefix, p.s)
	case patSuffix:
		s.suffix = append(s.suffix, p.s)
	}
}

// seal builds the map for a long list of exact values.
func (s *strSet) seal() {
	if len(s.exact) >= mapThreshold {
		s.exactMap = make(map[string]struct{}, len(s.exact))
		for _, e := range s.exact {
			s.exactMap[e] = struct{}{}
		}
	}
}

func (s *strSet) match(v string) bool {
	if s.any {
		return true
	}
	if s.exactMap != nil {
		if _, ok := s.exactMap[v]; ok {
			return true
		}
	} else {
		for _, e := range s.exact {
			if v == e {
				return true
			}
		}
	}
	for _, p := range s.prefix {
		if strings.HasPrefix(v, p) {
			return true
		}
	}
	for _, p := range s.suffix {
		if strings.HasSuffix(v, p) {
			return true
		}
	}
	return false
}

// covers reports whether every value that p matches is matched by s, as
// far as a cheap check can tell (it may miss some cases, never the
// reverse).
func (s *strSet) covers(p pattern) bool {
	if s.any {
		return true
	}
	switch p.kind {
	case patExact:
		return s.match(p.s)
	case patPrefix:
		for _, q := range s.prefix {
			if strings.HasPrefix(p.s, q) {
				return true
			}
		}
	case patSuffix:
		for _, q := range s.suffix {
			if strings.HasSuffix(p.s, q) {
				return true
			}
		}
	}
	return false
}

type patKind uint8

const (
	patExact patKind = iota
	patPrefix
	patSuffix
	patAny
	patTemplate
)

// pattern is a parsed entry of a rule's list. For prefix and suffix
// patterns, s is the part without the '*'.
type pattern struct {
	kind patKind
	s    string
}

// parseWildcard parses exact, "prefix*", "*suffix" and "*". It returns a
// message if the entry has a '*' anywhere else.
func parseWildcard(v string) (pattern, string) {
	switch n := strings.Count(v, "*"); {
	case v == "":
		return pattern{}, "must not be empty"
	case n == 0:
		return pattern{patExact, v}, ""
	case v == "*":
		return pattern{patAny, ""}, ""
	case n == 1 && v[0] == '*':
		return pattern{patSuffix, v[1:]}, ""
	case n == 1 && v[len(v)-1] == '*':
		return pattern{patPrefix, v[:len(v)-1]}, ""
	}
	return pattern{}, "'*' may only be the first or the last character (a prefix* or *suffix match), or the whole entry"
}

// pathSet matches normalized paths.
type pathSet struct {
	strSet
	templates []template
}

func (s *pathSet) empty() bool { return s.strSet.empty() && len(s.templates) == 0 }

func (s *pathSet) match(p string) bool {
	if s.strSet.match(p) {
		return true
	}
	for i := range s.templates {
		if s.templates[i].match(p) {
			return true
		}
	}
	return false
}

// template is a path template: segments that are literal or "{name}" (any
// one segment), ending with "**" (any rest) or not.
type template struct {
	segs []tmplSeg
	rest bool // ends with "/**"
}

type tmplSeg struct {
	lit   string
	param bool
}

func (t *template) match(p string) bool {
	rest := p // "/seg/seg..."
	for _, seg := range t.segs {
		if len(rest) == 0 || rest[0] != '/' {
			return false
		}
		rest = rest[1:]
		end := strings.IndexByte(rest, '/')
		if end < 0 {
			end = len(rest)
		}
		s := rest[:end]
		if seg.param {
			if s == "" {
				return false
			}
		} else if s != seg.lit {
			return false
		}
		rest = rest[end:]
	}
	if t.rest {
		return rest == "" || rest[0] == '/'
	}
	return rest == ""
}

// parsePath parses an entry of paths or notPaths. Literal parts must be in
// normalized form: a request is matched after normalization, so an entry
// that normalization would change could never match.
func parsePath(v string) (pattern, *template, string) {
	if v == "" {
		return pattern{}, nil, "must not be empty"
	}
	if strings.ContainsAny(v, "{}") || strings.Contains(v, "**") {
		t, msg := parseTemplate(v)
		return pattern{kind: patTemplate}, t, msg
	}
	p, msg := parseWildcard(v)
	if msg != "" {
		return p, nil, msg + "; to match one segment in the middle of a path, write a template such as /users/{id}/orders"
	}
	// Check the literal part as part of a whole path: "/x" before a
	// suffix, "x" after a prefix (so "/a/.*" is fine: "/a/.x" is normal).
	var probe string
	switch p.kind {
	case patAny:
		return p, nil, ""
	case patExact:
		probe = p.s
	case patPrefix:
		probe = p.s + "x"
	case patSuffix:
		probe = "/x" + p.s
	}
	if p.kind != patSuffix && !strings.HasPrefix(probe, "/") {
		return p, nil, "must start with '/' (or be a *suffix or *)"
	}
	if n, err := normalize.Path(probe); err != nil {
		return p, nil, "can never match a request: " + strings.TrimPrefix(err.Error(), "normalize: ")
	} else if n != probe {
		want := n
		switch p.kind {
		case patPrefix:
			want = strings.TrimSuffix(n, "x") + "*"
		case patSuffix:
			want = "*" + strings.TrimPrefix(n, "/x")
		}
		return p, nil, "is not in normalized form, and requests are matched after normalization: write " + quoteMsg(want)
	}
	return p, nil, ""
}

func parseTemplate(v string) (*template, string) {
	if !strings.HasPrefix(v, "/") {
		return nil, "a path template must start with '/'"
	}
	t := &template{}
	segs := strings.Split(v[1:], "/")
	var probe strings.Builder
	for i, s := range segs {
		switch {
		case s == "**":
			if i != len(segs)-1 {
				return nil, "'**' may only be the last segment of a template"
			}
			t.rest = true
			continue
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			name := s[1 : len(s)-1]
			if name == "" || strings.ContainsAny(name, "{}*/") {
				return nil, "a template parameter is a whole segment {name}"
			}
			t.segs = append(t.segs, tmplSeg{param: true})
			probe.WriteString("/x")
			continue
		case strings.ContainsAny(s, "{}*"):
			return nil, "a template segment is a literal, a whole {name} or a final **"
		case s == "" && !(i == len(segs)-1 && i > 0):
			return nil, "a template must not have empty segments"
		}
		t.segs = append(t.segs, tmplSeg{lit: s})
		probe.WriteString("/" + s)
	}
	if p := probe.String(); p != "" {
		if n, err := normalize.Path(p); err != nil {
			return nil, "can never match a request: " + strings.TrimPrefix(err.Error(), "normalize: ")
		} else if n != p {
			return nil, "has segments that are not in normalized form, and requests are matched after normalization"
		}
	}
	return t, ""
}

// hostSet matches normalized hosts: entries without a port against the
// host without its port, entries with one against host:port.
type hostSet struct {
	name strSet // entries without a port
	full strSet // entries with a port
}

func (s *hostSet) empty() bool { return s.name.empty() && s.full.empty() }

func (s *hostSet) match(h string) bool {
	return s.name.match(normalize.StripPort(h)) || s.full.match(h)
}

// parseHost parses an entry of hosts or notHosts into its pattern and
// whether it has a port.
func parseHost(v string) (pattern, bool, string) {
	if v == "*" {
		return pattern{patAny, ""}, false, ""
	}
	p, msg := parseWildcard(v)
	if msg != "" {
		return p, false, msg
	}
	// Check the literal part as a host; "x" stands for the wildcard.
	probe := p.s
	switch p.kind {
	case patPrefix:
		probe += "x"
	case patSuffix:
		probe = "x" + probe
	}
	if strings.HasPrefix(probe, ":") || strings.HasSuffix(probe, ":") {
		return p, false, "must have a host before its port"
	}
	n, err := normalize.Host(probe)
	if err != nil {
		return p, false, "is not a host name, IP address or host:port: " + strings.TrimPrefix(err.Error(), "normalize: ")
	}
	_, port := normalize.SplitHostPort(n) // a prefix* entry has none
	// Hosts match case-insensitively: keep the normalized form.
	switch p.kind {
	case patExact:
		p.s = n
	case patPrefix:
		p.s = strings.TrimSuffix(n, "x")
	case patSuffix:
		p.s = strings.TrimPrefix(n, "x")
	}
	return p, port != "", ""
}

// parsePrincipal parses an entry of principals or notPrincipals. Entries
// are matched against the whole SPIFFE ID, so a prefix must start with
// "spiffe://": a shorter one would match more than its author meant.
func parsePrincipal(v string) (pattern, string) {
	p, msg := parseWildcard(v)
	if msg != "" {
		return p, msg
	}
	for i := 0; i < len(p.s); i++ {
		c := p.s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._:/", c) >= 0) {
			return p, "holds a character that a SPIFFE ID cannot have"
		}
	}
	switch p.kind {
	case patExact:
		if msg := checkSPIFFEID(p.s); msg != "" {
			return p, msg
		}
	case patPrefix:
		if !strings.HasPrefix(p.s, "spiffe://") || len(p.s) == len("spiffe://") {
			return p, "is matched against the whole SPIFFE ID: a prefix must start with spiffe://<trust-domain>, as in spiffe://example.org/ns/shop/*"
		}
	case patSuffix:
		if p.s == "" {
			return p, "must not be empty"
		}
	}
	return p, ""
}

// checkSPIFFEID checks that id is a SPIFFE ID: spiffe://, a trust domain
// in lower case, and a path of non-empty segments.
func checkSPIFFEID(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "is matched against the whole SPIFFE ID: write spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
	}
	td, path, _ := strings.Cut(rest, "/")
	if td == "" {
		return "has no trust domain"
	}
	for i := 0; i < len(td); i++ {
		if c := td[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "has a trust domain that is not lower-case letters, digits, '-', '.' or '_'"
		}
	}
	if path == "" {
		return "" // a trust domain's own ID
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "has an empty, '.' or '..' path segment"
		}
		if strings.IndexByte(seg, ':') >= 0 {
			return "has ':' in its path"
		}
	}
	return ""
}

// parseNamespace parses an entry of namespaces or notNamespaces.
func parseNamespace(v string) (pattern, string) {
	p, msg := parseWildcard(v)
	if msg != "" {
		return p, msg
	}
	for i := 0; i < len(p.s); i++ {
		if c := p.s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return p, "namespaces are lower-case letters, digits and '-'"
		}
	}
	if p.kind == patExact && (len(p.s) > 63 || p.s[0] == '-' || p.s[len(p.s)-1] == '-') {
		return p, "is not a namespace name: 1 to 63 lower-case letters, digits or '-', starting and ending with a letter or digit"
	}
	return p, ""
}

// checkMethod checks an HTTP method: a token, and (since methods are
// case-sensitive and a lower-case entry would silently never match the
// standard methods) in upper case.
func checkMethod(m string) string {
	if m == "" {
		return "must not be empty"
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		switch {
		case 'a' <= c && c <= 'z':
			return "methods are case-sensitive and written in upper case: write " + quoteMsg(strings.ToUpper(m))
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("!#$%&'+-.^_`|~", c) >= 0:
		case c == '*':
			return "is not an HTTP method: to match any method, leave methods out"
		default:
			return "is not an HTTP method (a token of letters, digits and !#$%&'+-.^_`|~)"
		}
	}
	return ""
}

// parseIPBlock parses an entry of ipBlocks or notIpBlocks: a CIDR block
// or a single address.
func parseIPBlock(v string) (netip.Prefix, string) {
	if !strings.Contains(v, "/") {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, "is not an IP address or CIDR block (10.0.0.0/8, fd00::/8)"
		}
		if a.Is4In6() {
			return netip.Prefix{}, "is an IPv4-mapped IPv6 address: write the IPv4 address " + a.Unmap().String()
		}
		return netip.PrefixFrom(a, a.BitLen()), ""
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return p, "is not an IP address or CIDR block (10.0.0.0/8, fd00::/8)"
	}
	if p.Addr().Is4In6() {
		return p, "is an IPv4-mapped IPv6 block: write it in IPv4 form"
	}
	if p.Masked() != p {
		return p, "has bits set after the prefix length: did you mean " + p.Masked().String() + "?"
	}
	return p, ""
}

func matchIP(blocks []netip.Prefix, a netip.Addr) bool {
	for _, b := range blocks {
		if b.Contains(a) {
			return true
		}
	}
	return false
}

func matchPort(ports []uint16, p uint16) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}
