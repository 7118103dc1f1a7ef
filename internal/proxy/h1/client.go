package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Defaults of a Client.
const (
	DefaultMaxIdlePerHost = 256
	DefaultIdleTimeout    = 90 * time.Second
	DefaultDialTimeout    = 5 * time.Second
)

// syncBodyMax is the largest request body of known length written by the
// goroutine that calls RoundTrip: one that the app's socket buffer holds
// even when the app answers without reading it.
const syncBodyMax = 64 << 10

// probeIdle is how long a pooled connection may have been idle before it
// is checked for a close by the app on reuse. Apps close idle connections
// after seconds; a request that meets a close all the same is retried when
// that is safe.
const probeIdle = time.Millisecond

// Client sends HTTP/1.1 requests over pooled keep-alive connections. Its
// zero value is ready to use; it is safe for concurrent use.
type Client struct {
	// DialContext connects to an address; nil uses a net.Dialer with
	// DefaultDialTimeout and TCP keep-alives every 30s.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdlePerHost bounds idle connections kept per address; zero means
	// DefaultMaxIdlePerHost.
	MaxIdlePerHost int
	// IdleTimeout closes connections idle for longer; zero means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration

	mu   sync.Mutex
	idle map[string][]*conn // by address, most recently used last
}

var _ http.RoundTripper = (*Client)(nil)

var defaultDialer = &net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second}

// RoundTrip sends req to req.URL.Host and returns the response, whose body
// must be read to its end or closed. The request goes out as HTTP/1.1 with
// req.Host (else the URL's host) as Host; its Header must not hold
// Transfer-Encoding, Content-Length, Trailer or Connection options of its
// own: framing follows ContentLength, Body and Trailer.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Host == "" {
		return nil, errors.New("h1: request without a host to send it to")
	}
	if err := validRequest(req); err != nil {
		return nil, err
	}
	addr := req.URL.Host
	for attempt := 0; ; attempt++ {
		pc, reused, err := c.get(req.Context(), addr)
		if err != nil {
			return nil, err
		}
		res, nothingRead, err := pc.roundTrip(req)
		if err == nil {
			return res, nil
		}
		// The app closed a kept-alive connection as the request went out:
		// nothing was received, and a request without a body that is safe
		// to repeat goes again, on a new connection (as net/http does).
		if reused && attempt == 0 && nothingRead && req.Body == nil && idempotent(req) && req.Context().Err() == nil {
			continue
		}
		return nil, err
	}
}

// CloseIdleConnections closes the connections waiting in the pool.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, conns := range idle {
		for _, pc := range conns {
			pc.nc.Close()
		}
	}
}

func (c *Client) maxIdle() int {
	if c.MaxIdlePerHost > 0 {
		return c.MaxIdlePerHost
	}
	return DefaultMaxIdlePerHost
}

func (c *Client) idleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return DefaultIdleTimeout
}

