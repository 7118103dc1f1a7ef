package controlplane

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// A proxy whose certificate is revoked after its Tap stream opened loses
// the stream: at its next event (which is not delivered), or before the
// next command would reach it.
func TestTapStreamEndsOnRevocation(t *testing.T) {
	te, revoked := newRevocableTelemetryEnv(t)
	id := workloadID("shop", "web")
	refusals := func() float64 {
		return metricValue(t, te.reg, "rampart_controller_tap_streams_refused_total", map[string]string{"reason": meshtls.ReasonRevoked})
	}
	// tap starts a tap on web-1 as soon as a stream serves it, calling
	// emit with what comes back.
	tap := func(ctx context.Context, emit func(*meshv1.TapRequest)) (TapSummary, error) {
		spec := TapSpec{Namespace: "shop", Workload: "web-1", Duration: 5 * time.Second}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			sum, err := te.srv.Tap(ctx, spec, func(_ string, r *meshv1.TapRequest) error { emit(r); return nil })
			if !errors.Is(err, ErrNoTapTarget) || time.Now().After(deadline) {
				return sum, err
			}
		}
	}

	t.Run("at the next event", func(t *testing.T) {
		svid := te.svidFor(t, id)
		cc := te.dial(t, svid)
		te.register(t, cc, "web-1")
		st := openTap(t, cc)
		if err := st.Send(&meshv1.TapEvent{Workload: "web-1"}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var emitted atomic.Int32
		tapDone := make(chan error, 1)
		go func() {
			_, err := tap(ctx, func(*meshv1.TapRequest) { emitted.Add(1) })
			tapDone <- err
		}()
		cmd, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		revoked.Store(meshtls.NewRevocationSet([]string{meshtls.SerialOf(svid.Certificates[0])}, nil))
		_ = st.Send(&meshv1.TapEvent{TapId: cmd.GetId(), Request: &meshv1.TapRequest{
			Direction: meshv1.Direction_DIRECTION_INBOUND, Destination: id.String(), Method: "GET", Path: "/after", Status: 200,
		}})
		_, err = st.Recv()
		wantCode(t, err, codes.PermissionDenied)
		if err := <-tapDone; err != nil {
			t.Fatal(err)
		}
		if n := emitted.Load(); n != 0 {
			t.Errorf("%d events of a revoked proxy delivered, want 0", n)
		}
		if got := refusals(); got != 1 {
			t.Errorf("tap_streams_refused_total{revoked} = %v, want 1", got)
		}
	})

	t.Run("before the next command", func(t *testing.T) {
		revoked.Store(nil)
		svid := te.svidFor(t, id)
		cc := te.dial(t, svid)
		te.register(t, cc, "web-1")
		st := openTap(t, cc)
		if err := st.Send(&meshv1.TapEvent{Workload: "web-1"}); err != nil {
			t.Fatal(err)
		}
		// A first tap, before the revocation: its start and stop arrive.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		first, endFirst := context.WithCancel(ctx)
		firstDone := make(chan error, 1)
		go func() {
			_, err := tap(first, func(*meshv1.TapRequest) {})
			firstDone <- err
		}()
		if cmd, err := st.Recv(); err != nil || cmd.GetStop() {
			t.Fatalf("first command %v, %v; want the start", cmd, err)
		}
		endFirst()
		if err := <-firstDone; err != nil {
			t.Fatal(err)
		}
		if cmd, err := st.Recv(); err != nil || !cmd.GetStop() {
			t.Fatalf("second command %v, %v; want the stop", cmd, err)
		}
		revoked.Store(meshtls.NewRevocationSet([]string{meshtls.SerialOf(svid.Certificates[0])}, nil))
		go tap(ctx, func(*meshv1.TapRequest) {})
		cmd, err := st.Recv()
		if err == nil {
			t.Fatalf("a revoked proxy received a command: %v", cmd)
		}
		wantCode(t, err, codes.PermissionDenied)
		waitFor(t, func() bool { return refusals() == 2 })
	})
}
