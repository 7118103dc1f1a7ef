package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// bufferBeforeChunking is how much of a response body is held back, as
// net/http does, so that a handler that finishes within it gets a
// Content-Length rather than chunked encoding.
const bufferBeforeChunking = 2048

// watchDelay is how long a request runs before the connection is watched
// for the client going away (which cancels the request's context).
// net/http watches every request from its start, at the cost of a
// goroutine and a read per request; a request answered within watchDelay
// has nothing to cancel.
const watchDelay = 50 * time.Millisecond

// rstAvoidanceDelay is how long a connection closed with part of a request
// body unread stays half-closed, so that the client reads the response
// before a reset (net/http waits as long).
const rstAvoidanceDelay = 500 * time.Millisecond

// Server serves HTTP/1.0 and HTTP/1.1 on connections handed to ServeConn,
// as net/http's server does for the requests a proxy takes: keep-alive and
// pipelining, chunked bodies and trailers, Expect: 100-continue, Content-
// Length set for short responses, the request's context cancelled when the
// client goes away. It does not hijack, upgrade or speak HTTP/2; the
// caller sends connections that start with the HTTP/2 preface elsewhere.
//
// Handlers get an *http.Request and an http.ResponseWriter that also
// implements http.Flusher (and FlushError, for http.ResponseController).
// A handler that panics with http.ErrAbortHandler aborts its response: the
// connection is closed after what was written.
type Server struct {
	Handler http.Handler // required
	// ReadHeaderTimeout bounds reading a request's header; zero means no
	// limit.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds waiting for the next request; zero means no
	// limit.
	IdleTimeout time.Duration
	// Logger receives handler panics and framing errors; nil discards.
	Logger *slog.Logger
	// H2C, when set, takes the connections whose first bytes are "PRI",
	// the start of the HTTP/2 preface: nc with br, which holds the bytes
	// read so far. The connection is then H2C's. Without it such a
	// connection is answered as HTTP/1.
	H2C func(ctx context.Context, nc net.Conn, br *bufio.Reader)

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	shutdown atomic.Bool
	done     chan struct{} // closed when the last connection ends after Shutdown
}

// ServeConn serves nc until the client closes it, it fails, a timeout
// passes or the server shuts down; it closes nc. ctx is the parent of
// every request's context. br, when not nil, is a reader of nc that may
// already hold bytes of the first request.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn, br *bufio.Reader) {
	sc := &serverConn{s: s, nc: nc, br: br}
	if sc.br == nil {
		sc.br = bufio.NewReaderSize(nc, 4<<10)
	}
	reqCtx, cancel := context.WithCancel(context.WithValue(ctx, http.LocalAddrContextKey, nc.LocalAddr()))
	defer cancel()
	sc.cancel = cancel
	if !s.track(sc) {
		nc.Close()
		return
	}
	defer s.untrack(sc)
	sc.idle.Store(true) // until the first bytes: Shutdown may close it
	if s.H2C != nil && sc.isH2C() {
		s.H2C(ctx, nc, sc.br)
		return
	}
	sc.bw = bufio.NewWriterSize(nc, 4<<10)
	sc.base = (&http.Request{}).WithContext(reqCtx)
	sc.remote = nc.RemoteAddr().String()
	sc.watchCond = sync.NewCond(&sc.watchMu)
	sc.watchTimer = time.AfterFunc(time.Hour, sc.watch)
	sc.watchTimer.Stop()
	for sc.serveRequest() {
	}
	sc.watchTimer.Stop()
	sc.nc.Close()
}

// isH2C reports whether a connection starts as HTTP/2 with prior
// knowledge does. A method is at least one letter and a space, so looking
// at three bytes never waits for bytes an HTTP/1 client does not send.
func (sc *serverConn) isH2C() bool {
	s := sc.s
	if s.ReadHeaderTimeout > 0 {
		sc.nc.SetReadDeadline(time.Now().Add(s.ReadHeaderTimeout))
		defer sc.nc.SetReadDeadline(time.Time{})
	}
	b, err := sc.br.Peek(1)
	if err != nil || b[0] != 'P' {
		return false
	}
	b, err = sc.br.Peek(3)
	return err == nil && string(b) == "PRI"
}

