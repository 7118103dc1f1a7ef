package retry

import (
	"errors"
	"io"
	"sync"
)

// DefaultReplayLimit is how many bytes of a body a Replay keeps when its
// limit is not positive.
const DefaultReplayLimit = 64 << 10

var (
	errRewound       = errors.New("retry: body rewound for another attempt")
	errNotReplayable = errors.New("retry: body consumed beyond what can be replayed")
	errClosed        = errors.New("retry: body closed")
)

// Replay reads a request body once and keeps its first bytes, up to a
// limit, so that the request can be sent again from the start. Each
// attempt reads through its own body from Rewind; an attempt's body stops
// working when the next is made (an HTTP transport may still read or
// close it after its round trip returned), and closing it leaves the
// source open. It is safe for concurrent use.
type Replay struct {
	src   io.ReadCloser
	limit int

	mu        sync.Mutex
	cond      sync.Cond // signalled when reading ends
	buf       []byte    // every byte read from src, unless overflow
	total     int64     // bytes read from src
	overflow  bool      // more than limit bytes were read: buf is gone
	srcErr    error     // what src returned at its end
	reading   bool      // a read of src is in progress
	gen       uint64    // the attempt whose body may read
	closed    bool
	committed bool // no attempt will follow: keep nothing more
	closeOnce sync.Once
}

// NewReplay wraps src, a body that must not be read elsewhere, keeping
// up to limit bytes (DefaultReplayLimit if limit ≤ 0). A nil src is an
// empty body.
func NewReplay(src io.ReadCloser, limit int) *Replay {
	if limit <= 0 {
		limit = DefaultReplayLimit
	}
	r := &Replay{src: src, limit: limit}
	r.cond.L = &r.mu
	if src == nil {
		r.srcErr = io.EOF
	}
	return r
}

// Rewind returns a body for a new attempt that reads from the start, and
// false if the body cannot be read from the start any more: more than the
// limit was consumed, or the Replay was closed. The body of the previous
// attempt stops working.
func (r *Replay) Rewind() (io.ReadCloser, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.overflow || r.closed || r.committed {
		return nil, false
	}
	r.gen++
	return &attemptBody{r: r, gen: r.gen}, true
}

// Replayable reports whether Rewind would succeed.
func (r *Replay) Replayable() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.overflow && !r.closed && !r.committed
}

// Commit says that the current attempt is the last: bytes read from the
// source from now on are not kept, and those kept are released once the
// attempt has read past them, so that a long request body (a gRPC
// stream) holds no buffer once its answer is committed. Rewind fails
// afterwards.
func (r *Replay) Commit() {
	r.mu.Lock()
	r.committed = true
	r.mu.Unlock()
}

// Close closes the source and makes every body stop working. It is
// idempotent.
func (r *Replay) Close() error {
	r.mu.Lock()
	r.closed = true
	r.buf = nil
	r.mu.Unlock()
	var err error
	r.closeOnce.Do(func() {
		if r.src != nil {
			err = r.src.Close()
		}
	})
	return err
}

// attemptBody is one attempt's view of a Replay.
type attemptBody struct {
	r   *Replay
	gen uint64
	pos int64
}

func (b *attemptBody) Read(p []byte) (int, error) {
	r := b.r
	r.mu.Lock()
	for {
		switch {
		case r.closed:
			r.mu.Unlock()
			return 0, errClosed
		case b.gen != r.gen:
			r.mu.Unlock()
			return 0, errRewound
		case b.pos < r.total:
			if r.overflow || b.pos >= int64(len(r.buf)) {
				// A previous attempt's read went past the limit while
				// this one was starting.
				r.mu.Unlock()
				return 0, errNotReplayable
			}
			n := copy(p, r.buf[b.pos:])
			b.pos += int64(n)
			if r.committed && b.pos >= int64(len(r.buf)) {
				r.buf = nil // caught up: the kept bytes are not needed again
			}
			r.mu.Unlock()
			return n, nil
		case r.srcErr != nil:
			err := r.srcErr
			r.mu.Unlock()
			return 0, err
		case !r.reading:
			return b.readSourceLocked(p)
		}
		// A previous attempt is still reading the source: its bytes
		// will be this attempt's too.
		r.cond.Wait()
	}
}

// readSourceLocked reads the source into p, without holding the lock
// while it blocks, and keeps what it read.
func (b *attemptBody) readSourceLocked(p []byte) (int, error) {
	r := b.r
	r.reading = true
	r.mu.Unlock()
	n, err := r.src.Read(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reading = false
	r.cond.Broadcast()
	if n > 0 {
		switch {
		case r.overflow || r.closed:
		case r.committed:
			r.buf = nil // this attempt reads the source: it has caught up
		case len(r.buf)+n <= r.limit:
			r.buf = append(r.buf, p[:n]...)
		default:
			r.overflow = true
			r.buf = nil
		}
		r.total += int64(n)
		b.pos += int64(n)
	}
	if err != nil {
		r.srcErr = err
	}
	return n, err
}

// Close ends the attempt's use of the body; the source stays open for
// the next attempt.
func (b *attemptBody) Close() error { return nil }
