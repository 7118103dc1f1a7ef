package normalize

import (
	"errors"
	"net/netip"
	"strings"
)

// MaxHostLen bounds the length of a host, with its port, before
// normalization.
const MaxHostLen = 261 // a 253-byte name, ':' and a port, and some slack

var (
	errEmptyHost     = errors.New("normalize: empty host")
	errHostTooLong   = errors.New("normalize: host longer than 261 bytes")
	errHostChar      = errors.New("normalize: host holds a character not allowed in a DNS name or IP address")
	errHostLabel     = errors.New("normalize: host has an empty label or one longer than 63 bytes")
	errHostPort      = errors.New("normalize: host has a port that is not a number between 1 and 65535")
	errHostIPv6      = errors.New("normalize: host has a malformed IPv6 literal")
	errHostsDiffer   = errors.New("normalize: the Host header and the request's authority name different hosts")
	errHostUserinfo  = errors.New("normalize: host holds userinfo ('@')")
	errHostTrailDots = errors.New("normalize: host ends with more than one '.'")
	errHostIPv4      = errors.New("normalize: host looks like an IPv4 address but is not one in dotted-decimal form")
)

// Host returns the normalized form of h, a Host header or an HTTP/2
// :authority: the name in lower case without its trailing dot (one is
// removed; "example.com.." is an error), an IPv6 literal in brackets in its
// canonical form, and the port, if any, as a plain number (an empty port,
// "example.com:", is dropped). Host accepts DNS names (letters, digits,
// '-', '_' and '.', labels of 1 to 63 bytes; internationalized names in
// their ASCII form) and IP addresses; anything else is an error: userinfo,
// percent-encoding, IPv6 zones, control characters and spaces, a port
// outside 1-65535 or with leading zeros.
//
// The port is kept: call StripPort to drop it. A host that is already
// normal is returned as is, without allocating. Host is idempotent.
func Host(h string) (string, error) {
	switch {
	case h == "":
		return "", errEmptyHost
	case len(h) > MaxHostLen:
		return "", errHostTooLong
	}
	name, port, err := splitPort(h)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(name, "[") {
		return ipv6Host(h, name, port)
	}
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
		if n > 1 && name[n-2] == '.' {
			return "", errHostTrailDots
		}
	}
	if err := checkName(name); err != nil {
		return "", err
	}
	// Most hosts are already normal: return them as they are.
	if hasUpper(name) {
		name = strings.ToLower(name)
	} else if (port == "" && name == h) || (port != "" && len(name)+1+len(port) == len(h)) {
		return h, nil
	}
	if port == "" {
		return name, nil
	}
	return name + ":" + port, nil
}

// IsHost reports whether h is a normalized host, one that Host returns
// unchanged. It does not allocate, except for IPv6 literals.
func IsHost(h string) bool {
	n, err := Host(h)
	return err == nil && n == h
}

// StripPort returns the host of a normalized host without its port.
func StripPort(h string) string {
	name, _ := SplitHostPort(h)
	return name
}

// SplitHostPort splits a normalized host into its name (an IPv6 literal
// keeps its brackets) and its port, "" if it has none. It does not
// allocate.
func SplitHostPort(h string) (name, port string) {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.IndexByte(h[i:], ']') >= 0 {
		return h, ""
	}
	return h[:i], h[i+1:]
}

// RequestHost returns the normalized host of a request from its
// :authority (HTTP/2, or the authority of an absolute-form HTTP/1 target)
// and its Host header, either of which may be empty. When both are set
// they must name the same host and port after normalization: a request
// that says two different things is rejected rather than matched on one
// and routed by the other.
func RequestHost(authority, hostHeader string) (string, error) {
	switch {
	case authority == "" && hostHeader == "":
		return "", errEmptyHost
	case authority == "":
		return Host(hostHeader)
	case hostHeader == "":
		return Host(authority)
	}
	a, err := Host(authority)
	if err != nil {
		return "", err
	}
	h, err := Host(hostHeader)
	if err != nil {
		return "", err
	}
	if a != h {
		return "", errHostsDiffer
	}
	return a, nil
}

// splitPort splits h into name and port, checking the port.
func splitPort(h string) (name, port string, err error) {
	if strings.IndexByte(h, '@') >= 0 {
		return "", "", errHostUserinfo
	}
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.IndexByte(h[i:], ']') >= 0 {
		return h, "", nil
	}
	name, port = h[:i], h[i+1:]
	if port == "" {
		return name, "", nil
	}
	if len(port) > 5 || port[0] == '0' {
		return "", "", errHostPort
	}
	n := 0
	for i := 0; i < len(port); i++ {
		c := port[i]
		if c < '0' || c > '9' {
			return "", "", errHostPort
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > 65535 {
		return "", "", errHostPort
	}
	return name, port, nil
}

// checkName checks a DNS name or IPv4 address, without a trailing dot.
func checkName(name string) error {
	if name == "" {
		return errEmptyHost
	}
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 {
				return errHostLabel
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return errHostChar
		}
		label++
		if label > 63 {
			return errHostLabel
		}
	}
	if label == 0 {
		return errHostLabel
	}
	// A name whose last label is all digits is an IPv4 address, and must
	// be one in its one standard form: "127.1", "0177.0.0.1" and
	// "1.2.3.4.5" are read differently by different resolvers.
	if last := name[strings.LastIndexByte(name, '.')+1:]; allDigits(last) {
		if ip, err := netip.ParseAddr(name); err != nil || !ip.Is4() {
			return errHostIPv4
		}
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// ipv6Host normalizes "[addr]" with an optional port.
func ipv6Host(h, name, port string) (string, error) {
	if len(name) < 2 || name[len(name)-1] != ']' {
		return "", errHostIPv6
	}
	inner := name[1 : len(name)-1]
	if strings.IndexByte(inner, '%') >= 0 {
		return "", errHostIPv6 // zones have no meaning in a Host header
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is6() {
		return "", errHostIPv6
	}
	norm := "[" + ip.String() + "]"
	if port != "" {
		norm += ":" + port
	}
	if norm == h {
		return h, nil
	}
	return norm, nil
}