// get returns a pooled connection to addr that still looks open, or a new
// one.
func (c *Client) get(ctx context.Context, addr string) (pc *conn, reused bool, err error) {
	now := time.Now()
	for {
		c.mu.Lock()
		conns := c.idle[addr]
		if len(conns) == 0 {
			c.mu.Unlock()
			break
		}
		pc = conns[len(conns)-1]
		conns[len(conns)-1] = nil
		c.idle[addr] = conns[:len(conns)-1]
		pc.pooled = false
		c.mu.Unlock()
		if now.Sub(pc.idleSince) < probeIdle || pc.alive() {
			return pc, true, nil
		}
		pc.nc.Close()
	}
	dial := c.DialContext
	if dial == nil {
		dial = defaultDialer.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return newConn(c, addr, nc), false, nil
}

// put returns a connection whose exchange ended cleanly to the pool.
func (c *Client) put(pc *conn) {
	pc.idleSince = time.Now()
	c.mu.Lock()
	conns := c.idle[pc.addr]
	if len(conns) >= c.maxIdle() {
		c.mu.Unlock()
		pc.nc.Close()
		return
	}
	if c.idle == nil {
		c.idle = make(map[string][]*conn)
	}
	c.idle[pc.addr] = append(conns, pc)
	pc.pooled = true
	if pc.idleTimer == nil {
		pc.idleTimer = time.AfterFunc(c.idleTimeout(), pc.expire)
	} else {
		pc.idleTimer.Reset(c.idleTimeout())
	}
	c.mu.Unlock()
}

// remove takes a connection out of the pool; it reports whether it was
// there.
func (c *Client) remove(pc *conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !pc.pooled {
		return false
	}
	conns := c.idle[pc.addr]
	for i, x := range conns {
		if x == pc {
			copy(conns[i:], conns[i+1:])
			conns[len(conns)-1] = nil
			c.idle[pc.addr] = conns[:len(conns)-1]
			break
		}
	}
	pc.pooled = false
	return true
}

// conn is one connection to the app. It carries one exchange at a time.
type conn struct {
	c    *Client
	addr string
	nc   net.Conn
	raw  syscall.RawConn // nil when nc has none
	br   *bufio.Reader
	bw   *bufio.Writer
	hb   headerBlock

	// Guarded by c.mu.
	pooled    bool
	idleSince time.Time
	idleTimer *time.Timer

	// State of the exchange in progress.
	nothingRead bool        // no byte of the response arrived yet
	stopCancel  func() bool // stops the context watch, nil without one
	bodyDone    chan error  // from the request body writer, nil without one
	aborted     atomic.Bool // the context ended the exchange
	peekFn      func(uintptr) bool
	peekOK      bool
}

func newConn(c *Client, addr string, nc net.Conn) *conn {
	pc := &conn{
		c:    c,
		addr: addr,
		nc:   nc,
		br:   bufio.NewReaderSize(nc, 4<<10),
		bw:   bufio.NewWriterSize(nc, 4<<10),
	}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			pc.raw = raw
			pc.peekFn = func(fd uintptr) bool {
				pc.peekOK = peekIdle(fd)
				return true
			}
		}
	}
	return pc
}

// alive reports whether an idle connection has neither been closed by the
// app nor received anything unasked.
func (pc *conn) alive() bool {
	if pc.raw == nil {
		return true
	}
	if err := pc.raw.Read(pc.peekFn); err != nil {
		return false
	}
	return pc.peekOK
}

// expire closes the connection if it is still idle after the timeout.
func (pc *conn) expire() {
	if pc.c.remove(pc) {
		pc.nc.Close()
	}
}

// abort ends the exchange because its context ended.
func (pc *conn) abort() {
	pc.aborted.Store(true)
	pc.nc.Close()
}

// release ends the exchange: the connection goes back to the pool when
// reusable, else it is closed.
func (pc *conn) release(reusable bool) {
	if pc.stopCancel != nil && !pc.stopCancel() {
		reusable = false // abort ran or runs
	}
	pc.stopCancel = nil
	if pc.bodyDone != nil {
		select {
		case err := <-pc.bodyDone:
			if err != nil {
				reusable = false
			}
		default:
			// The request body is still being written: the app answered
			// early. The connection cannot carry another request.
			reusable = false
		}
		pc.bodyDone = nil
	}
	if reusable {
		pc.c.put(pc)
		return
	}
	pc.nc.Close()
}

// roundTrip sends req on pc and reads its response head. On an error it
// also tells whether no byte of a response arrived: read before pc is
// released, since another request may take pc once it is.
func (pc *conn) roundTrip(req *http.Request) (res *http.Response, nothingRead bool, err error) {
	pc.nothingRead = true
	pc.aborted.Store(false)
	ctx := req.Context()
	if ctx.Done() != nil {
		if err := ctx.Err(); err != nil {
			pc.release(true)
			return nil, true, err
		}
		pc.stopCancel = context.AfterFunc(ctx, pc.abort)
	}
	defer func() {
		if err != nil {
			nothingRead = pc.nothingRead
			pc.release(false)
			if pc.aborted.Load() {
				err = context.Cause(ctx)
			}
		}
	}()
	if err := pc.writeRequest(req); err != nil {
		return nil, false, err
	}
	trace := httptrace.ContextClientTrace(ctx)
	for n1xx := 0; ; n1xx++ {
		res, err = pc.readResponse(req)
		if err != nil {
			return nil, false, err
		}
		code := res.StatusCode
		if code < 100 || code > 199 {
			return res, false, nil
		}
		if code == http.StatusSwitchingProtocols {
			return nil, false, errors.New("h1: the app switched protocols unasked")
		}
		if n1xx == 10 {
			return nil, false, errors.New("h1: too many 1xx responses")
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, false, err
			}
		}
	}
}

