package outbound

// A route's idle timeout (the rampart.dev/idle-timeout annotation, compiled
// into RouteRule.idle_timeout) through a real Outbound: it replaces the
// idle timeout of the service the app addressed for the requests its rules
// route, and only for those.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// routedIdle configures orders, whose TrafficPolicy is tp, with two routes:
// "slow", whose rule sends /slow to orders-v2 (peer 1) with the idle
// timeout idle (nil for none), and "steady", whose rule sends every other
// request to orders-v1 (peer 0) with no idle timeout of its own.
func (rig *trafficRig) routedIdle(tp *meshv1.TrafficPolicy, idle *durationpb.Duration) {
	rig.t.Helper()
	rig.version++
	svc := func(name string, target uint32, p *fakePeer) *meshv1.Service {
		return &meshv1.Service{
			Name: name, Namespace: "test",
			Ports:     []*meshv1.ServicePort{{Name: "http", Port: 80, TargetPort: target, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
			Endpoints: []*meshv1.Endpoint{{Address: p.addr, SpiffeId: p.id.String()}},
		}
	}
	parent := svc("orders", parentTarget, rig.peers[2])
	parent.Traffic = tp
	parent.Routes = []*meshv1.Route{
		{Namespace: "test", Name: "slow", Rules: []*meshv1.RouteRule{{
			Name: "slow", Matches: []*meshv1.RouteMatch{prefixMatch("/slow")},
			Backends: []*meshv1.RouteBackend{backendRef("orders-v2", 1)}, IdleTimeout: idle,
		}}},
		{Namespace: "test", Name: "steady", Rules: []*meshv1.RouteRule{{
			Name: "steady", Matches: []*meshv1.RouteMatch{prefixMatch("/")},
			Backends: []*meshv1.RouteBackend{backendRef("orders-v1", 1)},
		}}},
	}
	err := rig.o.Update(&meshv1.ProxyConfig{
		Version: fmt.Sprint(rig.version),
		Services: []*meshv1.Service{
			parent, svc("orders-v1", v1Target, rig.peers[0]), svc("orders-v2", v2Target, rig.peers[1]),
		},
	})
	if err != nil {
		rig.t.Fatal(err)
	}
}

// stall makes p hold every request, without a byte of answer, until
// release is closed (then answers "done") or the request ends; arrived
// gets a value as each request reaches p.
func stall(p *fakePeer, release <-chan struct{}, arrived chan<- struct{}) {
	p.set(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
			io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	})
}

type idleResult struct {
	code int
	body string
	err  error
}

// post sends a POST (never retried once sent) in the background.
func (rig *trafficRig) post(c *http.Client, path string) <-chan idleResult {
	out := make(chan idleResult, 1)
	go func() {
		res, err := c.Post("http://"+rig.app+path, "text/plain", strings.NewReader("x"))
		if err != nil {
			out <- idleResult{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		out <- idleResult{code: res.StatusCode, body: string(b), err: err}
	}()
	return out
}

// await returns the result of a request, failing the test after a deadline.
func await(t *testing.T, what string, ch <-chan idleResult) idleResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no answer within 20s", what)
		return idleResult{}
	}
}

func waitArrived(t *testing.T, what string, arrived <-chan struct{}) {
	t.Helper()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never reached its backend", what)
	}
}

func pending(ch <-chan idleResult) (idleResult, bool) {
	select {
	case r := <-ch:
		return r, false
	default:
		return idleResult{}, true
	}
}

// The annotated route's requests are cut after its 1s idle timeout, while
// a request of the other route of the same service, stalled for longer
// (since before the first cut, past two of them), keeps the service's
// default of an hour and gets its answer.
func TestRouteIdleTimeoutShorterThanTheService(t *testing.T) {
	rig := newRouteRig(t)
	release := make(chan struct{})
	defer close(release)
	arrived := make(chan struct{}, 8)
	stall(rig.peers[0], release, arrived)
	stall(rig.peers[1], release, arrived)
	const idle = time.Second
	rig.routedIdle(nil, durationpb.New(idle))
	c := &http.Client{}

	steady := rig.post(c, "/orders")
	waitArrived(t, "the steady route's request", arrived)
	for i := range 2 {
		start := time.Now()
		r := await(t, "the slow route's request", rig.post(c, "/slow"))
		waitArrived(t, "the slow route's request", arrived)
		if r.code != http.StatusGatewayTimeout || !strings.Contains(r.body, "idle timeout ("+idle.String()+")") {
			t.Fatalf("slow route, request %d: %d %q; want 504 for the idle timeout of %v", i, r.code, r.body, idle)
		}
		if took := time.Since(start); took < idle/2 {
			t.Errorf("slow route, request %d: cut after %v, before its idle timeout %v", i, took, idle)
		}
	}
	if got := rig.idleCuts(); got != 2 {
		t.Errorf("idle_timeout refusals %v, want 2 (the slow route's requests only)", got)
	}
	if r, ok := pending(steady); !ok {
		t.Fatalf("the steady route's request ended (%d %q) while its service's idle timeout is an hour", r.code, r.body)
	}
	release <- struct{}{} // to whichever request holds it: the steady one
	if r := await(t, "the steady route's request", steady); r.code != http.StatusOK || r.body != "done" {
		t.Errorf("steady route: %d %q, want 200 \"done\"", r.code, r.body)
	}
}

// The route's idle timeout wins over its service's TrafficPolicy in the
// other direction too: with the service's at 1s, the route without the
// annotation is cut after 1s, while the annotated route, at an hour, waits.
func TestRouteIdleTimeoutLongerThanTheService(t *testing.T) {
	rig := newRouteRig(t)
	release := make(chan struct{})
	defer close(release)
	arrived := make(chan struct{}, 8)
	stall(rig.peers[0], release, arrived)
	stall(rig.peers[1], release, arrived)
	const idle = time.Second
	rig.routedIdle(&meshv1.TrafficPolicy{IdleTimeout: durationpb.New(idle)}, durationpb.New(time.Hour))
	c := &http.Client{}

	slow := rig.post(c, "/slow")
	waitArrived(t, "the slow route's request", arrived)
	for i := range 2 {
		r := await(t, "the steady route's request", rig.post(c, "/orders"))
		waitArrived(t, "the steady route's request", arrived)
		if r.code != http.StatusGatewayTimeout || !strings.Contains(r.body, "idle timeout ("+idle.String()+")") {
			t.Fatalf("steady route, request %d: %d %q; want 504 for the service's idle timeout of %v", i, r.code, r.body, idle)
		}
	}
	if r, ok := pending(slow); !ok {
		t.Fatalf("the annotated route's request ended (%d %q) under the service's idle timeout; its own is an hour", r.code, r.body)
	}
	release <- struct{}{}
	if r := await(t, "the slow route's request", slow); r.code != http.StatusOK || r.body != "done" {
		t.Errorf("slow route: %d %q, want 200 \"done\"", r.code, r.body)
	}
}