// Shutdown stops keeping connections alive: idle ones close now, busy
// ones after their response. It waits for every connection to end, or for
// ctx, after which it closes what is left and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown.Store(true)
	if s.done == nil {
		s.done = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.done)
		}
	}
	done := s.done
	for sc := range s.conns {
		if sc.idle.Load() {
			sc.nc.Close()
		}
	}
	s.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for sc := range s.conns {
		sc.nc.Close()
		sc.cancel() // requests in flight end too
	}
	s.mu.Unlock()
	return ctx.Err()
}

func (s *Server) track(sc *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*serverConn]struct{})
	}
	s.conns[sc] = struct{}{}
	return true
}

func (s *Server) untrack(sc *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, sc)
	if s.shutdown.Load() && len(s.conns) == 0 && s.done != nil {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
}

func (s *Server) shuttingDown() bool { return s.shutdown.Load() }

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// serverConn is one client connection.
type serverConn struct {
	s      *Server
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	hb     headerBlock
	base   *http.Request // carries the context of every request
	cancel context.CancelFunc
	remote string
	idle   atomic.Bool // waiting for a request: Shutdown may close it

	hdrBuf []byte // the handler's header fields, written at commit
	preBuf []byte // body held back before commit

	// The watch for the client going away while a request runs.
	watchTimer *time.Timer
	watchMu    sync.Mutex
	watchCond  *sync.Cond
	watchState int // watchIdle, watchArmed, watchRunning
	body       *reqBody
	gone       atomic.Bool // the client went away
}

const (
	watchIdle = iota
	watchArmed
	watchRunning
)

// serveRequest serves one request and reports whether the connection
// stays open for another.
func (sc *serverConn) serveRequest() bool {
	s := sc.s
	sc.idle.Store(true)
	if s.shuttingDown() {
		return false
	}
	if s.IdleTimeout > 0 {
		sc.nc.SetReadDeadline(time.Now().Add(s.IdleTimeout))
	}
	if _, err := sc.br.Peek(1); err != nil {
		return false
	}
	sc.idle.Store(false)
	if s.ReadHeaderTimeout > 0 {
		sc.nc.SetReadDeadline(time.Now().Add(s.ReadHeaderTimeout))
	} else if s.IdleTimeout > 0 {
		sc.nc.SetReadDeadline(time.Time{})
	}
	// A server should skip at least one empty line before a request line
	// (RFC 9112, section 2.2); skip a few, as sniff does before it calls
	// a stream HTTP/1.
	for range maxLeadingEmpty {
		b, err := sc.br.Peek(1)
		if err != nil {
			return false
		}
		if b[0] != '\r' && b[0] != '\n' {
			break
		}
		sc.br.Discard(1)
	}
	req, err := sc.readRequest()
	if err != nil {
		sc.badRequest(err)
		return false
	}
	if s.ReadHeaderTimeout > 0 {
		sc.nc.SetReadDeadline(time.Time{})
	}

	w := &response{sc: sc, req: req, header: make(http.Header), contentLength: -1}
	body, _ := req.Body.(*reqBody)
	if body != nil {
		body.w = w
	}
	sc.body = body
	if ex, ok := req.Header["Expect"]; ok {
		if !httpguts.HeaderValuesContainsToken(ex, "100-continue") {
			w.header.Set("Connection", "close")
			w.WriteHeader(http.StatusExpectationFailed)
			w.finish()
			sc.bw.Flush()
			return false
		}
		if body != nil && req.ProtoAtLeast(1, 1) {
			body.wantContinue = true
		}
	}

	h := s.Handler
	if req.RequestURI == "*" && req.Method == http.MethodOptions {
		h = globalOptions // as net/http: the server's, not the handler's
	}
	sc.arm()
	aborted := sc.runHandler(h, w, req)
	sc.disarm()
	if aborted {
		sc.bw.Flush()
		return false
	}
	w.finish()
	if err := sc.bw.Flush(); err != nil {
		return false
	}
	if body != nil && !body.close() {
		// Part of the body is unread: the connection cannot carry another
		// request. Half-close first so that the client reads the response
		// rather than a reset.
		if cw, ok := sc.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			time.Sleep(rstAvoidanceDelay)
		}
		return false
	}
	return !w.closeAfter && !sc.gone.Load()
}

