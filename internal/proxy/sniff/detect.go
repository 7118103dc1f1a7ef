package sniff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// bufSize bounds what Detect buffers. Classify decides within MaxPeek bytes;
// the rest only lets the first read take a whole small packet.
const bufSize = 2 * MaxPeek

// maxEmptyReads bounds how many (0, nil) reads Detect tolerates in a row
// before it gives up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// Detect reads from c until Classify decides or timeout passes, and returns
// the protocol and a connection (a *Conn) that replays the bytes read, once,
// before reading on from c.
//
// A client that sends nothing within timeout is Opaque with a nil error:
// that is what a server-first protocol (MySQL, SMTP) looks like, and those
// connections pay the timeout as added latency. A client that sent only a
// prefix of a signature when timeout passes (for example "GE") is also
// Opaque: a guess is not a decision, and an opaque stream carries any
// protocol correctly.
//
// If the read fails (EOF, reset) after some bytes came, Detect returns
// Opaque, nil and a connection that replays those bytes and then reports
// the failure. If it fails before any byte came, Detect returns the error
// (wrapping io.EOF when the client closed), and the caller should close c.
// It also fails when it cannot set the read deadline (net.Pipe, for one,
// refuses once the peer has closed).
//
// A timeout > 0 replaces any read deadline on c for the duration of
// detection and clears it afterwards; with timeout <= 0 Detect leaves the
// deadline alone and waits as long as c allows.
func Detect(c net.Conn, timeout time.Duration) (Protocol, net.Conn, error) {
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return Opaque, nil, fmt.Errorf("sniff: set read deadline: %w", err)
		}
	}
	pc := &Conn{Conn: c}
	p, err := pc.fill()
	if timeout > 0 {
		// Clearing fails only on a conn already closed (or, for net.Pipe,
		// whose peer closed); its next read reports that, so the peeked
		// bytes are still worth returning.
		_ = c.SetReadDeadline(time.Time{})
	}
	if err != nil {
		return Opaque, nil, err
	}
	pc.replayed.Store(pc.r == pc.w)
	return p, pc, nil
}

// fill reads into c.buf until Classify decides. It returns an error only
// when nothing could be read; later failures are kept in c.err for Read.
func (c *Conn) fill() (Protocol, error) {
	for empty := 0; ; {
		n, err := c.Conn.Read(c.buf[c.w:])
		c.w += n
		p, done := Classify(c.buf[:c.w])
		timedOut := errors.Is(err, os.ErrDeadlineExceeded)
		if err != nil && !timedOut {
			if c.w == 0 {
				return Opaque, fmt.Errorf("sniff: read: %w", err)
			}
			c.err = err // reported once the peeked bytes are replayed
		}
		if done || err != nil {
			return p, nil
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty >= maxEmptyReads {
			if c.w == 0 {
				return Opaque, fmt.Errorf("sniff: read: %w", io.ErrNoProgress)
			}
			c.err = io.ErrNoProgress
			return Opaque, nil
		}
	}
}

// Conn is the connection Detect returns: it replays the bytes Detect peeked,
// exactly once, then reads from the connection it wraps. Every other method
// goes to the wrapped connection. Like any net.Conn it is safe for
// concurrent use.
type Conn struct {
	net.Conn

	// err is the read error Detect met after peeking some bytes; Read
	// returns it once they are replayed. Written only before Detect returns.
	err error

	// replayed is set once buf[r:w] is empty, so that reads after the
	// replay take no lock.
	replayed atomic.Bool
	mu       sync.Mutex
	r, w     int // guarded by mu once Detect returns
	buf      [bufSize]byte
}

var (
	_ net.Conn      = (*Conn)(nil)
	_ io.WriterTo   = (*Conn)(nil)
	_ io.ReaderFrom = (*Conn)(nil)
	_ syscall.Conn  = (*Conn)(nil)
)

// Read returns the peeked bytes not yet replayed, then reads from the
// wrapped connection.
func (c *Conn) Read(p []byte) (int, error) {
	if !c.replayed.Load() {
		c.mu.Lock()
		if c.r < c.w {
			n := copy(p, c.buf[c.r:c.w])
			c.r += n
			c.replayed.Store(c.r == c.w)
			c.mu.Unlock()
			return n, nil
		}
		c.mu.Unlock()
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// WriteTo writes the peeked bytes not yet replayed to w, then copies the
// wrapped connection to w, so that io.Copy keeps the kernel's zero-copy
// path (splice) between TCP connections.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if !c.replayed.Load() {
		c.mu.Lock()
		n, err := w.Write(c.buf[c.r:c.w])
		c.r += n
		c.replayed.Store(c.r == c.w)
		c.mu.Unlock()
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	if c.err != nil {
		if c.err == io.EOF {
			return total, nil
		}
		return total, c.err
	}
	n, err := io.Copy(w, c.Conn)
	return total + n, err
}

// ReadFrom copies r to the wrapped connection, keeping its zero-copy path.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}

// CloseWrite shuts down the writing side of the wrapped connection. It
// returns an error wrapping errors.ErrUnsupported when the wrapped
// connection cannot half-close (net.Pipe, for example); the caller should
// then fall back to Close.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("sniff: %T cannot half-close: %w", c.Conn, errors.ErrUnsupported)
}

// SyscallConn returns the raw connection of the wrapped connection, for
// socket options such as SO_ORIGINAL_DST. It returns an error wrapping
// errors.ErrUnsupported when the wrapped connection is not a socket.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, fmt.Errorf("sniff: %T is not a socket: %w", c.Conn, errors.ErrUnsupported)
}

// Unwrap returns the wrapped connection. Reading from it skips the peeked
// bytes that have not been replayed yet.
func (c *Conn) Unwrap() net.Conn { return c.Conn }
