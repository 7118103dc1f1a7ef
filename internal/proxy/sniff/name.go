package sniff

import (
	"bytes"
	"errors"
	"net"
	"strings"
)

// The destination name a client sends first: the server name (SNI) of a
// TLS ClientHello, the Host of an HTTP/1 request. Egress allow-lists match
// it; both parsers are strict, since the bytes come from an app that may
// be hostile, and neither allocates more than the name.

// ErrIncomplete is returned by ServerName and HTTPHost when the bytes end
// before the answer: read more and call again.
var ErrIncomplete = errors.New("sniff: incomplete")

// MaxHello is the most bytes ServerName and HTTPHost look at: a
// ClientHello or request head longer than this is refused with an error.
// It leaves room for post-quantum key shares (about 1.2 KB each).
const MaxHello = 16 << 10

var (
	errNotHandshake  = errors.New("sniff: not a TLS handshake")
	errNotHello      = errors.New("sniff: first handshake message is not a ClientHello")
	errMalformed     = errors.New("sniff: malformed ClientHello")
	errTooLong       = errors.New("sniff: ClientHello or request head longer than MaxHello")
	errBadName       = errors.New("sniff: invalid server name")
	errNoHeaderEnd   = errors.New("sniff: malformed HTTP request head")
	errManyHosts     = errors.New("sniff: more than one Host header")
	errHostMismatch  = errors.New("sniff: Host header and absolute request target disagree")
	errMissingHostV1 = errors.New("sniff: no Host header")
	errBareLF        = errors.New("sniff: request head line ended by a bare LF")
	errBadTarget     = errors.New("sniff: request target with '#' or more than one '@'")
)

// bareLF reports whether a line feed at or after b[i] is not preceded by
// a carriage return.
func bareLF(b []byte, i int) bool {
	for ; i < len(b); i++ {
		if b[i] == '\n' && (i == 0 || b[i-1] != '\r') {
			return true
		}
	}
	return false
}

// ServerName returns the server name of the TLS ClientHello that b starts
// with: the host_name entry of its server_name extension, in lower case,
// without a trailing dot; "" and a nil error when the ClientHello has
// none. The ClientHello may span several handshake records. It returns
// ErrIncomplete when b ends before the ClientHello does, and another error
// when b is not a well-formed ClientHello, is longer than MaxHello, or
// names a server with bytes no DNS name has.
func ServerName(b []byte) (string, error) {
	// Reassemble the handshake message from its records.
	var (
		msg  []byte
		rest = b
		need = -1 // the message's length with its header, once known
	)
	for need < 0 || len(msg) < need {
		if len(rest) < 5 {
			return "", incomplete(len(b))
		}
		if rest[0] != tlsHandshake || rest[1] != tlsMajor {
			return "", errNotHandshake
		}
		n := int(rest[3])<<8 | int(rest[4])
		if n == 0 {
			return "", errMalformed
		}
		if len(rest) < 5+n {
			// Take what there is, to learn the message's length early.
			if need < 0 && len(msg)+len(rest)-5 >= 4 {
				m := append(msg, rest[5:]...)
				if need = 4 + (int(m[1])<<16 | int(m[2])<<8 | int(m[3])); need > MaxHello {
					return "", errTooLong
				}
			}
			return "", incomplete(len(b))
		}
		msg = append(msg, rest[5:5+n]...)
		rest = rest[5+n:]
		if need < 0 && len(msg) >= 4 {
			if msg[0] != 1 {
				return "", errNotHello
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need > MaxHello {
				return "", errTooLong
			}
		}
	}
	return helloServerName(msg[4:need])
}

func incomplete(n int) error {
	if n >= MaxHello+5 {
		return errTooLong
	}
	return ErrIncomplete
}

// reader reads the vectors of a TLS message.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) skip(n int) {
	if !r.ok || n > len(r.b) {
		r.ok = false
		return
	}
	r.b = r.b[n:]
}

func (r *reader) uint(n int) int {
	if !r.ok || n > len(r.b) {
		r.ok = false
		return 0
	}
	v := 0
	for _, c := range r.b[:n] {
		v = v<<8 | int(c)
	}
	r.b = r.b[n:]
	return v
}

// vector returns a vector whose length takes n bytes.
func (r *reader) vector(n int) reader {
	l := r.uint(n)
	if !r.ok || l > len(r.b) {
		r.ok = false
		return reader{}
	}
	v := reader{b: r.b[:l], ok: true}
	r.b = r.b[l:]
	return v
}

