// Package normalize puts the parts of an HTTP request that authorization
// rules match (the path and the host) into one canonical form, and rejects
// the requests that cannot be put into one safely. The proxy normalizes
// before it authorizes and forwards the normalized form, so that the app
// sees exactly what the rules saw.
//
// The rules close the ways of slipping past path rules that other meshes'
// advisories describe; docs/authorization.md lists them. Every function is
// pure and safe for concurrent use. The proxy links this package: it
// depends on the standard library only.
package normalize

import (
	"errors"
	"strings"
)

// MaxPathLen bounds the length of a path, before normalization.
const MaxPathLen = 8192

// Reasons a path is rejected. Each error is a fixed value, so that
// rejecting a request allocates nothing; callers answer 400 to any of them
// and need not tell them apart.
var (
	errEmptyPath        = errors.New("normalize: empty path")
	errPathTooLong      = errors.New("normalize: path longer than 8192 bytes")
	errNotAbsolute      = errors.New("normalize: path does not start with /")
	errQuery            = errors.New("normalize: path holds '?': split the query off first")
	errFragment         = errors.New("normalize: path holds '#': a fragment is never sent in a request")
	errBackslash        = errors.New(`normalize: path holds a backslash, which some servers read as '/'`)
	errSemicolon        = errors.New("normalize: path holds ';': path parameters are read differently by different servers")
	errInvalidChar      = errors.New("normalize: path holds a character that must be percent-encoded")
	errBadEscape        = errors.New("normalize: path holds '%' not followed by two hex digits")
	errEncodedSlash     = errors.New("normalize: path holds an encoded '/' (%2F), which some servers decode")
	errEncodedBackslash = errors.New(`normalize: path holds an encoded backslash (%5C), which some servers decode to '/'`)
	errEncodedControl   = errors.New("normalize: path holds an encoded control character")
	errEncodedDot       = errors.New("normalize: path holds a '.' or '..' segment written with encoded dots")
	errDoubleEncoded    = errors.New("normalize: path holds an encoded '%' followed by two hex digits (double encoding), which servers that decode twice read differently")
	errAboveRoot        = errors.New("normalize: path climbs above the root with '..'")
)

// Path returns the normalized form of p, the path of a request target
// without its query:
//
//   - percent-encoded unreserved characters (letters, digits, "-._~") are
//     decoded; every other escape is kept, with upper-case hex digits;
//   - "." and ".." segments are resolved (a ".." above the root is an
//     error), and repeated slashes are merged into one;
//   - a trailing slash is kept: "/a/" and "/a" are different paths, as
//     they are to most servers.
//
// Path rejects, rather than guesses at, what servers read in different
// ways: an encoded slash (%2F) or backslash (%5C), a backslash, a ';'
// (path parameters), a '#', dot segments written with encoded dots, encoded
// control characters (%00-%1F, %7F), double encoding (%25 followed by two
// hex digits, as in %252F), raw bytes that RFC 3986 does not
// allow in a path (controls, space, non-ASCII, `"<>[\]^{|}`), a malformed
// escape, and paths longer than MaxPathLen. Paths are case-sensitive and
// are not case-folded.
//
// A path that is already normal is returned as is, without allocating.
// Path is idempotent: Path(Path(p)) == Path(p).
func Path(p string) (string, error) {
	ok, err := checkPath(p)
	if err != nil {
		return "", err
	}
	if ok {
		return p, nil
	}
	return rebuildPath(p)
}

// IsPath reports whether p is a normalized path, one that Path returns
// unchanged. It does not allocate.
func IsPath(p string) bool {
	ok, err := checkPath(p)
	return ok && err == nil
}

// Character classes of path bytes.
const (
	clInvalid    = iota // must be encoded, or rejected with its own error
	clPchar             // allowed as is: unreserved, sub-delims but ';', ':', '@'
	clUnreserved        // pchar that an escape must not hide
)

var pathClass = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = clUnreserved
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = clUnreserved
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = clUnreserved
	}
	for _, c := range "-._~" {
		t[c] = clUnreserved
	}
	// sub-delims without ';', and ':' and '@'.
	for _, c := range "!$&'()*+,=:@" {
		t[c] = clPchar
	}
	return t
}()