// maxLeadingEmpty bounds the CR and LF bytes skipped before a request.
const maxLeadingEmpty = 8

// globalOptions answers "OPTIONS *", which concerns the server rather
// than a resource, as net/http does.
var globalOptions = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		io.Copy(io.Discard, io.LimitReader(r.Body, 4<<10))
	}
})

// runHandler calls h and reports whether it aborted.
func (sc *serverConn) runHandler(h http.Handler, w *response, req *http.Request) (aborted bool) {
	defer func() {
		if err := recover(); err != nil {
			aborted = true
			if err != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				sc.s.log().Error("h1: panic serving request", "remote", sc.remote, "panic", err, "stack", string(buf))
			}
		}
	}()
	h.ServeHTTP(w, req)
	return false
}

// arm starts the timer that watches the client while the request runs.
func (sc *serverConn) arm() {
	sc.watchMu.Lock()
	sc.watchState = watchArmed
	sc.watchMu.Unlock()
	sc.watchTimer.Reset(watchDelay)
}

// disarm stops the watch, waiting for a read in progress to give up.
func (sc *serverConn) disarm() {
	sc.watchTimer.Stop()
	sc.watchMu.Lock()
	if sc.watchState == watchRunning {
		sc.nc.SetReadDeadline(aLongTimeAgo)
		for sc.watchState == watchRunning {
			sc.watchCond.Wait()
		}
		sc.nc.SetReadDeadline(time.Time{})
	}
	sc.watchState = watchIdle
	sc.watchMu.Unlock()
}

var aLongTimeAgo = time.Unix(1, 0)

