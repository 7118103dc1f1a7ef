package retry

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// source is a body that counts its Close calls.
type source struct {
	io.Reader
	closes int
}

func (s *source) Close() error { s.closes++; return nil }

func readAll(t *testing.T, r *Replay) string {
	t.Helper()
	body, ok := r.Rewind()
	if !ok {
		t.Fatal("Rewind: not replayable")
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("reading attempt: %v", err)
	}
	body.Close()
	return string(b)
}

func TestReplay(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		limit     int
		firstRead int // bytes the first attempt reads, -1 for all
		wantOK    bool
	}{
		{"small body", 100, 0, -1, true},
		{"empty body", 0, 10, -1, true},
		{"exactly the limit", 1000, 1000, -1, true},
		{"one byte over", 1001, 1000, -1, false},
		{"large body, default limit", 1 << 20, 0, -1, false},
		{"large body, first attempt read a little", 1 << 20, 0, 1000, true},
		{"first attempt read nothing", 5000, 10, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := strings.Repeat("0123456789", tt.size/10+1)[:tt.size]
			src := &source{Reader: strings.NewReader(want)}
			r := NewReplay(src, tt.limit)
			body, ok := r.Rewind()
			if !ok {
				t.Fatal("first Rewind failed")
			}
			var got []byte
			var err error
			if tt.firstRead < 0 {
				got, err = io.ReadAll(body)
			} else {
				got = make([]byte, tt.firstRead)
				_, err = io.ReadFull(body, got)
			}
			if err != nil {
				t.Fatalf("first attempt: %v", err)
			}
			if !strings.HasPrefix(want, string(got)) {
				t.Fatal("first attempt read other bytes")
			}
			body.Close() // as a transport does: the source stays open
			if src.closes != 0 {
				t.Fatal("an attempt's Close closed the source")
			}
			if r.Replayable() != tt.wantOK {
				t.Fatalf("Replayable() = %v, want %v", r.Replayable(), tt.wantOK)
			}
			if !tt.wantOK {
				if _, ok := r.Rewind(); ok {
					t.Fatal("Rewind succeeded on a spent body")
				}
				return
			}
			if got := readAll(t, r); got != want {
				t.Fatalf("second attempt read %d bytes, want the %d of the body", len(got), len(want))
			}
			// Once the whole body went through, it replays again only if
			// it fits.
			limit := tt.limit
			if limit == 0 {
				limit = DefaultReplayLimit
			}
			if fits := tt.size <= limit; r.Replayable() != fits {
				t.Fatalf("after a whole read: Replayable() = %v, want %v", r.Replayable(), fits)
			} else if fits {
				if got := readAll(t, r); got != want {
					t.Fatalf("third attempt read %d bytes, want %d", len(got), len(want))
				}
			}
			r.Close()
			r.Close()
			if src.closes != 1 {
				t.Errorf("source closed %d times, want 1", src.closes)
			}
			if r.Replayable() {
				t.Error("replayable after Close")
			}
		})
	}
}

func TestReplayStaleAttempt(t *testing.T) {
	r := NewReplay(io.NopCloser(strings.NewReader("hello, world")), 0)
	first, _ := r.Rewind()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(first, buf); err != nil {
		t.Fatal(err)
	}
	second, _ := r.Rewind()
	if _, err := first.Read(buf); !errors.Is(err, errRewound) {
		t.Fatalf("stale attempt read: %v, want errRewound", err)
	}
	got, err := io.ReadAll(second)
	if err != nil || string(got) != "hello, world" {
		t.Fatalf("second attempt: %q, %v", got, err)
	}
	r.Close()
	if _, err := second.Read(buf); !errors.Is(err, errClosed) {
		t.Fatalf("read after Close: %v, want errClosed", err)
	}
}

