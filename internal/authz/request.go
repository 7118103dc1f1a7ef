package authz

import (
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Request is what the proxy knows about a request (or an opaque TCP
// connection) when it authorizes it. The proxy fills it in; Decide reads it
// and keeps nothing.
type Request struct {
	// Source is the SPIFFE ID that the peer proved with its certificate,
	// and Authenticated is true when it did (mutual TLS). A request with
	// Authenticated false, or with an empty Source, has no identity: the
	// Source is then ignored.
	Source        string
	Authenticated bool
	// SourceIP is the peer's address; the zero Addr if unknown.
	SourceIP netip.Addr
	// SourceDigest is the attested digest of the peer's code, if known.
	SourceDigest string

	// Port is the workload's port the request is for (the app's port).
	Port uint16
	// Protocol says whether the request is HTTP (Method, Path, Host and
	// Headers are set) or an opaque TCP connection (they are ignored). The
	// zero value is invalid, and denied.
	Protocol Protocol

	// Method is the HTTP method, as received (methods are case-sensitive).
	Method string
	// Path is the request's path, without the query, normalized with
	// normalize.Path. Decide denies a path that is not normalized.
	Path string
	// Host is the request's host, normalized with normalize.RequestHost;
	// it may carry a port. Empty if the request named none.
	Host string
	// Headers gives the request's header values; nil for none. Only CEL
	// conditions read headers.
	Headers Headers

	// Time is when the request arrived, for CEL conditions on "now".
	Time time.Time
}

// Protocol is the kind of traffic a Request describes.
type Protocol uint8

// Protocols. The zero value is invalid.
const (
	ProtocolUnset Protocol = iota
	// ProtocolTCP is an opaque TCP connection: rules' HTTP fields fail
	// closed on it (a DENY with HTTP fields denies it, an ALLOW with HTTP
	// fields does not allow it).
	ProtocolTCP
	// ProtocolHTTP is one HTTP request (HTTP/1.x, HTTP/2, gRPC).
	ProtocolHTTP
)

func (p Protocol) String() string {
	switch p {
	case ProtocolTCP:
		return "tcp"
	case ProtocolHTTP:
		return "http"
	}
	return "unset"
}

// Headers gives a request's header fields to CEL conditions.
type Headers interface {
	// Range calls yield with each header field, one at a time, until
	// yield returns false. A header repeated on several lines is yielded once
	// per line, so that each value is checked on its own rather than
	// joined into one string. The name may be in any case; conditions see
	// it in lower case, and the value trimmed of surrounding spaces and
	// tabs.
	Range(yield func(name, value string) bool)
}

// HTTPHeaders adapts an http.Header to Headers.
type HTTPHeaders http.Header

var _ Headers = HTTPHeaders(nil)

// Range implements Headers.
func (h HTTPHeaders) Range(yield func(name, value string) bool) {
	for name, values := range h {
		for _, v := range values {
			if !yield(name, v) {
				return
			}
		}
	}
}

// identity returns the request's verified SPIFFE ID, or "" if it has none.
func (r *Request) identity() string {
	if !r.Authenticated {
		return ""
	}
	return r.Source
}

// NamespaceOf returns the namespace of a workload SPIFFE ID,
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, or "" if id
// does not have exactly that form. It does not allocate.
func NamespaceOf(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return ""
	}
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return ""
	}
	rest, ok = strings.CutPrefix(rest[slash:], "/ns/")
	if !ok {
		return ""
	}
	ns, sa, ok := strings.Cut(rest, "/sa/")
	if !ok || ns == "" || sa == "" || strings.IndexByte(ns, '/') >= 0 || strings.IndexByte(sa, '/') >= 0 {
		return ""
	}
	return ns
}
