package sniff_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
)

// patient is a detection timeout no client in these tests should reach.
const patient = 10 * time.Second

// transports are the two kinds of connection Detect is tested over. Each
// returns the client's end and the server's (accepted) end; both are closed
// when the test ends.
var transports = []struct {
	name string
	pair func(t testing.TB) (client, server net.Conn)
}{
	{"pipe", pipePair},
	{"tcp", tcpPair},
}

func pipePair(t testing.TB) (net.Conn, net.Conn) {
	c, s := net.Pipe()
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		accepted <- result{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-accepted
	if r.err != nil {
		c.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { c.Close(); r.c.Close() })
	return c, r.c
}

// goWrite writes each chunk to c in turn from a goroutine, and returns a
// function that waits for it and reports its error.
func goWrite(t *testing.T, c net.Conn, chunks ...[]byte) (wait func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for _, b := range chunks {
			if _, err := c.Write(b); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return func() {
		t.Helper()
		if err := <-done; err != nil {
			t.Errorf("client write: %v", err)
		}
	}
}

func bytewise(s string) [][]byte {
	var chunks [][]byte
	for i := range len(s) {
		chunks = append(chunks, []byte{s[i]})
	}
	return chunks
}

var tlsClientHello = "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + strings.Repeat("\x42", 160)

var payloads = []struct {
	name string
	in   string
	want sniff.Protocol
}{
	{"HTTP1", "POST /v1/items HTTP/1.1\r\nHost: orders\r\nContent-Length: 40\r\n\r\n" + strings.Repeat("x", 40), sniff.HTTP1},
	{"HTTP2", preface + settingsFrame + strings.Repeat("\x00", 60), sniff.HTTP2},
	{"TLS", tlsClientHello, sniff.TLS},
	{"SSH", "SSH-2.0-OpenSSH_9.6\r\n" + strings.Repeat("\x07", 80), sniff.Opaque},
	{"PostgreSQL", "\x00\x00\x00\x08\x04\xd2\x16\x2f", sniff.Opaque},
	{"Redis", "*1\r\n$4\r\nPING\r\n", sniff.Opaque},
	{"one byte", "G", sniff.Opaque}, // followed by EOF
	{"h2 preface prefix then EOF", preface[:20], sniff.Opaque},
}

// TestDetect sends each payload in one write and one byte per write, and
// checks the protocol and that the returned connection yields exactly the
// bytes sent, then EOF.
func TestDetect(t *testing.T) {
	for _, tr := range transports {
		for _, pl := range payloads {
			for _, mode := range []string{"whole", "bytewise"} {
				t.Run(tr.name+"/"+pl.name+"/"+mode, func(t *testing.T) {
					client, server := tr.pair(t)
					chunks := [][]byte{[]byte(pl.in)}
					if mode == "bytewise" {
						chunks = bytewise(pl.in)
					}
					wait := goWrite(t, client, chunks...)
					done := make(chan struct{})
					go func() {
						wait()
						client.Close()
						close(done)
					}()
					defer func() { <-done }()

					p, c, err := sniff.Detect(server, patient)
					if err != nil {
						t.Fatalf("Detect: %v", err)
					}
					if p != pl.want {
						t.Errorf("Detect = %v; want %v", p, pl.want)
					}
					got, err := io.ReadAll(c)
					if err != nil {
						t.Fatalf("reading the detected conn: %v", err)
					}
					if string(got) != pl.in {
						t.Errorf("read back %q; want %q", got, pl.in)
					}
					if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
						t.Errorf("Read after EOF = %d, %v; want 0, EOF", n, err)
					}
				})
			}
		}
	}
}

// TestDetectServerFirst: a client that waits for the server is opaque once
// the timeout passes, and the connection then works both ways with no
// deadline left behind.
func TestDetectServerFirst(t *testing.T) {
	const timeout = 50 * time.Millisecond
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			client, server := tr.pair(t)
			start := time.Now()
			p, c, err := sniff.Detect(server, timeout)
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if p != sniff.Opaque {
				t.Errorf("Detect = %v; want Opaque", p)
			}
			if el := time.Since(start); el < timeout {
				t.Errorf("Detect returned after %v, before the %v timeout", el, timeout)
			}

			// The server speaks first, as SMTP or MySQL would.
			const greeting, hello = "220 mail.example ESMTP\r\n", "EHLO client.example\r\n"
			clientDone := make(chan error, 1)
			go func() {
				buf := make([]byte, len(greeting))
				if _, err := io.ReadFull(client, buf); err != nil || string(buf) != greeting {
					clientDone <- errors.Join(errors.New("client read the greeting wrong: "+string(buf)), err)
					return
				}
				time.Sleep(3 * timeout) // past where the detection deadline was
				_, err := client.Write([]byte(hello))
				clientDone <- err
			}()
			if _, err := c.Write([]byte(greeting)); err != nil {
				t.Fatalf("server write: %v", err)
			}
			buf := make([]byte, len(hello))
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatalf("server read after detection (deadline not cleared?): %v", err)
			}
			if string(buf) != hello {
				t.Errorf("server read %q; want %q", buf, hello)
			}
			if err := <-clientDone; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDetectSlowPrefix: a prefix that has not decided when the timeout
// passes is opaque, and is replayed in front of what follows.
func TestDetectSlowPrefix(t *testing.T) {
	const timeout = 50 * time.Millisecond
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			client, server := tr.pair(t)
			wait := goWrite(t, client, []byte("GE"))
			p, c, err := sniff.Detect(server, timeout)
			wait()
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if p != sniff.Opaque {
				t.Errorf("Detect = %v; want Opaque for an undecided prefix", p)
			}
			const rest = "T / HTTP/1.0\r\n\r\n"
			wait = goWrite(t, client, []byte(rest))
			buf := make([]byte, len("GE"+rest))
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
			wait()
			if string(buf) != "GE"+rest {
				t.Errorf("read %q; want %q", buf, "GE"+rest)
			}
		})
	}
}