func TestReplaySourceError(t *testing.T) {
	broken := errors.New("client went away")
	src := io.MultiReader(strings.NewReader("part"), iotestErr{broken})
	r := NewReplay(io.NopCloser(src), 0)
	for i := range 2 {
		body, ok := r.Rewind()
		if !ok {
			t.Fatal("not replayable")
		}
		got, err := io.ReadAll(body)
		if string(got) != "part" || !errors.Is(err, broken) {
			t.Fatalf("attempt %d: %q, %v; want the bytes then the source's error", i+1, got, err)
		}
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

func TestReplayNilSource(t *testing.T) {
	r := NewReplay(nil, 0)
	if got := readAll(t, r); got != "" {
		t.Fatalf("read %q from a nil body", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// blockingSource hands out one chunk when told to.
type blockingSource struct {
	entered chan struct{}
	release chan []byte
}

func (s *blockingSource) Read(p []byte) (int, error) {
	s.entered <- struct{}{}
	b, ok := <-s.release
	if !ok {
		return 0, io.EOF
	}
	return copy(p, b), nil
}

func (s *blockingSource) Close() error { return nil }

// TestReplayAttemptWhileStaleReadBlocks: a transport still reading the
// previous attempt's body when the next attempt starts: the next attempt
// waits for that read and gets its bytes.
func TestReplayAttemptWhileStaleReadBlocks(t *testing.T) {
	src := &blockingSource{entered: make(chan struct{}), release: make(chan []byte)}
	r := NewReplay(src, 0)
	first, _ := r.Rewind()
	staleDone := make(chan string)
	go func() {
		buf := make([]byte, 16)
		n, _ := first.Read(buf)
		staleDone <- string(buf[:n])
	}()
	<-src.entered // the first attempt is blocked in the source
	second, _ := r.Rewind()
	var got []byte
	var err error
	var wg sync.WaitGroup
	wg.Go(func() { got, err = io.ReadAll(second) })
	src.release <- []byte("hello")
	if s := <-staleDone; s != "hello" {
		t.Fatalf("stale read got %q", s)
	}
	<-src.entered // the second attempt reads on
	close(src.release)
	wg.Wait()
	if err != nil || string(got) != "hello" {
		t.Fatalf("second attempt: %q, %v", got, err)
	}
}

// TestReplayOverHTTP retries a PUT whose connection broke after the server
// read its body, through net/http's transport, which closes each attempt's
// body.
func TestReplayOverHTTP(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.Write(b)
	}))
	defer srv.Close()

	payload := bytes.Repeat([]byte("rampart "), 4096) // 32 KiB
	src := &source{Reader: bytes.NewReader(payload)}
	body := NewReplay(src, 0)
	defer body.Close()
	req := Request{Method: http.MethodPut, Body: body}
	budget, err := NewBudget(BudgetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{Backoff: Backoff{Rand: func() uint64 { return 0 }}}
	client := srv.Client()
	for n := 1; ; n++ {
		attempt, ok := body.Rewind()
		if !ok {
			t.Fatal("body not replayable")
		}
		hr, err := http.NewRequest(http.MethodPut, srv.URL, attempt)
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.Do(hr)
		if err != nil {
			if _, v := p.Next(budget, n, req, Result{Broken: true}, NoDeadline); v != Retry {
				t.Fatalf("attempt %d failed (%v), verdict %v", n, err, v)
			}
			continue
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("attempt %d: echoed %d bytes (%v), want %d", n, len(got), err, len(payload))
		}
		if n != 2 {
			t.Fatalf("succeeded on attempt %d, want 2", n)
		}
		break
	}
	if src.closes != 0 {
		t.Error("the transport's Close reached the source")
	}
}

func TestReplayCommitKeepsNothingMore(t *testing.T) {
	r := NewReplay(&source{Reader: strings.NewReader("0123456789")}, 64)
	first, _ := r.Rewind()
	buf := make([]byte, 4)
	if n, _ := first.Read(buf); string(buf[:n]) != "0123" {
		t.Fatalf("first attempt read %q", buf[:n])
	}
	second, _ := r.Rewind()
	r.Commit()
	if r.Replayable() {
		t.Fatal("replayable after Commit")
	}
	if _, ok := r.Rewind(); ok {
		t.Fatal("Rewind succeeded after Commit")
	}
	// The last attempt still reads the whole body: the kept bytes, then
	// the source, and nothing is kept once it has caught up.
	got, err := io.ReadAll(second)
	if err != nil || string(got) != "0123456789" {
		t.Fatalf("last attempt read %q, %v", got, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buf != nil {
		t.Fatalf("%d bytes still kept after Commit", len(r.buf))
	}
}
