// Package forward passes one HTTP request on and its response back, as
// both of the proxy's HTTP hops do (app to tunnel in outbound, tunnel to
// app in inbound).
//
// It keeps the semantics of httputil.ReverseProxy in its Rewrite mode
// (hop-by-hop and forwarding headers removed, the Te: trailers
// negotiation, 1xx responses relayed, trailers relayed, streaming
// responses flushed at every write, a body cut short aborts the response)
// without its per-request costs: no request clone with deep-copied headers
// and URL, no copy buffer per request (buffers are pooled), no media-type
// parsing per response, no timer per streaming response. The caller owns
// routing, identity headers, metrics and the errors it answers locally.
//
// It must not depend on Kubernetes packages or on other proxy packages.
package forward

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// BufferSize is the size of the pooled buffers that bodies are copied
// through.
const BufferSize = 32 << 10

var buffers = sync.Pool{New: func() any {
	b := make([]byte, BufferSize)
	return &b
}}

// GetBuffer returns a pooled copy buffer of BufferSize bytes; PutBuffer
// gives it back.
func GetBuffer() *[]byte { return buffers.Get().(*[]byte) }

// PutBuffer returns a buffer from GetBuffer to the pool.
func PutBuffer(b *[]byte) { buffers.Put(b) }

// Shared header values. Header maps built here may hold them; nothing in
// the proxy modifies a header value in place.
var (
	teTrailers = []string{"trailers"}
	emptyValue = []string{""}
)

// Exchange is one request being passed on.
type Exchange struct {
	// Out is the request to send: a shallow copy of the incoming one with
	// its own header map and URL. The caller adjusts its headers and URL
	// before sending it.
	Out *http.Request

	w     http.ResponseWriter
	url   url.URL
	body  noopCloseReader
	trace httptrace.ClientTrace

	mu   sync.Mutex // guards done and 1xx writes to w
	done bool       // the round trip returned: 1xx responses stop here
}

// NewExchange prepares the request that passes in on, whose response will
// be written to w. It fails, as ReverseProxy does, when the request asks
// to switch to a protocol whose name is not printable ASCII.
func NewExchange(w http.ResponseWriter, in *http.Request) (*Exchange, error) {
	upType := upgradeType(in.Header)
	if !isPrint(upType) {
		return nil, fmt.Errorf("client tried to switch to invalid protocol %q", upType)
	}
	x := &Exchange{w: w}
	x.trace.Got1xxResponse = x.got1xx
	out := in.WithContext(httptrace.WithClientTrace(in.Context(), &x.trace))
	x.Out = out
	x.url = *in.URL
	out.URL = &x.url
	out.Close = false
	if in.ContentLength == 0 {
		out.Body = nil // as ReverseProxy: a nil body lets transports retry
	}
	if out.Body != nil {
		// The transport closes the body it sent; the incoming body is the
		// server's to close (closing it early would hang a request that
		// waits for 100-continue).
		x.body.rc = out.Body
		out.Body = &x.body
	}
	if in.Trailer != nil {
		out.Trailer = in.Trailer.Clone()
	}

	h := make(http.Header, len(in.Header)+3)
	for k, vv := range in.Header {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade",
			// Forwarding headers from the client are not trusted.
			"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
			continue
		}
		h[k] = vv
	}
	deleteConnectionTokens(h, in.Header["Connection"])
	if httpguts.HeaderValuesContainsToken(in.Header["Te"], "trailers") {
		// Tell the app that trailers are welcome, as the client said.
		h["Te"] = teTrailers
	}
	if upType != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{upType}
	}
	if _, ok := h["User-Agent"]; !ok {
		// Keep transports from adding their own.
		h["User-Agent"] = emptyValue
	}
	out.Header = h
	x.url.RawQuery = cleanQueryParams(x.url.RawQuery)
	return x, nil
}