// TestDetectClosedEarly: a client that closes before sending anything is an
// error the caller handles by closing.
func TestDetectClosedEarly(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			client, server := tr.pair(t)
			client.Close()
			p, c, err := sniff.Detect(server, patient)
			if err == nil || c != nil || p != sniff.Opaque {
				t.Fatalf("Detect = %v, %v, %v; want Opaque, nil, an error", p, c, err)
			}
			// net.Pipe refuses the deadline once the peer closed; a
			// socket reads EOF.
			if tr.name == "tcp" && !errors.Is(err, io.EOF) {
				t.Errorf("Detect error %v; want it to wrap io.EOF", err)
			}
		})
	}
}

// TestDetectReadError: a read error after some bytes is reported by the
// returned connection once they are replayed, not by Detect.
func TestDetectReadError(t *testing.T) {
	boom := errors.New("connection reset")
	s := &scriptConn{chunks: []string{"GE"}, err: boom}
	p, c, err := sniff.Detect(s, patient)
	if err != nil || p != sniff.Opaque {
		t.Fatalf("Detect = %v, %v; want Opaque, nil", p, err)
	}
	got, err := io.ReadAll(c)
	if string(got) != "GE" || !errors.Is(err, boom) {
		t.Errorf("ReadAll = %q, %v; want %q, %v", got, err, "GE", boom)
	}
	if s.reads != 2 {
		t.Errorf("the wrapped conn was read %d times; want 2 (the error is kept, not read again)", s.reads)
	}

	// The same through WriteTo.
	s = &scriptConn{chunks: []string{"GE"}, err: boom}
	_, c, _ = sniff.Detect(s, patient)
	var buf bytes.Buffer
	if n, err := io.Copy(&buf, c); n != 2 || buf.String() != "GE" || !errors.Is(err, boom) {
		t.Errorf("io.Copy = %d, %q, %v; want 2, %q, %v", n, buf.String(), err, "GE", boom)
	}
}

