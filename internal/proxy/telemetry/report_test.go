package telemetry

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// fakeTelemetry is an in-process Telemetry server that keeps what it
// receives.
type fakeTelemetry struct {
	meshv1.UnimplementedTelemetryServer
	mu      sync.Mutex
	reports []*meshv1.TelemetryReport
	streams int
}

func (f *fakeTelemetry) Report(st grpc.ClientStreamingServer[meshv1.TelemetryReport, meshv1.TelemetryAck]) error {
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	for {
		rep, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return st.SendAndClose(&meshv1.TelemetryAck{})
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.reports = append(f.reports, rep)
		f.mu.Unlock()
	}
}

func (f *fakeTelemetry) received() ([]*meshv1.TelemetryReport, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*meshv1.TelemetryReport(nil), f.reports...), f.streams
}

// serve starts a gRPC server with f on l and returns its stop.
func serve(t *testing.T, l net.Listener, f *fakeTelemetry) func() {
	t.Helper()
	s := grpc.NewServer()
	meshv1.RegisterTelemetryServer(s, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	stop := func() {
		s.Stop()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls f until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newCounter(name string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: name})
}

// edge returns an outbound edge with one request counted.
func countOne(a *Aggregator, peer string) {
	a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_OUTBOUND, PeerIdentity: peer, MTLS: true}).
		Request(Request{Method: "GET", Path: "/", Status: 200, Seconds: 0.001})
}

func TestReporterSendsEveryIntervalAndReconnects(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	srv := &fakeTelemetry{}
	stop := serve(t, l, srv)
	conn := dial(t, addr)

	a := NewAggregator(time.Now())
	sent := newCounter("sent")
	r, err := NewReporter(ReporterConfig{
		Aggregator: a, Workload: "web-1", Interval: 20 * time.Millisecond, Sent: sent,
		Conn:       func() grpc.ClientConnInterface { return conn },
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	countOne(a, "spiffe://td/ns/a/sa/first")
	eventually(t, 5*time.Second, func() error {
		reps, _ := srv.received()
		if len(reps) == 0 {
			return errors.New("no report received")
		}
		rep := reps[0]
		if rep.GetWorkload() != "web-1" || len(rep.GetEdges()) != 1 || rep.GetEdges()[0].GetPeerSpiffeId() != "spiffe://td/ns/a/sa/first" {
			return errors.New("unexpected report: " + rep.String())
		}
		return nil
	})
	// Quiet intervals send nothing.
	if reps, _ := srv.received(); len(reps) != 1 {
		t.Fatalf("%d reports for one busy interval", len(reps))
	}

	// The controller goes away: reports wait in the queue, and go out
	// once a server is back at the same address.
	stop()
	countOne(a, "spiffe://td/ns/a/sa/second")
	eventually(t, 5*time.Second, func() error {
		if r.Queued() == 0 {
			return errors.New("the second report is not queued")
		}
		return nil
	})
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("could not listen again on %s: %v", addr, err)
	}
	srv2 := &fakeTelemetry{}
	serve(t, l2, srv2)
	eventually(t, 10*time.Second, func() error {
		reps, _ := srv2.received()
		for _, rep := range reps {
			if len(rep.GetEdges()) == 1 && rep.GetEdges()[0].GetPeerSpiffeId() == "spiffe://td/ns/a/sa/second" {
				return nil
			}
		}
		return errors.New("the queued report did not arrive after the reconnection")
	})
	if got := testutil.ToFloat64(sent); got != 2 {
		t.Errorf("sent counted %v, want 2", got)
	}
}

func TestReporterDropsTheOldestWhenTheQueueIsFull(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	dropped, folded := newCounter("dropped"), newCounter("folded")
	now := time.Unix(0, 0)
	r, err := NewReporter(ReporterConfig{
		Aggregator: a, Workload: "web-1", QueueSize: 3, MaxEdges: 1,
		Dropped: dropped, OverflowEdges: folded,
		Conn: func() grpc.ClientConnInterface { return nil }, // never connected
		Now:  func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		countOne(a, "spiffe://td/ns/a/sa/one")
		countOne(a, "spiffe://td/ns/a/sa/two")
		now = now.Add(5 * time.Second)
		r.Tick()
		if i == 0 {
			// A tick with nothing counted queues nothing.
			r.Tick()
		}
	}
	if r.Queued() != 3 || testutil.ToFloat64(dropped) != 2 || testutil.ToFloat64(folded) != 5 {
		t.Fatalf("queued %d, dropped %v, folded %v; want 3, 2, 5", r.Queued(), testutil.ToFloat64(dropped), testutil.ToFloat64(folded))
	}
	rep := r.peek()
	// The oldest two (intervals 0-5s and 5-10s) were dropped.
	if got := rep.GetStart().AsTime(); !got.Equal(time.Unix(10, 0)) || rep.GetDroppedReports() != 2 {
		t.Fatalf("oldest queued starts %v with %d dropped, want 10s and 2", got, rep.GetDroppedReports())
	}
}

func TestReporterConfigValidate(t *testing.T) {
	conn := func() grpc.ClientConnInterface { return nil }
	a := NewAggregator(time.Now())
	for _, cfg := range []ReporterConfig{
		{Conn: conn},
		{Aggregator: a},
		{Aggregator: a, Conn: conn, Interval: -time.Second},
		{Aggregator: a, Conn: conn, Interval: time.Millisecond},
		{Aggregator: a, Conn: conn, QueueSize: -1},
		{Aggregator: a, Conn: conn, MinBackoff: time.Minute, MaxBackoff: time.Second},
	} {
		if _, err := NewReporter(cfg); err == nil {
			t.Errorf("NewReporter(%+v) succeeded", cfg)
		}
	}
}