// invalidCharError returns the error for a byte that is not allowed raw.
func invalidCharError(c byte) error {
	switch c {
	case '?':
		return errQuery
	case '#':
		return errFragment
	case '\\':
		return errBackslash
	case ';':
		return errSemicolon
	}
	return errInvalidChar
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// escape decodes the escape at p[i] ('%'). It returns the byte it stands
// for and whether its hex digits are upper case, or an error for an
// escape that is malformed or stands for something Path rejects.
func escape(p string, i int) (b byte, upper bool, err error) {
	if i+2 >= len(p) {
		return 0, false, errBadEscape
	}
	hi, ok1 := unhex(p[i+1])
	lo, ok2 := unhex(p[i+2])
	if !ok1 || !ok2 {
		return 0, false, errBadEscape
	}
	b = hi<<4 | lo
	switch {
	case b == '/':
		return 0, false, errEncodedSlash
	case b == '\\':
		return 0, false, errEncodedBackslash
	case b < 0x20 || b == 0x7f:
		return 0, false, errEncodedControl
	case b == '%':
		// Look at the two characters that follow as they will be after
		// decoding: "%25%41" + "0" becomes "%25A0".
		c1, j := decodedAt(p, i+3)
		c2, _ := decodedAt(p, j)
		if _, ok := unhex(c1); ok {
			if _, ok := unhex(c2); ok {
				return 0, false, errDoubleEncoded
			}
		}
	}
	upper = (p[i+1] < 'a') && (p[i+2] < 'a')
	return b, upper, nil
}

// decodedAt returns the character at p[j] as Path leaves it (an escape of
// an unreserved character decoded), and the index after it; 0 past the
// end.
func decodedAt(p string, j int) (byte, int) {
	if j >= len(p) {
		return 0, j
	}
	if p[j] == '%' && j+2 < len(p) {
		hi, ok1 := unhex(p[j+1])
		lo, ok2 := unhex(p[j+2])
		if b := hi<<4 | lo; ok1 && ok2 && pathClass[b] == clUnreserved {
			return b, j + 3
		}
	}
	return p[j], j + 1
}

// checkPath reports whether p is normal, or the error that makes it
// unacceptable. A path that is acceptable but not normal gives false, nil.
func checkPath(p string) (normal bool, err error) {
	switch {
	case p == "":
		return false, errEmptyPath
	case len(p) > MaxPathLen:
		return false, errPathTooLong
	case p[0] != '/':
		if p[0] == '\\' {
			return false, errBackslash
		}
		return false, errNotAbsolute
	}
	normal = true
	segStart := 1   // index of the first byte of the current segment
	dots := 0       // '.' bytes (raw or encoded) in the segment so far
	encDot := false // one of them was encoded
	other := false  // the segment has something other than dots
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			// End of the segment p[segStart:i].
			if !other && dots > 0 && dots <= 2 {
				if encDot {
					return false, errEncodedDot
				}
				normal = false // a dot segment to resolve
			}
			if i == segStart && i < len(p) {
				normal = false // an empty segment that is not the last: "//"
			}
			segStart, dots, encDot, other = i+1, 0, false, false
			continue
		}
		c := p[i]
		switch pathClass[c] {
		case clUnreserved:
			if c == '.' {
				dots++
			} else {
				other = true
			}
		case clPchar:
			other = true
		case clInvalid:
			if c != '%' {
				return false, invalidCharError(c)
			}
			b, upper, err := escape(p, i)
			if err != nil {
				return false, err
			}
			switch {
			case b == '.':
				dots++
				encDot = true
				normal = false
			case pathClass[b] == clUnreserved:
				other = true
				normal = false // to decode
			default:
				other = true
				if !upper {
					normal = false
				}
			}
			i += 2
		}
	}
	return normal, nil
}

// rebuildPath normalizes p, which checkPath has accepted.
func rebuildPath(p string) (string, error) {
	out := make([]byte, 0, len(p))
	i := 1
	for {
		j := strings.IndexByte(p[i:], '/')
		last := j < 0
		if last {
			j = len(p)
		} else {
			j += i
		}
		start := len(out)
		out = append(out, '/')
		for k := i; k < j; k++ {
			c := p[k]
			if c != '%' {
				out = append(out, c)
				continue
			}
			b, _, err := escape(p, k)
			if err != nil {
				return "", err // not reached: checkPath accepted p
			}
			if pathClass[b] == clUnreserved {
				out = append(out, b)
			} else {
				out = append(out, '%', upperHex[b>>4], upperHex[b&15])
			}
			k += 2
		}
		switch seg := out[start+1:]; {
		case len(seg) == 0, len(seg) == 1 && seg[0] == '.':
			// Merge "//", drop "/.": keep only a trailing slash.
			out = out[:start]
			if last {
				out = append(out, '/')
			}
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			out = out[:start]
			if start == 0 {
				return "", errAboveRoot
			}
			out = out[:strings.LastIndexByte(string(out), '/')]
			if last {
				out = append(out, '/')
			}
		}
		if last {
			break
		}
		i = j + 1
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return string(out), nil
}

const upperHex = "0123456789ABCDEF"