// helloServerName parses a ClientHello's body (RFC 8446, section 4.1.2;
// RFC 6066, section 3).
func helloServerName(body []byte) (string, error) {
	r := reader{b: body, ok: true}
	r.skip(2 + 32) // legacy_version, random
	r.vector(1)    // legacy_session_id
	r.vector(2)    // cipher_suites
	r.vector(1)    // legacy_compression_methods
	if !r.ok {
		return "", errMalformed
	}
	if len(r.b) == 0 {
		return "", nil // no extensions (SSL 3.0 style)
	}
	exts := r.vector(2)
	if !r.ok || len(r.b) != 0 {
		return "", errMalformed
	}
	name, seen := "", false
	for len(exts.b) > 0 {
		typ := exts.uint(2)
		data := exts.vector(2)
		if !exts.ok {
			return "", errMalformed
		}
		if typ != 0 {
			continue
		}
		if seen {
			return "", errMalformed // RFC 8446: no extension twice
		}
		seen = true
		list := data.vector(2)
		if !data.ok || len(data.b) != 0 {
			return "", errMalformed
		}
		for len(list.b) > 0 {
			nameType := list.uint(1)
			v := list.vector(2)
			if !list.ok {
				return "", errMalformed
			}
			if nameType != 0 {
				continue
			}
			if name != "" {
				return "", errMalformed // RFC 6066: one host_name
			}
			if name = hostName(v.b); name == "" {
				return "", errBadName
			}
		}
	}
	return name, nil
}

// hostName returns b as a DNS name in lower case without its trailing
// dot, or "" when it holds bytes no DNS name (or IP literal) has.
func hostName(b []byte) string {
	b = bytes.TrimSuffix(b, []byte("."))
	if len(b) == 0 || len(b) > 253 {
		return ""
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
		case 'A' <= c && c <= 'Z':
		case c == ':' || c == '[' || c == ']': // an IPv6 literal in a Host header
		default:
			return ""
		}
	}
	return strings.ToLower(string(b))
}

// HTTPHost returns the host an HTTP/1 request that b starts with is for:
// its Host header, or the authority of an absolute request target (which
// must then agree with any Host header), without the port, in lower case.
// It returns ErrIncomplete when b ends before the request head does, and
// another error for a head longer than MaxHello, without a host, with
// several Host headers, with a host no DNS name or IP literal has, with a
// line ended by a bare LF (servers differ on those), or with a request
// target holding '#' or more than one '@' (parsers differ on which part
// is the host).
func HTTPHost(b []byte) (string, error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	scan := b
	if end >= 0 {
		scan = b[:end]
	}
	if i := bytes.IndexByte(scan, '\n'); i >= 0 && bareLF(scan, i) {
		return "", errBareLF
	}
	if end < 0 {
		if len(b) >= MaxHello {
			return "", errTooLong
		}
		return "", ErrIncomplete
	}
	if end > MaxHello {
		return "", errTooLong
	}
	head := string(b[:end])
	head = strings.TrimLeft(head, "\r\n")
	line, headers, hasHeaders := strings.Cut(head, "\r\n")
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return "", errNoHeaderEnd
	}
	if t := fields[1]; strings.Contains(t, "#") || strings.Count(t, "@") > 1 {
		return "", errBadTarget
	}
	var target string
	if t := fields[1]; strings.Contains(t, "://") {
		_, rest, _ := strings.Cut(t, "://")
		target, _, _ = strings.Cut(rest, "/")
		if target, _, _ = strings.Cut(target, "?"); target == "" {
			return "", errNoHeaderEnd
		}
	}
	var host string
	seen := false
	for h := range strings.SplitSeq(headers, "\r\n") {
		if !hasHeaders {
			break
		}
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return "", errNoHeaderEnd
		}
		if !strings.EqualFold(k, "host") {
			if strings.TrimSpace(k) != k || strings.EqualFold(strings.TrimSpace(k), "host") {
				return "", errNoHeaderEnd // white space before the colon
			}
			continue
		}
		if seen {
			return "", errManyHosts
		}
		seen = true
		host = strings.TrimSpace(v)
	}
	switch {
	case target != "" && seen && !strings.EqualFold(stripPort(target), stripPort(host)):
		return "", errHostMismatch
	case target != "":
		host = target
	case !seen:
		return "", errMissingHostV1
	}
	if _, after, ok := strings.Cut(host, "@"); ok && target != "" {
		host = after // userinfo of an absolute target
	}
	name := hostName([]byte(stripPort(host)))
	if name == "" {
		return "", errBadName
	}
	return strings.Trim(name, "[]"), nil
}

// stripPort returns host without a port.
func stripPort(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}
