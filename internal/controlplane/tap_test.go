package controlplane

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func TestTapSpecValidate(t *testing.T) {
	ok := TapSpec{Namespace: "shop", Workload: "web"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	if ok.MaxEvents != DefaultTapEvents || ok.Duration != DefaultTapDuration {
		t.Fatalf("defaults not filled in: %+v", ok)
	}
	for _, tc := range []struct {
		name, field string
		spec        TapSpec
	}{
		{"no workload", "workload", TapSpec{Namespace: "shop"}},
		{"bad namespace", "namespace", TapSpec{Namespace: "Shop!", Workload: "web"}},
		{"bad workload", "workload", TapSpec{Namespace: "shop", Workload: "web/1"}},
		{"method", "method", TapSpec{Namespace: "shop", Workload: "web", Method: "get"}},
		{"path", "path", TapSpec{Namespace: "shop", Workload: "web", PathPrefix: "api"}},
		{"path with query", "path", TapSpec{Namespace: "shop", Workload: "web", PathPrefix: "/api?x"}},
		{"path too long", "path", TapSpec{Namespace: "shop", Workload: "web", PathPrefix: "/" + strings.Repeat("a", 300)}},
		{"source", "source", TapSpec{Namespace: "shop", Workload: "web", Source: "checkout"}},
		{"status", "status", TapSpec{Namespace: "shop", Workload: "web", StatusClass: 6}},
		{"max", "max", TapSpec{Namespace: "shop", Workload: "web", MaxEvents: MaxTapEvents + 1}},
		{"negative max", "max", TapSpec{Namespace: "shop", Workload: "web", MaxEvents: -1}},
		{"duration", "duration", TapSpec{Namespace: "shop", Workload: "web", Duration: MaxTapDuration + time.Second}},
		{"short duration", "duration", TapSpec{Namespace: "shop", Workload: "web", Duration: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}

func TestCheckTapRequest(t *testing.T) {
	const self, peer = "spiffe://td/ns/shop/sa/web", "spiffe://td/ns/shop/sa/checkout"
	in := func() *meshv1.TapRequest {
		return &meshv1.TapRequest{
			Direction: meshv1.Direction_DIRECTION_INBOUND, Source: peer, Destination: self, Method: "GET", Path: "/", Status: 200,
			RequestHeaders: []*meshv1.TapHeader{{Name: "Authorization", Value: "Bearer leaked"}, {Name: "User-Agent", Value: "curl"}},
		}
	}
	r := in()
	stripped, err := checkTapRequest(r, self)
	if err != nil || !stripped {
		t.Fatalf("stripped %v, err %v", stripped, err)
	}
	if r.RequestHeaders[0].GetValue() != "" || r.RequestHeaders[1].GetValue() != "curl" {
		t.Fatalf("headers %v: want Authorization's value removed, User-Agent's kept", r.RequestHeaders)
	}
	for _, tc := range []struct {
		name string
		edit func(*meshv1.TapRequest)
	}{
		{"another proxy's inbound request", func(r *meshv1.TapRequest) { r.Destination = peer }},
		{"another proxy's outbound request", func(r *meshv1.TapRequest) { r.Direction = meshv1.Direction_DIRECTION_OUTBOUND }},
		{"no direction", func(r *meshv1.TapRequest) { r.Direction = 0 }},
		{"long path", func(r *meshv1.TapRequest) { r.Path = strings.Repeat("a", 300) }},
		{"status", func(r *meshv1.TapRequest) { r.Status = 1000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := in()
			tc.edit(r)
			if _, err := checkTapRequest(r, self); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestTapHubRoutesAndBounds(t *testing.T) {
	m, err := newTapMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	var h tapHub
	spec := TapSpec{Namespace: "shop", Workload: "web"}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.start(spec); !errors.Is(err, ErrNoTapTarget) {
		t.Fatalf("start without a stream: %v, want ErrNoTapTarget", err)
	}
	a := &tapStream{key: tapKey{"shop", "web"}, instance: "web@a", cmds: make(chan *meshv1.TapCommand, tapCommands)}
	other := &tapStream{key: tapKey{"shop", "db"}, instance: "db@b", cmds: make(chan *meshv1.TapCommand, tapCommands)}
	h.add(a)
	h.add(other)
	sess, n, err := h.start(spec)
	if err != nil || n != 1 {
		t.Fatalf("start: %d instances, %v", n, err)
	}
	cmd := <-a.cmds
	if cmd.GetId() != sess.id || cmd.GetMaxEvents() != DefaultTapEvents || len(other.cmds) != 0 {
		t.Fatalf("command %v; other stream got %d", cmd, len(other.cmds))
	}
	const self = "spiffe://td/ns/shop/sa/web"
	req := &meshv1.TapRequest{Direction: meshv1.Direction_DIRECTION_INBOUND, Destination: self}
	h.deliver(m, a, self, &meshv1.TapEvent{TapId: sess.id, Request: req})
	h.deliver(m, other, "spiffe://td/ns/shop/sa/db", &meshv1.TapEvent{TapId: sess.id, Request: req}) // not its tap
	h.deliver(m, a, self, &meshv1.TapEvent{TapId: "ffff", Request: req})                             // no such tap
	if len(sess.events) != 1 {
		t.Fatalf("%d events routed, want 1", len(sess.events))
	}
	h.remove(a)
	if got := <-sess.done; got != a {
		t.Fatal("the session was not told that its stream went away")
	}
	h.finish(sess)

	h.add(a)
	for range MaxTaps {
		if _, _, err := h.start(spec); err != nil {
			t.Fatal(err)
		}
		<-a.cmds
	}
	if _, _, err := h.start(spec); !errors.Is(err, ErrTooManyTaps) {
		t.Fatalf("start over the bound: %v, want ErrTooManyTaps", err)
	}
}

func openTap(t *testing.T, cc *grpc.ClientConn) grpc.BidiStreamingClient[meshv1.TapEvent, meshv1.TapCommand] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	st, err := meshv1.NewTelemetryClient(cc).Tap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestTapStreamOverGRPC(t *testing.T) {
	e := newTelemetryEnv(t)
	id := workloadID("shop", "web")
	cc := e.dial(t, e.svidFor(t, id))
	e.register(t, cc, "web-1")
	refused := func(reason string) float64 {
		return metricValue(t, e.reg, "rampart_controller_tap_streams_refused_total", map[string]string{"reason": reason})
	}

	t.Run("no certificate", func(t *testing.T) {
		st := openTap(t, e.dial(t, nil))
		st.Send(&meshv1.TapEvent{Workload: "web-1"})
		_, err := st.Recv()
		wantCode(t, err, codes.Unauthenticated)
	})
	t.Run("a workload it did not register", func(t *testing.T) {
		st := openTap(t, cc)
		st.Send(&meshv1.TapEvent{Workload: "api-1"})
		_, err := st.Recv()
		wantCode(t, err, codes.PermissionDenied)
		if got := refused(TelemetryNotRegistered); got != 1 {
			t.Errorf("not_registered = %v, want 1", got)
		}
	})
	t.Run("a first message that is not a hello", func(t *testing.T) {
		st := openTap(t, cc)
		st.Send(&meshv1.TapEvent{Workload: "web-1", TapId: "01"})
		_, err := st.Recv()
		wantCode(t, err, codes.InvalidArgument)
	})

	t.Run("a tap end to end", func(t *testing.T) {
		st := openTap(t, cc)
		if err := st.Send(&meshv1.TapEvent{Workload: "web-1"}); err != nil {
			t.Fatal(err)
		}
		// The proxy's side: take the start command, answer two requests
		// (one with a value it must not send), then end.
		proxyDone := make(chan error, 1)
		go func() {
			cmd, err := st.Recv()
			if err != nil {
				proxyDone <- err
				return
			}
			me := id.String()
			for _, path := range []string{"/a", "/b"} {
				st.Send(&meshv1.TapEvent{TapId: cmd.GetId(), Request: &meshv1.TapRequest{
					Direction: meshv1.Direction_DIRECTION_INBOUND, Destination: me, Method: "GET", Path: path, Status: 200,
					RequestHeaders: []*meshv1.TapHeader{{Name: "Authorization", Value: "Bearer leaked"}},
				}})
			}
			st.Send(&meshv1.TapEvent{TapId: cmd.GetId(), Ended: true, Dropped: 3})
			proxyDone <- nil
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var paths []string
		var started int
		spec := TapSpec{Namespace: "shop", Workload: "web-1", Duration: 5 * time.Second, OnStart: func(n int) { started = n }}
		// The stream registers with the hub once its hello is read.
		var sum TapSummary
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; {
			sum, err = e.srv.Tap(ctx, spec, func(_ string, r *meshv1.TapRequest) error {
				paths = append(paths, r.GetPath())
				if v := r.GetRequestHeaders()[0].GetValue(); v != "" {
					t.Errorf("Authorization value %q reached the caller", v)
				}
				return nil
			})
			if !errors.Is(err, ErrNoTapTarget) || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := <-proxyDone; err != nil {
			t.Fatal(err)
		}
		if started != 1 || strings.Join(paths, ",") != "/a,/b" || sum.Events != 2 || sum.Dropped != 3 || sum.Reason != "ended on every instance" {
			t.Fatalf("started %d, paths %v, summary %+v", started, paths, sum)
		}
	})
}

// Repeated Ended events from one stream count once: they cannot fill the
// session's notices and lose another stream's.
func TestTapEndedCountsOncePerStream(t *testing.T) {
	m, err := newTapMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	var h tapHub
	spec := TapSpec{Namespace: "shop", Workload: "web"}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	a := &tapStream{key: tapKey{"shop", "web"}, instance: "web@a", cmds: make(chan *meshv1.TapCommand, tapCommands)}
	b := &tapStream{key: tapKey{"shop", "web"}, instance: "web@b", cmds: make(chan *meshv1.TapCommand, tapCommands)}
	h.add(a)
	h.add(b)
	sess, n, err := h.start(spec)
	if err != nil || n != 2 {
		t.Fatalf("start: %d instances, %v", n, err)
	}
	const self = "spiffe://td/ns/shop/sa/web"
	for range 10 {
		h.deliver(m, a, self, &meshv1.TapEvent{TapId: sess.id, Ended: true, Dropped: 1})
	}
	h.remove(a) // gone after it ended: no second notice
	h.deliver(m, a, self, &meshv1.TapEvent{TapId: sess.id, Request: &meshv1.TapRequest{Direction: meshv1.Direction_DIRECTION_INBOUND, Destination: self}})
	h.deliver(m, b, self, &meshv1.TapEvent{TapId: sess.id, Ended: true})
	var got []string
	for len(sess.done) > 0 {
		got = append(got, (<-sess.done).instance)
	}
	if strings.Join(got, ",") != "web@a,web@b" {
		t.Errorf("notices %v, want one from each stream: web@a,web@b", got)
	}
	if sess.dropped != 1 || len(sess.events) != 0 {
		t.Errorf("dropped %d, %d events; want the first Ended's 1 and no event after it", sess.dropped, len(sess.events))
	}
	h.finish(sess)
}
