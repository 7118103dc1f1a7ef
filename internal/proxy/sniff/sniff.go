// Package sniff tells which protocol a client speaks by peeking at the first
// bytes it sends: HTTP/1.x, HTTP/2 with prior knowledge (h2c), a TLS
// ClientHello, or anything else (opaque TCP). The proxy uses it on accepted
// connections, outbound from the app and inbound plain text, to choose
// between request-by-request proxying and an opaque stream.
//
// Classify is the pure decision over a byte prefix; Detect reads from a
// connection until Classify decides (or a timeout passes) and returns a
// connection that replays the peeked bytes. Detection never buffers more
// than a few dozen bytes.
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
	// HTTP1 is HTTP/1.0 or HTTP/1.1: the stream starts with a known method
	// token and a space.
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

// MaxPeek is the most bytes Classify ever needs: given this many, it always
// decides. It is the length of the HTTP/2 preface, the longest signature.
const MaxPeek = len(preface)

// methods are the HTTP/1.x request methods recognised, each with the space
// that ends the token. PRI is absent: the HTTP/2 preface rule owns it.
// Other methods (WebDAV's PROPFIND, for example) are classified as opaque
// and still work, as a TCP stream.
var methods = [...]string{
	"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "CONNECT ", "OPTIONS ", "TRACE ", "PATCH ",
}

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
	more := false
	for _, m := range methods {
		if len(b) >= len(m) {
			if string(b[:len(m)]) == m {
				return HTTP1, true
			}
		} else if string(b) == m[:len(b)] {
			more = true
		}
	}
	return Opaque, !more
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