// watch runs when a request has taken watchDelay: once the request body is
// read, it waits for the client's next bytes. An end of the connection
// means the client went away and cancels the request. Bytes (a pipelined
// request) stay buffered for the next request.
func (sc *serverConn) watch() {
	sc.watchMu.Lock()
	if sc.watchState != watchArmed || sc.body != nil && !sc.body.eof.Load() {
		sc.watchMu.Unlock()
		return
	}
	sc.watchState = watchRunning
	sc.watchMu.Unlock()
	_, err := sc.br.Peek(1)
	if err != nil && !isTimeout(err) {
		sc.gone.Store(true)
		sc.cancel()
	}
	sc.watchMu.Lock()
	sc.watchState = watchIdle
	sc.watchCond.Broadcast()
	sc.watchMu.Unlock()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errorHeaders close the answers to requests that could not be read, as
// net/http writes them.
const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// requestError is a request that is answered with code and closed.
type requestError struct {
	code int
	msg  string
}

func (e *requestError) Error() string { return fmt.Sprintf("h1: %d %s", e.code, e.msg) }

func badRequest(msg string) error { return &requestError{http.StatusBadRequest, msg} }

// badRequest answers a request that could not be read, unless the
// connection ended.
func (sc *serverConn) badRequest(err error) {
	var re *requestError
	switch {
	case errors.As(err, &re):
	case errors.Is(err, errHeaderTooLarge):
		re = &requestError{http.StatusRequestHeaderFieldsTooLarge, ""}
	case errors.Is(err, errBadLine):
		re = &requestError{http.StatusBadRequest, ""}
	default:
		return // the connection failed or timed out: nobody to answer
	}
	status := strconv.Itoa(re.code) + " " + http.StatusText(re.code)
	body := status
	if re.msg != "" {
		body += ": " + re.msg
	}
	sc.s.log().Debug("h1: refused request", "remote", sc.remote, "status", re.code, "reason", re.msg)
	sc.nc.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(sc.nc, "HTTP/1.1 "+status+errorHeaders+body)
}

// readRequest reads a request head and sets up its body.
func (sc *serverConn) readRequest() (*http.Request, error) {
	hb := &sc.hb
	hb.buf = hb.buf[:0]
	ln, err := hb.readLine(sc.br, MaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	if err := hb.readFields(sc.br, MaxHeaderBytes); err != nil {
		return nil, err
	}
	s := string(hb.buf)
	line := s[ln.start:ln.end]

	req := new(http.Request)
	*req = *sc.base // the context
	method, rest, ok1 := cutByte(line, ' ')
	target, proto, ok2 := cutByte(rest, ' ')
	if !ok1 || !ok2 {
		return nil, badRequest("malformed HTTP request")
	}
	if !validMethod(method) {
		return nil, badRequest("invalid method")
	}
	req.Method, req.RequestURI, req.Proto = method, target, proto
	switch proto {
	case "HTTP/1.1":
		req.ProtoMajor, req.ProtoMinor = 1, 1
	case "HTTP/1.0":
		req.ProtoMajor, req.ProtoMinor = 1, 0
	default:
		major, minor, ok := http.ParseHTTPVersion(proto)
		if !ok {
			return nil, badRequest("malformed HTTP version")
		}
		if major != 1 {
			return nil, &requestError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
		}
		req.ProtoMajor, req.ProtoMinor = major, minor
	}
	rawURL := target
	authority := method == http.MethodConnect && (target == "" || target[0] != '/')
	if authority {
		rawURL = "http://" + target
	}
	if req.URL, err = url.ParseRequestURI(rawURL); err != nil {
		return nil, badRequest("malformed HTTP request")
	}
	if authority {
		req.URL.Scheme = ""
	}

	h := hb.header(s)
	req.Header = h
	hosts, haveHost := h["Host"]
	switch {
	case len(hosts) > 1:
		return nil, badRequest("too many Host headers")
	case !haveHost && req.ProtoAtLeast(1, 1):
		return nil, badRequest("missing required Host header")
	case haveHost && !httpguts.ValidHostHeader(hosts[0]):
		return nil, badRequest("malformed Host header")
	}
	req.Host = req.URL.Host
	if req.Host == "" && haveHost {
		req.Host = hosts[0]
	}
	delete(h, "Host")
	req.RemoteAddr = sc.remote

	// Connection management, as net/http: a close option removes the
	// Connection field.
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	if req.ProtoMinor == 0 {
		req.Close = hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	} else {
		req.Close = hasClose
		if hasClose {
			delete(h, "Connection")
		}
	}

	// Framing (RFC 9112, section 6.3), as strict as net/http.
	chunked := false
	if te, ok := h["Transfer-Encoding"]; ok {
		delete(h, "Transfer-Encoding")
		if req.ProtoAtLeast(1, 1) {
			if len(te) != 1 || !asciiEqualFold(te[0], "chunked") {
				return nil, &requestError{http.StatusNotImplemented, "unsupported transfer encoding"}
			}
			chunked = true
		}
	}
	length, err := contentLength(h)
	if err != nil {
		return nil, badRequest("bad Content-Length")
	}
	if chunked {
		delete(h, "Content-Length")
		length = -1
		req.TransferEncoding = []string{"chunked"}
		if v, ok := h["Trailer"]; ok {
			delete(h, "Trailer")
			if req.Trailer, err = declaredTrailers(v); err != nil {
				return nil, badRequest("bad trailer key")
			}
		}
	} else if length < 0 {
		length = 0
	}
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
		return req, nil
	}
	b := &reqBody{sc: sc, req: req, remaining: length}
	if chunked {
		b.chunked = httputil.NewChunkedReader(sc.br)
	}
	req.Body = b
	return req, nil
}

// reqBody is a request body read from the connection.
type reqBody struct {
	sc           *serverConn
	req          *http.Request
	w            *response
	mu           sync.Mutex
	remaining    int64     // of a body with a length
	chunked      io.Reader // of a chunked body
	wantContinue bool      // 100 Continue is due before the first read
	closed       bool      // the handler returned
	err          error
	eof          atomic.Bool
}

var errBodyAfterHandler = errors.New("h1: read from a request body after its handler returned")

func (b *reqBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, errBodyAfterHandler
	case b.err != nil:
		return 0, b.err
	}
	if b.wantContinue {
		b.wantContinue = false
		b.w.writeContinue()
	}
	var (
		n   int
		err error
	)
	if b.chunked != nil {
		n, err = b.chunked.Read(p)
		if err == io.EOF {
			err = b.readTrailers()
		}
	} else {
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.sc.br.Read(p)
		b.remaining -= int64(n)
		switch {
		case b.remaining == 0:
			err = io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		b.err = err
		if err == io.EOF {
			b.eof.Store(true)
		}
	}
	return n, err
}

// readTrailers reads the trailer section after the last chunk.
func (b *reqBody) readTrailers() error {
	hb := &b.sc.hb
	hb.buf = hb.buf[:0]
	hb.crlf = true
	defer func() { hb.crlf = false }()
	if err := hb.readFields(b.sc.br, MaxHeaderBytes); err != nil {
		return fmt.Errorf("h1: reading trailers: %w", err)
	}
	if len(hb.fields) == 0 {
		return io.EOF
	}
	for k, vv := range hb.header(string(hb.buf)) {
		if b.req.Trailer == nil {
			b.req.Trailer = make(http.Header)
		}
		b.req.Trailer[k] = vv
	}
	return io.EOF
}

// Close does nothing: a handler's body is the server's to close.
func (b *reqBody) Close() error { return nil }

// close ends reading once the handler returned, and reports whether the
// body was read to its end.
func (b *reqBody) close() bool {
	if !b.eof.Load() {
		// A read may be blocked on the connection; the connection is not
		// reused, so the body is left as it is.
		return false
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return true
}

// maxDiscard is how much of a request body the handler left unread is
// read and dropped so that the connection can carry the next request, as
// net/http does.
const maxDiscard = 256 << 10

// discard reads what is left of a body of known length, if little and if
// no one is reading it, and reports whether it is all read. It does not
// read a body that waits for 100 Continue: the client would not send it.
func (b *reqBody) discard() bool {
	if !b.mu.TryLock() {
		return false // a read is in progress elsewhere
	}
	defer b.mu.Unlock()
	if b.err != nil || b.wantContinue || b.chunked != nil || b.remaining > maxDiscard {
		return b.err == io.EOF
	}
	n, err := b.sc.br.Discard(int(b.remaining))
	b.remaining -= int64(n)
	if err != nil {
		b.err = err
		return false
	}
	b.err = io.EOF
	b.eof.Store(true)
	return true
}

// response is the http.ResponseWriter of one request.
type response struct {
	sc            *serverConn
	req           *http.Request
	header        http.Header
	mu            sync.Mutex // orders 100 Continue before the header
	status        int
	wroteHeader   bool // the final status is set
	committed     bool // the header went to the connection's writer
	chunked       bool
	noBody        bool  // HEAD or a status without a body
	contentLength int64 // declared by the handler, -1 without
	written       int64
	trailers      []string // declared trailer names
	closeAfter    bool
	done          bool
	continueSent  bool // a 100 Continue went out; guarded by mu
}

var _ http.Flusher = (*response)(nil)

var errWriteAfterHandler = errors.New("h1: write to a response after its handler returned")

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader || w.done {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.wroteHeader, w.status = true, code
	if cl := w.header.Get("Content-Length"); cl != "" {
		v, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.sc.s.log().Debug("h1: invalid Content-Length from handler", "value", cl)
			w.header.Del("Content-Length")
		}
	}
	w.noBody = w.req.Method == http.MethodHead || !bodyAllowed(code)
	// Later changes to the header map are trailers: keep the fields now.
	buf := w.sc.hdrBuf[:0]
	for k, vv := range w.header {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue // framing, decided at commit
		case "Trailer":
			for _, v := range vv {
				w.trailers = append(w.trailers, splitComma(v)...)
			}
		}
		if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
			continue
		}
		if !bodyAllowed(code) && (k == "Content-Type" && code == http.StatusNotModified) {
			continue
		}
		for _, v := range vv {
			buf = appendField(buf, k, v)
		}
	}
	w.sc.hdrBuf = buf
}