// writeRequest writes the request head and, when small and of known
// length, its body; a larger or unknown body is written by a goroutine.
func (pc *conn) writeRequest(req *http.Request) error {
	bw := pc.bw
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	writeRequestURI(bw, req)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua := req.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(textproto.TrimString(ua[0]))
		bw.WriteString("\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}

	var body io.Reader = req.Body
	length := req.ContentLength
	if req.Body == nil || req.Body == http.NoBody {
		body, length = nil, 0
	}
	if length < 0 && usuallyWithoutBody(req.Method) {
		// As net/http does, look before announcing a body that servers
		// may not expect: an empty one is none.
		var one [1]byte
		n, err := io.ReadFull(body, one[:])
		switch {
		case n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF):
			body, length = nil, 0
		case err != nil:
			return fmt.Errorf("h1: reading the request body: %w", err)
		default:
			body = io.MultiReader(bytes.NewReader(one[:]), body)
		}
	}
	chunked := length < 0
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			bw.WriteString("Trailer: ")
			first := true
			for k := range req.Trailer {
				if !first {
					bw.WriteString(",")
				}
				first = false
				bw.WriteString(k)
			}
			bw.WriteString("\r\n")
		}
	case length > 0 || sendsZeroLength(req.Method):
		writeContentLength(bw, length)
	}
	bw.WriteString("\r\n")

	if body == nil {
		return pc.flush()
	}
	if !chunked && length <= syncBodyMax {
		if err := writeBody(bw, body, length); err != nil {
			return err
		}
		return pc.flush()
	}
	if err := pc.flush(); err != nil {
		return err
	}
	done := make(chan error, 1)
	pc.bodyDone = done
	go func() {
		var err error
		if chunked {
			err = writeChunked(bw, body, req)
		} else {
			err = writeBody(bw, body, length)
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			// The response cannot be trusted to follow; and the app must
			// not take a truncated body for a whole one.
			pc.nc.Close()
		}
		done <- err
	}()
	return nil
}

func (pc *conn) flush() error {
	if err := pc.bw.Flush(); err != nil {
		return err
	}
	return nil
}

// writeRequestURI writes the request target as net/http does
// (URL.RequestURI), without building it.
func writeRequestURI(bw *bufio.Writer, req *http.Request) {
	u := req.URL
	if u.Opaque != "" {
		if len(u.Opaque) > 1 && u.Opaque[0] == '/' && u.Opaque[1] == '/' {
			bw.WriteString(u.Scheme)
			bw.WriteByte(':')
		}
		bw.WriteString(u.Opaque)
	} else if p := u.EscapedPath(); p != "" {
		bw.WriteString(p)
	} else {
		bw.WriteByte('/')
	}
	if u.ForceQuery || u.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
}

// writeBody copies exactly length bytes of body, read straight into the
// writer's buffer.
func writeBody(bw *bufio.Writer, body io.Reader, length int64) error {
	var n int64
	for n < length {
		if bw.Available() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		buf := bw.AvailableBuffer()
		buf = buf[:min(int64(cap(buf)), length-n)]
		m, err := body.Read(buf)
		bw.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("h1: reading the request body: %w", err)
		}
	}
	if n != length {
		return fmt.Errorf("h1: request body of %d bytes, announced %d", n, length)
	}
	return nil
}

var chunkBuffers = sync.Pool{New: func() any {
	b := make([]byte, 16<<10)
	return &b
}}