// RoundTripDone records that the round trip returned; it must be called
// before the response is written.
func (x *Exchange) RoundTripDone() {
	x.mu.Lock()
	x.done = true
	x.mu.Unlock()
}

// Close releases the outgoing request body; reads from it fail afterwards.
func (x *Exchange) Close() { x.body.Close() }

// got1xx relays an informational response while the round trip lasts.
func (x *Exchange) got1xx(code int, header textproto.MIMEHeader) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done {
		return nil
	}
	h := x.w.Header()
	for k, vv := range header {
		for _, v := range vv {
			h.Add(k, v)
		}
	}
	x.w.WriteHeader(code)
	clear(h) // WriteHeader keeps a 1xx response's headers
	return nil
}

// WriteResponse writes res, received for the request of x, to the
// exchange's writer and closes its body. Hop-by-hop headers are dropped;
// trailers follow the body. A response without a length, or an event
// stream, is flushed at every write and its header at once.
//
// An error means the body broke off after the header went out: the
// handler must then abort the response (panic with http.ErrAbortHandler,
// as ReverseProxy does) so that the client sees it incomplete.
func (x *Exchange) WriteResponse(res *http.Response) error {
	w := x.w
	removeHopByHop(res.Header)
	h := w.Header()
	for k, vv := range res.Header {
		if old, ok := h[k]; ok {
			h[k] = append(old, vv...)
		} else {
			h[k] = vv
		}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		var arr [8]string
		keys := arr[:0]
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)

	rc := http.NewResponseController(w)
	flush := res.ContentLength == -1 || isEventStream(res.Header["Content-Type"])
	if flush {
		rc.Flush() // the header now, whenever the body comes
	}
	if err := copyBody(w, rc, res.Body, flush); err != nil {
		res.Body.Close()
		return err
	}
	res.Body.Close() // now, to receive the trailers

	if len(res.Trailer) > 0 {
		// Chunked, so that a short body gets no Content-Length.
		rc.Flush()
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			for _, v := range vv {
				h.Add(k, v)
			}
		}
		return nil
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			h.Add(k, v)
		}
	}
	return nil
}

func copyBody(w io.Writer, rc *http.ResponseController, src io.Reader, flush bool) error {
	bp := GetBuffer()
	defer PutBuffer(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			if werr != nil {
				return werr
			}
			if nw != nr {
				return io.ErrShortWrite
			}
			if flush {
				rc.Flush()
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
	}
}

// isEventStream reports whether a Content-Type names Server-Sent Events,
// whose every event must reach the client at once.
func isEventStream(ct []string) bool {
	if len(ct) == 0 {
		return false
	}
	base, _, _ := strings.Cut(ct[0], ";")
	return strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// removeHopByHop deletes the headers that concern one connection only
// (RFC 9110, section 7.6.1), as ReverseProxy does.
func removeHopByHop(h http.Header) {
	deleteConnectionTokens(h, h["Connection"])
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// deleteConnectionTokens deletes the headers that Connection values name.
func deleteConnectionTokens(h http.Header, connection []string) {
	for _, f := range connection {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(sf))
			}
		}
	}
}

func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	if v := h["Upgrade"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func isPrint(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// maxQueryParams is net/url's limit on query parameters.
const maxQueryParams = 10000

// cleanQueryParams drops the query parameters that net/url cannot parse,
// as ReverseProxy does, so that the app and the proxy agree on them.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	if strings.Count(s, "&")+1 > maxQueryParams {
		return reencode(s)
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// noopCloseReader passes reads on until it is closed, and never closes
// what it reads from.
type noopCloseReader struct {
	rc     io.ReadCloser
	closed atomic.Bool
}

var errClosedBody = errors.New("forward: read from a closed request body")

func (n *noopCloseReader) Read(p []byte) (int, error) {
	if n.closed.Load() {
		return 0, errClosedBody
	}
	return n.rc.Read(p)
}

func (n *noopCloseReader) Close() error {
	n.closed.Store(true)
	return nil
}