// appendField writes one header line; values lose line breaks as in
// net/http.
func appendField(buf []byte, k, v string) []byte {
	buf = append(buf, k...)
	buf = append(buf, ": "...)
	v = textproto.TrimString(v)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		buf = append(buf, c)
	}
	return append(buf, "\r\n"...)
}

// writeInformational sends a 1xx response at once.
func (w *response) writeInformational(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed {
		return
	}
	if code == http.StatusContinue {
		w.continueSent = true
	}
	bw := w.sc.bw
	writeStatusLine(bw, w.req.ProtoAtLeast(1, 1), code)
	for k, vv := range w.header {
		if k == "Content-Length" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vv {
			bw.Write(appendField(w.sc.hdrBuf[:0], k, v))
		}
	}
	bw.WriteString("\r\n")
	bw.Flush()
}

// writeContinue sends 100 Continue unless one went out or the response
// began.
func (w *response) writeContinue() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed || w.continueSent {
		return
	}
	w.continueSent = true
	w.sc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	w.sc.bw.Flush()
}

func (w *response) Write(p []byte) (int, error) {
	if w.done {
		return 0, errWriteAfterHandler
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed {
		if len(w.sc.preBuf)+len(p) <= bufferBeforeChunking {
			w.sc.preBuf = append(w.sc.preBuf, p...)
			return len(p), nil
		}
		w.commit()
	}
	return len(p), w.writeBody(p)
}

func (w *response) writeBody(p []byte) error {
	if w.noBody {
		return nil
	}
	bw := w.sc.bw
	if w.chunked {
		writeInt(bw, int64(len(p)), 16)
		bw.WriteString("\r\n")
		bw.Write(p)
		_, err := bw.WriteString("\r\n")
		return err
	}
	_, err := bw.Write(p)
	return err
}

// Flush sends what was written so far.
func (w *response) Flush() { w.FlushError() }

// FlushError sends what was written so far and reports a failure.
func (w *response) FlushError() error {
	if w.done {
		return nil
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit()
	}
	return w.sc.bw.Flush()
}

// commit writes the status line and header, deciding the framing, then
// what the body held back.
func (w *response) commit() {
	w.mu.Lock()
	defer w.mu.Unlock()
	sc, req := w.sc, w.req
	w.committed = true
	pre := sc.preBuf
	sc.preBuf = sc.preBuf[:0]
	code := w.status
	h := w.header
	is11 := req.ProtoAtLeast(1, 1)

	hasTrailers := len(w.trailers) > 0
	if !hasTrailers {
		for k := range h {
			if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
				hasTrailers = true
				break
			}
		}
	}
	te := ""
	if v := h["Transfer-Encoding"]; len(v) > 0 {
		te = v[0]
	}
	length := w.contentLength
	if w.done && !hasTrailers && te == "" && bodyAllowed(code) && length < 0 && (req.Method != http.MethodHead || len(pre) > 0) {
		length = int64(len(pre))
	}
	hasCL := length >= 0
	if hasCL && te != "" && te != "identity" {
		hasCL = false
	}
	closeAfter := req.Close || sc.s.shuttingDown() || httpguts.HeaderValuesContainsToken(h["Connection"], "close")
	keepAlive10 := false
	if !is11 {
		if !req.Close && (req.Method == http.MethodHead || hasCL || !bodyAllowed(code)) {
			keepAlive10 = true
		} else {
			closeAfter = true
		}
	}
	if sc.body != nil && !sc.body.eof.Load() && !sc.body.discard() {
		closeAfter = true // the body is not read; the connection ends
	}

	bw := sc.bw
	writeStatusLine(bw, is11, code)
	bw.Write(sc.hdrBuf)
	if bodyAllowed(code) {
		_, haveType := h["Content-Type"]
		if !haveType && te == "" && len(h.Get("Content-Encoding")) == 0 && len(pre) > 0 {
			bw.WriteString("Content-Type: ")
			bw.WriteString(http.DetectContentType(pre))
			bw.WriteString("\r\n")
		}
	}
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		if bw.Available() < len(http.TimeFormat) {
			bw.Flush()
		}
		bw.Write(time.Now().UTC().AppendFormat(bw.AvailableBuffer(), http.TimeFormat))
		bw.WriteString("\r\n")
	}
	switch {
	case req.Method == http.MethodHead || !bodyAllowed(code):
		if hasCL && bodyAllowed(code) {
			writeContentLength(bw, length)
		}
	case hasCL:
		writeContentLength(bw, length)
	case is11 && te != "identity":
		w.chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		closeAfter = true // delimited by the end of the connection
	}
	switch {
	case closeAfter && is11:
		bw.WriteString("Connection: close\r\n")
	case keepAlive10 && !closeAfter:
		if _, set := h["Connection"]; !set {
			bw.WriteString("Connection: keep-alive\r\n")
		} else {
			for _, v := range h["Connection"] {
				bw.Write(appendField(sc.hdrBuf[:0], "Connection", v))
			}
		}
	case !closeAfter:
		for _, v := range h["Connection"] {
			bw.Write(appendField(sc.hdrBuf[:0], "Connection", v))
		}
	}
	bw.WriteString("\r\n")
	w.closeAfter = closeAfter
	if len(pre) > 0 {
		w.writeBody(pre)
	}
}