// writeChunked copies body in chunked encoding, then the trailers.
func writeChunked(bw *bufio.Writer, body io.Reader, req *http.Request) error {
	bp := chunkBuffers.Get().(*[]byte)
	defer chunkBuffers.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			writeInt(bw, int64(n), 16)
			bw.WriteString("\r\n")
			bw.Write(buf[:n])
			if _, err := bw.WriteString("\r\n"); err != nil {
				return err
			}
			// Stream: the app sees each piece as it comes.
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("h1: reading the request body: %w", rerr)
		}
	}
	bw.WriteString("0\r\n")
	for k, vv := range req.Trailer {
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// readResponse reads a response head and sets up its body.
func (pc *conn) readResponse(req *http.Request) (*http.Response, error) {
	hb := &pc.hb
	hb.buf = hb.buf[:0]
	if _, err := pc.br.Peek(1); err != nil {
		return nil, fmt.Errorf("h1: reading the response: %w", err)
	}
	pc.nothingRead = false
	status, err := hb.readLine(pc.br, MaxHeaderBytes)
	if err != nil {
		return nil, fmt.Errorf("h1: reading the response: %w", err)
	}
	if err := hb.readFields(pc.br, MaxHeaderBytes); err != nil {
		return nil, fmt.Errorf("h1: reading the response: %w", err)
	}
	s := string(hb.buf)
	res := &http.Response{Request: req}
	if err := parseStatusLine(res, s[status.start:status.end]); err != nil {
		return nil, err
	}
	res.Header = hb.header(s)
	chunked, length, err := frame(res)
	if err != nil {
		return nil, err
	}
	if res.StatusCode < 200 {
		return res, nil // no body, whatever it says
	}
	return res, pc.setBody(res, req, chunked, length)
}

// frame reads the framing fields of a response, refusing what net/http
// refuses, and removes those that do not pass on.
func frame(res *http.Response) (chunked bool, length int64, err error) {
	h := res.Header
	keepAlive := res.ProtoMinor == 1 && !httpguts.HeaderValuesContainsToken(h["Connection"], "close") ||
		res.ProtoMinor == 0 && httpguts.HeaderValuesContainsToken(h["Connection"], "keep-alive")
	res.Close = !keepAlive
	if te, ok := h["Transfer-Encoding"]; ok && res.ProtoMinor == 1 {
		if len(te) != 1 || !asciiEqualFold(textproto.TrimString(te[0]), "chunked") {
			return false, 0, fmt.Errorf("h1: unsupported transfer encoding %q", te)
		}
		chunked = true
		delete(h, "Transfer-Encoding")
		res.TransferEncoding = []string{"chunked"}
	}
	if length, err = contentLength(h); err != nil {
		return false, 0, err
	}
	if chunked {
		delete(h, "Content-Length") // chunked wins
		length = -1
	}
	if v, ok := h["Trailer"]; ok {
		delete(h, "Trailer")
		if chunked {
			if res.Trailer, err = declaredTrailers(v); err != nil {
				return false, 0, err
			}
		}
	}
	return chunked, length, nil
}

// parseStatusLine reads "HTTP/1.x 200 OK".
func parseStatusLine(res *http.Response, line string) error {
	proto, rest, ok := cutByte(line, ' ')
	if !ok {
		return fmt.Errorf("h1: malformed status line %q", line)
	}
	switch proto {
	case "HTTP/1.1":
		res.ProtoMinor = 1
	case "HTTP/1.0":
	default:
		return fmt.Errorf("h1: unsupported protocol in status line %q", line)
	}
	res.Proto, res.ProtoMajor = proto, 1
	code, _, _ := cutByte(rest, ' ')
	if len(code) != 3 || code[0] < '1' || code[0] > '9' || code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' {
		return fmt.Errorf("h1: malformed status code in %q", line)
	}
	res.StatusCode = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	res.Status = rest
	return nil
}