// TestDetectNoProgress: a reader that returns nothing and no error forever
// does not hang Detect.
func TestDetectNoProgress(t *testing.T) {
	_, c, err := sniff.Detect(&scriptConn{empty: true}, patient)
	if !errors.Is(err, io.ErrNoProgress) || c != nil {
		t.Errorf("Detect = %v, %v; want nil, io.ErrNoProgress", c, err)
	}
}

// TestDetectDeadlines: Detect clears only the deadline it set.
func TestDetectDeadlines(t *testing.T) {
	t.Run("timeout set then cleared", func(t *testing.T) {
		s := &scriptConn{chunks: []string{"GET / HTTP/1.1\r\n"}}
		if _, _, err := sniff.Detect(s, time.Second); err != nil {
			t.Fatal(err)
		}
		if len(s.deadlines) != 2 || s.deadlines[0].IsZero() || !s.deadlines[1].IsZero() {
			t.Errorf("read deadlines set: %v; want one in the future, then the zero time", s.deadlines)
		}
	})
	t.Run("no timeout leaves the caller's deadline", func(t *testing.T) {
		client, server := pipePair(t)
		if err := server.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		wait := goWrite(t, client, []byte("\x00"))
		p, c, err := sniff.Detect(server, 0)
		wait()
		if err != nil || p != sniff.Opaque {
			t.Fatalf("Detect = %v, %v; want Opaque, nil", p, err)
		}
		buf := make([]byte, 8)
		if n, err := c.Read(buf); n != 1 || err != nil {
			t.Fatalf("Read = %d, %v; want the peeked byte", n, err)
		}
		if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read = %v; want the caller's deadline to expire", err)
		}
	})
	t.Run("no timeout sets nothing", func(t *testing.T) {
		s := &scriptConn{chunks: []string{"\x16\x03\x03"}}
		if _, _, err := sniff.Detect(s, 0); err != nil {
			t.Fatal(err)
		}
		if len(s.deadlines) != 0 {
			t.Errorf("read deadlines set: %v; want none", s.deadlines)
		}
	})
	t.Run("setting fails", func(t *testing.T) {
		s := &scriptConn{deadlineErr: errors.New("no deadlines here")}
		if _, c, err := sniff.Detect(s, time.Second); err == nil || c != nil || s.reads != 0 {
			t.Errorf("Detect = %v, %v after %d reads; want an error before reading", c, err, s.reads)
		}
	})
}

// TestConnPassthroughTCP: the returned conn exposes the socket underneath:
// half-close, raw access for SO_ORIGINAL_DST, addresses, deadlines.
func TestConnPassthroughTCP(t *testing.T) {
	client, server := tcpPair(t)
	wait := goWrite(t, client, []byte("GET / HTTP/1.1\r\n\r\n"))
	_, c, err := sniff.Detect(server, patient)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	sc := c.(*sniff.Conn)
	if sc.Unwrap() != server {
		t.Errorf("Unwrap() = %v; want the accepted conn", sc.Unwrap())
	}
	if c.LocalAddr() != server.LocalAddr() || c.RemoteAddr() != server.RemoteAddr() {
		t.Errorf("addresses %v, %v; want %v, %v", c.LocalAddr(), c.RemoteAddr(), server.LocalAddr(), server.RemoteAddr())
	}

	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var fd uintptr
	if err := raw.Control(func(f uintptr) { fd = f }); err != nil || fd == 0 {
		t.Errorf("RawConn.Control: fd %d, %v", fd, err)
	}

	// Half-close: the client sees EOF and can still send.
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("client Read after CloseWrite = %d, %v; want EOF", n, err)
	}
	if _, err := c.Read(make([]byte, 64)); err != nil {
		t.Fatalf("reading the replay: %v", err)
	}
	wait = goWrite(t, client, []byte("more"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "more" {
		t.Errorf("read after half-close = %q, %v; want %q", buf, err, "more")
	}
	wait()

	if err := c.SetDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past SetDeadline = %v; want deadline exceeded", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := server.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write to the wrapped conn after Close = %v; want net.ErrClosed", err)
	}
}

