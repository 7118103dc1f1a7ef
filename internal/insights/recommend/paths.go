package recommend

import (
	"sort"
	"strconv"
	"strings"
)

// DistinctValues is how many distinct values one path segment may take
// under the same parent before the segment becomes a template parameter
// although no value looks like an identifier: /posts/hello, /posts/world
// and nine more siblings become /posts/{id}. Eleven sibling names are more
// than the fixed routes of a typical API collection, and fewer than the
// values of a slug or user name seen over a learning period.
const DistinctValues = 10

// param stands for a template parameter among a path's segments; no
// request path contains it.
const param = "\x00"

// templater turns the observed paths of one workload into path templates.
type templater struct {
	// segs maps each observed path to its segments, the generalised ones
	// replaced with param.
	segs map[string][]string
}

// newTemplater learns the templates of paths, the distinct paths a
// workload was called on.
func newTemplater(paths []string) *templater {
	t := &templater{segs: make(map[string][]string, len(paths))}
	sorted := append([]string(nil), paths...)
	sort.Strings(sorted)
	maxDepth := 0
	for _, p := range sorted {
		if _, dup := t.segs[p]; dup {
			continue
		}
		segs := splitPath(p)
		for i, s := range segs {
			if looksLikeID(s) {
				segs[i] = param
			}
		}
		t.segs[p] = segs
		maxDepth = max(maxDepth, len(segs))
	}
	// Shallow positions first, so that /a/{id}/x and /a/{id}/y count as
	// siblings under the same parent at the next position.
	for i := 0; i < maxDepth; i++ {
		values := map[string]map[string]struct{}{} // parent -> literal values at i
		for _, segs := range t.segs {
			if len(segs) <= i || segs[i] == param || segs[i] == "" {
				continue
			}
			parent := strings.Join(segs[:i], "/")
			if values[parent] == nil {
				values[parent] = map[string]struct{}{}
			}
			values[parent][segs[i]] = struct{}{}
		}
		for _, segs := range t.segs {
			if len(segs) <= i || segs[i] == "" {
				continue
			}
			if len(values[strings.Join(segs[:i], "/")]) > DistinctValues {
				segs[i] = param
			}
		}
	}
	return t
}

// template returns the template of an observed path: the path itself
// when no segment was generalised.
func (t *templater) template(path string) string {
	segs, ok := t.segs[path]
	if !ok || len(segs) == 0 {
		return path
	}
	var b strings.Builder
	n := 0
	for _, s := range segs {
		b.WriteByte('/')
		if s != param {
			b.WriteString(s)
			continue
		}
		n++
		b.WriteString("{id")
		if n > 1 {
			b.WriteString(strconv.Itoa(n))
		}
		b.WriteByte('}')
	}
	return b.String()
}

// splitPath returns the segments of a path: "/a/b" is [a b], "/a/" is
// [a ""], "/" is [].
func splitPath(p string) []string {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// looksLikeID reports whether a path segment looks like an identifier: all
// digits, a UUID, or eight or more hex digits. A segment with a character
// that path entries give a meaning to ('*', '{', '}') is treated as one
// too, so that it is never read as a wildcard.
func looksLikeID(s string) bool {
	if s == "" {
		return false
	}
	if strings.ContainsAny(s, "*{}") {
		return true
	}
	if allOf(s, isDigit) {
		return true
	}
	if len(s) >= 8 && allOf(s, isHex) {
		return true
	}
	return isUUID(s)
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func allOf(s string, f func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !f(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
