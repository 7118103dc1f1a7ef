package accept

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// flaky fails its first accepts with EMFILE, as a process out of file
// descriptors does, then accepts from the real listener.
type flaky struct {
	net.Listener
	failures atomic.Int32
}

func (f *flaky) Accept() (net.Conn, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return f.Listener.Accept()
}

func TestLoopSurvivesAcceptErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flaky{Listener: inner}
	l.failures.Store(3)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan net.Conn, 1)
	done := make(chan error, 1)
	go func() { done <- Loop(ctx, l, func(c net.Conn) { got <- c }) }()

	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case sc := <-got:
		sc.Close()
	case err := <-done:
		t.Fatalf("Loop stopped on an accept error: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no connection handled after the accept errors")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Loop after its context ended = %v, want nil", err)
	}
}

func TestLoopReportsAListenerClosedUnderIt(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Loop(context.Background(), l, func(c net.Conn) { c.Close() }) }()
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Loop with its listener closed = %v, want net.ErrClosed", err)
	}
}