func writeContentLength(bw *bufio.Writer, n int64) {
	bw.WriteString("Content-Length: ")
	writeInt(bw, n, 10)
	bw.WriteString("\r\n")
}

// writeInt writes n in base, formatted in the writer's own buffer.
func writeInt(bw *bufio.Writer, n int64, base int) {
	if bw.Available() < 20 {
		bw.Flush()
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), n, base))
}

// finish completes the response once the handler returned.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.done = true
	if !w.committed {
		w.commit()
	}
	if w.chunked {
		bw := w.sc.bw
		bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			k = http.CanonicalHeaderKey(k)
			for _, v := range w.header[k] {
				bw.Write(appendField(w.sc.hdrBuf[:0], k, v))
			}
		}
		for k, vv := range w.header {
			if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
				for _, v := range vv {
					bw.Write(appendField(w.sc.hdrBuf[:0], k[len(http.TrailerPrefix):], v))
				}
			}
		}
		bw.WriteString("\r\n")
	}
	if w.contentLength >= 0 && !w.noBody && w.written != w.contentLength {
		w.closeAfter = true // the client waits for what never comes
	}
}

func writeStatusLine(bw *bufio.Writer, is11 bool, code int) {
	if is11 {
		bw.WriteString("HTTP/1.1 ")
	} else {
		bw.WriteString("HTTP/1.0 ")
	}
	num := statusCode(code)
	bw.WriteString(num)
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		bw.WriteString(num)
	}
	bw.WriteString("\r\n")
}

// statusCode renders a three-digit code.
func statusCode(code int) string {
	switch code {
	case 200:
		return "200"
	case 201:
		return "201"
	case 204:
		return "204"
	case 304:
		return "304"
	case 400:
		return "400"
	case 403:
		return "403"
	case 404:
		return "404"
	case 500:
		return "500"
	case 502:
		return "502"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}

// bodyAllowed reports whether a status may carry a body (RFC 9110).
func bodyAllowed(code int) bool {
	switch {
	case code >= 100 && code <= 199:
		return false
	case code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}