// TestConnPassthroughPipe: a wrapped conn that is not a socket says so.
func TestConnPassthroughPipe(t *testing.T) {
	client, server := pipePair(t)
	wait := goWrite(t, client, []byte("SSH-2.0-x\r\n"))
	_, c, err := sniff.Detect(server, patient)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CloseWrite on a pipe = %v; want ErrUnsupported", err)
	}
	if _, err := c.(syscall.Conn).SyscallConn(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("SyscallConn on a pipe = %v; want ErrUnsupported", err)
	}
}

// TestSpliceThrough proxies a detected TCP connection to another with
// io.Copy both ways, as the opaque path does, and checks every byte.
func TestSpliceThrough(t *testing.T) {
	app, accepted := tcpPair(t)
	upstream, backend := tcpPair(t)
	in := "SSH-2.0-OpenSSH_9.6\r\n" + strings.Repeat("0123456789", 50_000)
	out := strings.Repeat("abcdefghij", 30_000)

	wait := goWrite(t, app, []byte(in))
	_, c, err := sniff.Detect(accepted, patient)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var got, gotBack []byte
	wg.Go(func() { // app -> upstream, through the detected conn's WriteTo
		if _, err := io.Copy(upstream, c); err != nil {
			t.Errorf("copy up: %v", err)
		}
		upstream.(*net.TCPConn).CloseWrite()
	})
	wg.Go(func() { // upstream -> app, through the detected conn's ReadFrom
		if _, err := io.Copy(c, upstream); err != nil {
			t.Errorf("copy down: %v", err)
		}
		c.(*sniff.Conn).CloseWrite()
	})
	wg.Go(func() {
		var err error
		if got, err = io.ReadAll(backend); err != nil {
			t.Errorf("backend read: %v", err)
		}
	})
	wg.Go(func() {
		var err error
		if gotBack, err = io.ReadAll(app); err != nil {
			t.Errorf("app read: %v", err)
		}
	})
	wait()
	app.(*net.TCPConn).CloseWrite()
	if _, err := backend.Write([]byte(out)); err != nil {
		t.Fatal(err)
	}
	backend.(*net.TCPConn).CloseWrite()
	wg.Wait()
	if string(got) != in {
		t.Errorf("backend got %d bytes; want the %d the app sent", len(got), len(in))
	}
	if string(gotBack) != out {
		t.Errorf("app got %d bytes; want the %d the backend sent", len(gotBack), len(out))
	}
}

// TestConcurrentReads: Read may be called from several goroutines, as on any
// net.Conn; every byte arrives once.
func TestConcurrentReads(t *testing.T) {
	client, server := pipePair(t)
	in := "GET / HTTP/1.1\r\n" + strings.Repeat("h", 1000)
	wait := goWrite(t, client, bytewise(in)...)
	_, c, err := sniff.Detect(server, patient)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			buf := make([]byte, 3)
			for {
				n, err := c.Read(buf)
				mu.Lock()
				total += n
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wait()
	client.Close()
	wg.Wait()
	if total != len(in) {
		t.Errorf("read %d bytes in all; want %d", total, len(in))
	}
}

// FuzzDetect feeds input in fuzzed chunk sizes and checks that Detect agrees
// with Classify and that the returned conn replays the input exactly.
func FuzzDetect(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), []byte{1})
	f.Add([]byte(preface+settingsFrame), []byte{3, 5, 7})
	f.Add([]byte(tlsClientHello), []byte{2})
	f.Add([]byte("GE"), []byte{0})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, in, sizes []byte) {
		s := &scriptConn{}
		for rest, i := in, 0; len(rest) > 0; i++ {
			n := 1
			if len(sizes) > 0 {
				n += int(sizes[i%len(sizes)]) % 70
			}
			n = min(n, len(rest))
			s.chunks = append(s.chunks, string(rest[:n]))
			rest = rest[n:]
		}
		p, c, err := sniff.Detect(s, patient)
		if len(in) == 0 {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("Detect of nothing = %v; want EOF", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Detect: %v", err)
		}
		want := sniff.Opaque
		for n := 1; n <= len(in); n++ {
			if q, ok := sniff.Classify(in[:n]); ok {
				want = q
				break
			}
		}
		if p != want {
			t.Errorf("Detect = %v; Classify decides %v", p, want)
		}
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, in) {
			t.Errorf("ReadAll = %q, %v; want %q", got, err, in)
		}
	})
}