func cutByte(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// setBody frames the response body (RFC 9112, section 6.3).
func (pc *conn) setBody(res *http.Response, req *http.Request, chunked bool, length int64) error {
	if req.Method == http.MethodHead {
		res.ContentLength = length
		res.Body = http.NoBody
		pc.release(!res.Close)
		return nil
	}
	if res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified {
		res.ContentLength = 0
		res.Body = http.NoBody
		pc.release(!res.Close)
		return nil
	}
	b := &body{pc: pc, res: res}
	switch {
	case chunked:
		res.ContentLength = -1
		b.chunked = httputil.NewChunkedReader(pc.br)
	case length >= 0:
		res.ContentLength = length
		b.remaining = length
		if length == 0 {
			res.Body = http.NoBody
			pc.release(!res.Close)
			return nil
		}
	default:
		// Delimited by the end of the connection.
		res.ContentLength = -1
		res.Close = true
		b.untilClose = true
	}
	res.Body = b
	return nil
}

func declaredTrailers(v []string) (http.Header, error) {
	t := make(http.Header)
	for _, line := range v {
		for _, k := range splitComma(line) {
			k = textproto.CanonicalMIMEHeaderKey(k)
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return nil, fmt.Errorf("h1: bad trailer key %q", k)
			}
			t[k] = nil
		}
	}
	return t, nil
}

func splitComma(s string) []string {
	var out []string
	for s != "" {
		var f string
		f, s, _ = cutByte(s, ',')
		if f = textproto.TrimString(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// body is a response body read from the connection. Reading it to the end
// hands the connection back to the pool; closing it early closes the
// connection.
type body struct {
	pc         *conn
	res        *http.Response
	remaining  int64     // of a body with a length
	chunked    io.Reader // of a chunked body
	untilClose bool
	done       bool
	err        error
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	var (
		n   int
		err error
	)
	switch {
	case b.chunked != nil:
		n, err = b.chunked.Read(p)
		if err == io.EOF {
			if terr := b.readTrailers(); terr != nil {
				err = terr
			}
		}
	case b.untilClose:
		n, err = b.pc.br.Read(p)
	default:
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.pc.br.Read(p)
		b.remaining -= int64(n)
		switch {
		case b.remaining == 0:
			err = io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		b.finish(err)
		if b.pc.aborted.Load() {
			b.err = context.Cause(b.res.Request.Context())
		}
		return n, b.err
	}
	return n, nil
}

// readTrailers reads the trailer section of a chunked body into the
// response's Trailer.
func (b *body) readTrailers() error {
	hb := &b.pc.hb
	hb.buf = hb.buf[:0]
	hb.crlf = true
	defer func() { hb.crlf = false }()
	if err := hb.readFields(b.pc.br, MaxHeaderBytes); err != nil {
		return fmt.Errorf("h1: reading trailers: %w", err)
	}
	if len(hb.fields) == 0 {
		return nil
	}
	for k, vv := range hb.header(string(hb.buf)) {
		if b.res.Trailer == nil {
			b.res.Trailer = make(http.Header)
		}
		b.res.Trailer[k] = vv
	}
	return nil
}

// finish ends the body with err (io.EOF when complete).
func (b *body) finish(err error) {
	b.done, b.err = true, err
	b.pc.release(err == io.EOF && !b.untilClose && !b.res.Close)
}

func (b *body) Close() error {
	if !b.done {
		b.finish(errors.New("h1: read on closed response body"))
	}
	return nil
}

// validRequest refuses what would let a request's fields change the
// framing of the message the app reads.
func validRequest(req *http.Request) error {
	if !validMethod(req.Method) {
		return fmt.Errorf("h1: invalid method %q", req.Method)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("h1: invalid Host %q", host)
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("h1: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("h1: invalid value of header field %q", k)
			}
		}
	}
	for k, vv := range req.Trailer {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("h1: invalid trailer field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("h1: invalid value of trailer field %q", k)
			}
		}
	}
	if !validTarget(req.URL.Opaque) || !validTarget(req.URL.RawQuery) {
		return errors.New("h1: invalid request target")
	}
	return nil
}

// validTarget refuses what would end the request line early.
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// usuallyWithoutBody lists the methods whose body net/http looks at
// before announcing it.
func usuallyWithoutBody(m string) bool {
	switch m {
	case "GET", "HEAD", "DELETE", "OPTIONS", "PROPFIND", "SEARCH":
		return true
	}
	return false
}

// sendsZeroLength reports whether an empty body is announced with
// Content-Length: 0, as net/http does.
func sendsZeroLength(m string) bool {
	return m != "GET" && m != "HEAD"
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}
