// Package sniff tells which protocol a client speaks by peeking at the first
// bytes it sends: HTTP/1.x, HTTP/2 with prior knowledge (h2c), a TLS
// ClientHello, or anything else (opaque TCP). The proxy uses it on accepted
// connections, outbound from the app and inbound plain text, to choose
// between request-by-request proxying and an opaque stream.
//
// Classify is the pure decision over a byte prefix; Detect reads from a
// connection until Classify decides (or a timeout passes) and returns a
// connection that replays the peeked bytes. Detection never buffers more
// than MaxPeek bytes.
//
// ServerName and HTTPHost read the destination name a client sends first
// (a TLS ClientHello's server name, an HTTP/1 request's Host), for egress
// allow-lists; they look at no more than MaxHello bytes.
//
// It uses the standard library only and must not depend on Kubernetes
// packages, the controller, or other parts of the proxy.
package sniff

import "strconv"

// Protocol is what a connection was detected to speak.
type Protocol uint8

const (
	// Opaque is any byte stream that is none of the others, including a
	// client that sends nothing first (a server-first protocol such as
	// MySQL or SMTP). It is the zero value.
	Opaque Protocol = iota
	// HTTP1 is HTTP/1.x: the stream starts (after at most a few empty
	// lines) with the shape of a request line, a method token in any case,
	// white space, a request target, white space and "HTTP/" DIGIT "."
	// DIGIT; or with an HTTP/0.9 request line ("GET /x" and a line end);
	// or with more empty lines, or a longer method or target, than
	// MaxPeek bytes let it see the end of. Whatever could be an HTTP
	// request to a lenient server is HTTP1, so that it never passes as an
	// opaque stream past per-request handling.
	HTTP1
	// HTTP2 is HTTP/2 with prior knowledge (h2c, plain-text gRPC): the
	// stream starts with the 24-byte client connection preface.
	HTTP2
	// TLS is a TLS handshake originated by the app: the stream starts with
	// a handshake record header.
	TLS
)

// String returns the name used in logs and metrics: "tcp", "http/1.1", "h2c"
// or "tls".
func (p Protocol) String() string {
	switch p {
	case Opaque:
		return "tcp"
	case HTTP1:
		return "http/1.1"
	case HTTP2:
		return "h2c"
	case TLS:
		return "tls"
	}
	return "Protocol(" + strconv.Itoa(int(p)) + ")"
}

// preface is the HTTP/2 client connection preface (RFC 9113, section 3.4).
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// MaxPeek is the most bytes Classify ever looks at: given this many, it
// always decides. A request line that is not over within MaxPeek bytes is
// HTTP1.
const MaxPeek = 64

// maxLeadingEmpty bounds the CR and LF bytes that may come before a request
// line (RFC 9112, section 2.2, lets servers skip empty lines there); a
// stream that starts with more is HTTP1 all the same: nothing else starts
// so, and some servers skip any number of them.
const maxLeadingEmpty = 8

// TLS record header: content type handshake, then the protocol version,
// whose major byte is 3 and whose minor byte is 0 (SSL 3.0) to 4.
const (
	tlsHandshake = 0x16
	tlsMajor     = 0x03
	tlsMaxMinor  = 0x04
)

// Classify decides what protocol a stream starting with b speaks. complete
// is false when b is too short to tell (it is a proper prefix of some
// signature); p is then Opaque. Once complete, the decision does not change
// when more bytes are appended to b, and it is always complete when
// len(b) >= MaxPeek. Classify decides as early as the bytes allow: a first
// byte that begins no signature is opaque at once.
func Classify(b []byte) (p Protocol, complete bool) {
	if len(b) == 0 {
		return Opaque, false
	}
	if b[0] == tlsHandshake {
		return classifyTLS(b)
	}
	if n := min(len(b), len(preface)); string(b[:n]) == preface[:n] {
		if n == len(preface) {
			return HTTP2, true
		}
		return Opaque, false
	}
	return classifyHTTP1(b)
}

// classifyHTTP1 decides whether b starts like an HTTP/1 request line,
// leniently: tabs as well as spaces separate its parts, and the version is
// matched in any case. It looks at no more than MaxPeek bytes, so that a
// decision never changes when bytes are appended.
func classifyHTTP1(b []byte) (Protocol, bool) {
	if len(b) > MaxPeek {
		b = b[:MaxPeek]
	}
	// more is the answer when b ends before a decision: wait for more
	// bytes, unless b is as long as Classify looks.
	more := func() (Protocol, bool) {
		if len(b) == MaxPeek {
			return HTTP1, true
		}
		return Opaque, false
	}
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
		if i > maxLeadingEmpty {
			return HTTP1, true
		}
	}
	// The method: a token, in any case.
	start := i
	for i < len(b) && isTchar(b[i]) {
		i++
	}
	switch {
	case i == len(b):
		return more()
	case i == start || !isSpace(b[i]):
		return Opaque, true
	}
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	// The request target: anything visible.
	start = i
	for i < len(b) && b[i] > ' ' && b[i] != 0x7f {
		i++
	}
	switch {
	case i == len(b):
		return more()
	case i == start:
		return Opaque, true
	case b[i] == '\r' || b[i] == '\n':
		// An HTTP/0.9 request line: a path and the end of the line.
		if b[start] == '/' {
			return HTTP1, true
		}
		return Opaque, true
	case !isSpace(b[i]):
		return Opaque, true
	}
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	// The version: "HTTP/" DIGIT "." DIGIT.
	const version = "HTTP/0.0"
	for j := 0; j < len(version); j, i = j+1, i+1 {
		if i == len(b) {
			return more()
		}
		c := b[i]
		switch v := version[j]; {
		case v == '0':
			if c < '0' || c > '9' {
				return Opaque, true
			}
		case v >= 'A' && v <= 'Z':
			if c&^0x20 != v {
				return Opaque, true
			}
		case c != v:
			return Opaque, true
		}
	}
	return HTTP1, true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// isTchar reports whether c may be part of a token (RFC 9110, section 5.6.2).
func isTchar(c byte) bool { return c < 0x80 && tchar[c] }

var tchar = [128]bool{
	'!': true, '#': true, '$': true, '%': true, '&': true, '\'': true, '*': true, '+': true,
	'-': true, '.': true, '^': true, '_': true, '`': true, '|': true, '~': true,
	'0': true, '1': true, '2': true, '3': true, '4': true, '5': true, '6': true, '7': true, '8': true, '9': true,
	'A': true, 'B': true, 'C': true, 'D': true, 'E': true, 'F': true, 'G': true, 'H': true, 'I': true,
	'J': true, 'K': true, 'L': true, 'M': true, 'N': true, 'O': true, 'P': true, 'Q': true, 'R': true,
	'S': true, 'T': true, 'U': true, 'V': true, 'W': true, 'X': true, 'Y': true, 'Z': true,
	'a': true, 'b': true, 'c': true, 'd': true, 'e': true, 'f': true, 'g': true, 'h': true, 'i': true,
	'j': true, 'k': true, 'l': true, 'm': true, 'n': true, 'o': true, 'p': true, 'q': true, 'r': true,
	's': true, 't': true, 'u': true, 'v': true, 'w': true, 'x': true, 'y': true, 'z': true,
}

func classifyTLS(b []byte) (Protocol, bool) {
	if len(b) < 2 {
		return Opaque, false
	}
	if b[1] != tlsMajor {
		return Opaque, true
	}
	if len(b) < 3 {
		return Opaque, false
	}
	if b[2] > tlsMaxMinor {
		return Opaque, true
	}
	return TLS, true
}
