package tap

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// heldConn is a connection whose one Tap stream holds a start command in
// flight until release is closed, then ends with its context.
type heldConn struct {
	release   chan struct{}
	recvAgain chan struct{} // closed when Recv is called after the command
	streams   atomic.Int32
}

func (c *heldConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	panic("not a unary service")
}

func (c *heldConn) NewStream(ctx context.Context, _ *grpc.StreamDesc, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	c.streams.Add(1)
	return &heldStream{ctx: ctx, conn: c}, nil
}

type heldStream struct {
	ctx   context.Context
	conn  *heldConn
	calls int
}

func (s *heldStream) Header() (metadata.MD, error) { return nil, nil }
func (s *heldStream) Trailer() metadata.MD         { return nil }
func (s *heldStream) CloseSend() error             { return nil }
func (s *heldStream) Context() context.Context     { return s.ctx }
func (s *heldStream) SendMsg(any) error            { return s.ctx.Err() }

func (s *heldStream) RecvMsg(m any) error {
	s.calls++
	if s.calls == 1 {
		// A command received before the stream ended, not yet applied.
		<-s.conn.release
		proto.Merge(m.(proto.Message), start("0a", nil, 10, time.Minute))
		return nil
	}
	if s.calls == 2 {
		close(s.conn.recvAgain)
	}
	<-s.ctx.Done()
	return s.ctx.Err()
}

// A command that arrives as the stream ends does not outlive it: Run stops
// the stream's taps only once its receive loop is done.
func TestNoTapOutlivesItsStream(t *testing.T) {
	conn := &heldConn{release: make(chan struct{}), recvAgain: make(chan struct{})}
	tp, err := New(Config{Conn: func() grpc.ClientConnInterface { return conn }, Workload: "web-1", Self: self,
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- tp.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); conn.streams.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no stream opened in 10s")
		}
	}
	cancel()
	// The command is applied once Run has returned, or (when Run waits
	// for the receive loop, as it must) after a while.
	select {
	case err := <-runDone:
		runDone <- err
	case <-time.After(200 * time.Millisecond):
	}
	close(conn.release)
	<-conn.recvAgain
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	if n := tp.ActiveTaps(); n != 0 || tp.Active() {
		t.Fatalf("%d taps active after the stream ended, want 0", n)
	}
}