// scriptConn is a net.Conn whose reads return chunks in turn, then err (EOF
// when nil). It records the read deadlines set on it.
type scriptConn struct {
	net.Conn    // nil: methods not overridden panic
	chunks      []string
	err         error
	empty       bool // every read returns 0, nil
	reads       int
	deadlines   []time.Time
	deadlineErr error
}

func (s *scriptConn) Read(p []byte) (int, error) {
	s.reads++
	if s.empty {
		return 0, nil
	}
	if len(s.chunks) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; s.chunks[0] == "" {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

func (s *scriptConn) SetReadDeadline(t time.Time) error {
	if s.deadlineErr != nil {
		return s.deadlineErr
	}
	s.deadlines = append(s.deadlines, t)
	return nil
}

// BenchmarkDetectHTTP1 measures detection of an HTTP/1.1 request: over an
// in-memory conn (Detect's own cost; the one allocation is the returned
// conn with its buffer) and over loopback TCP (with the syscalls).
func BenchmarkDetectHTTP1(b *testing.B) {
	const req = "GET /api/v1/orders?limit=10 HTTP/1.1\r\nHost: orders.shop.svc\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
	b.Run("mem", func(b *testing.B) {
		b.ReportAllocs()
		s := &memConn{}
		for b.Loop() {
			s.data = req
			p, c, err := sniff.Detect(s, time.Second)
			if err != nil || p != sniff.HTTP1 {
				b.Fatal(p, err)
			}
			_ = c
		}
	})
	b.Run("tcp", func(b *testing.B) {
		b.ReportAllocs()
		client, server := tcpPair(b)
		msg, buf := []byte(req), make([]byte, len(req))
		for b.Loop() {
			if _, err := client.Write(msg); err != nil {
				b.Fatal(err)
			}
			p, c, err := sniff.Detect(server, time.Second)
			if err != nil || p != sniff.HTTP1 {
				b.Fatal(p, err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"http1", "GET / HTTP/1.1\r\n"},
		{"h2c", preface},
		{"tls", "\x16\x03\x01\x02\x00"},
		{"ssh", "SSH-2.0-x"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := []byte(bc.in)
			for b.Loop() {
				sniff.Classify(buf)
			}
		})
	}
}

// memConn is the cheapest conn Detect can run over: reads drain data.
type memConn struct {
	net.Conn
	data string
}

func (m *memConn) Read(p []byte) (int, error) {
	if m.data == "" {
		return 0, io.EOF
	}
	n := copy(p, m.data)
	m.data = m.data[n:]
	return n, nil
}

func (m *memConn) SetReadDeadline(time.Time) error { return nil }

func TestDetectAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation changes allocations")
	}
	s := &memConn{}
	allocs := testing.AllocsPerRun(100, func() {
		s.data = "GET / HTTP/1.1\r\n\r\n"
		if _, _, err := sniff.Detect(s, time.Second); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("Detect allocates %v times; want 1, the returned conn", allocs)
	}
}
