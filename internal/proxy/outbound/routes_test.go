package outbound

// HTTPRoutes through a real Outbound: the app calls orders (the route's
// parent) through its upstream listener; the route sends the requests to
// orders-v1 (peer 0) or orders-v2 (peer 1). Peer 2 is orders' own
// endpoint, which a routed port never uses unless a rule names orders.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/balance/retry"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	rtable "github.com/rampart-mesh/rampart/internal/proxy/route"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// Target ports of the services, so that a peer can tell which backend a
// request was sent to.
const (
	parentTarget = 8080
	v1Target     = 8081
	v2Target     = 8082
)

// newRouteRig starts three peers answering with their name, the target
// port the request named, and the request headers the tests change.
func newRouteRig(t *testing.T) *trafficRig {
	t.Helper()
	rig := newTrafficRig(t, 3, nil)
	for i, p := range rig.peers {
		name := [...]string{"v1", "v2", "parent"}[i]
		p.set(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s port=%s write=%q debug=%q backend=%q",
				name, r.Header.Get(tunnel.HeaderTargetPort), r.Header["X-Write"], r.Header["X-Debug"], r.Header["X-Backend"])
		})
	}
	return rig
}

func backendRef(service string, weight uint32) *meshv1.RouteBackend {
	return &meshv1.RouteBackend{Service: service, Namespace: "test", Port: 80, Weight: weight}
}

func prefixMatch(p string, headers ...*meshv1.HeaderMatch) *meshv1.RouteMatch {
	return &meshv1.RouteMatch{Path: &meshv1.PathMatch{Type: meshv1.PathMatchType_PATH_MATCH_TYPE_PREFIX, Value: p}, Headers: headers}
}

// splitRule sends every request to orders-v1 and orders-v2 by weight.
func splitRule(v1, v2 uint32) *meshv1.RouteRule {
	return &meshv1.RouteRule{Name: "split", Matches: []*meshv1.RouteMatch{prefixMatch("/")},
		Backends: []*meshv1.RouteBackend{backendRef("orders-v1", v1), backendRef("orders-v2", v2)}}
}

// routed configures orders with the rules given, and its backends.
func (rig *trafficRig) routed(rules ...*meshv1.RouteRule) error {
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
	parent.Routes = []*meshv1.Route{{Namespace: "test", Name: "orders", Rules: rules}}
	return rig.o.Update(&meshv1.ProxyConfig{
		Version: fmt.Sprint(rig.version),
		Services: []*meshv1.Service{
			parent, svc("orders-v1", v1Target, rig.peers[0]), svc("orders-v2", v2Target, rig.peers[1]),
		},
	})
}

func (rig *trafficRig) mustRoute(rules ...*meshv1.RouteRule) {
	rig.t.Helper()
	if err := rig.routed(rules...); err != nil {
		rig.t.Fatal(err)
	}
}

// send sends one request through the upstream and returns its status and
// body.
func (rig *trafficRig) send(c *http.Client, method, path string, h http.Header) (int, string) {
	rig.t.Helper()
	req, _ := http.NewRequest(method, "http://"+rig.app+path, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		rig.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// backendOf returns the name of the backend that answered a body.
func backendOf(body string) string {
	name, _, _ := strings.Cut(body, " ")
	return name
}

func TestRouteSplitsByWeight(t *testing.T) {
	rig := newRouteRig(t)
	rig.mustRoute(splitRule(90, 10))
	const total = 2000
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
		next   = make(chan struct{}, total)
	)
	for range total {
		next <- struct{}{}
	}
	close(next)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			for range next {
				code, body := rig.send(c, http.MethodGet, "/", nil)
				mu.Lock()
				if code != http.StatusOK {
					counts[fmt.Sprintf("status %d", code)]++
				} else {
					counts[backendOf(body)]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("answers: %v", counts)
	if counts["v1"]+counts["v2"] != total {
		t.Fatalf("answers %v, want all %d from v1 or v2", counts, total)
	}
	// 10% of 2000 is 200, with a standard deviation of 13: 120 to 280 is
	// six of them each way.
	if v2 := counts["v2"]; v2 < 120 || v2 > 280 {
		t.Fatalf("v2 got %d of %d requests, want about 10%% (120 to 280)", v2, total)
	}
	// Counted under the backend service each request was sent to.
	for svc, n := range map[string]int{"orders-v1.test": counts["v1"], "orders-v2.test": counts["v2"]} {
		peer := rig.peers[0]
		if svc == "orders-v2.test" {
			peer = rig.peers[1]
		}
		got := metrics.Value(rig.m.Requests, "direction", metrics.Outbound, "dst_identity", peer.id.String(), "dst_service", svc, "route", "test/orders", "code", "200")
		if int(got) != n {
			t.Errorf("requests counted for %s: %v, want %d", svc, got, n)
		}
	}
}

func TestRouteSendsToTheBackendsPort(t *testing.T) {
	rig := newRouteRig(t)
	rig.mustRoute(splitRule(0, 1))
	c := &http.Client{}
	code, body := rig.send(c, http.MethodGet, "/", nil)
	if want := fmt.Sprintf("v2 port=%d", v2Target); code != http.StatusOK || !strings.HasPrefix(body, want) {
		t.Fatalf("%d %q, want 200 %q...", code, body, want)
	}
}

func TestRouteMatches(t *testing.T) {
	rig := newRouteRig(t)
	rig.mustRoute(
		&meshv1.RouteRule{Name: "testers",
			Matches: []*meshv1.RouteMatch{prefixMatch("/", &meshv1.HeaderMatch{
				Type: meshv1.HeaderMatchType_HEADER_MATCH_TYPE_EXACT, Name: "X-Canary", Value: "always"})},
			Backends: []*meshv1.RouteBackend{backendRef("orders-v2", 1)}},
		&meshv1.RouteRule{Name: "api", Matches: []*meshv1.RouteMatch{prefixMatch("/api/v2")},
			Backends: []*meshv1.RouteBackend{backendRef("orders-v2", 1)}},
		&meshv1.RouteRule{Name: "rest", Matches: []*meshv1.RouteMatch{prefixMatch("/api")},
			Backends: []*meshv1.RouteBackend{backendRef("orders-v1", 1)}},
	)
	c := &http.Client{}
	tests := []struct {
		path   string
		header http.Header
		want   string // the backend, or the status
	}{
		{"/x", http.Header{"X-Canary": {"always"}}, "v2"},
		{"/api/x", http.Header{"X-Canary": {"always"}}, "v1"}, // a longer path wins over headers
		{"/api/x", nil, "v1"},
		{"/api/v2", nil, "v2"},
		{"/api/v2/orders?id=7", nil, "v2"},
		{"/api/v2x", nil, "v1"},
		{"/api%2Fv2", nil, "404"}, // the path as sent: not /api/v2
		{"/x", http.Header{"X-Canary": {"sometimes"}}, "404"},
		{"/", nil, "404"},
	}
	for _, tt := range tests {
		for range 5 {
			code, body := rig.send(c, http.MethodGet, tt.path, tt.header)
			got := backendOf(body)
			if code != http.StatusOK {
				got = fmt.Sprint(code)
			}
			if got != tt.want {
				t.Fatalf("GET %s %v: %s (%d %q), want %s", tt.path, tt.header, got, code, body, tt.want)
			}
		}
	}
	if n := rig.peers[2].hits.Load(); n != 0 {
		t.Fatalf("orders' own endpoint got %d requests; the route names only v1 and v2", n)
	}
	if got := testutil.ToFloat64(rig.m.Refusals.WithLabelValues(metrics.Outbound, ReasonNoRoute)); got != 15 {
		t.Fatalf("%s refusals %v, want 15", ReasonNoRoute, got)
	}
	if got := metrics.Value(rig.m.Requests, "direction", metrics.Outbound, "dst_identity", "", "dst_service", testService, "code", "404"); got != 15 {
		t.Fatalf("404s counted under %s: %v, want 15", testService, got)
	}
}

func TestRouteWithoutABackendAnswers500(t *testing.T) {
	rig := newRouteRig(t)
	c := &http.Client{}
	for _, tc := range []struct {
		name string
		rule *meshv1.RouteRule
	}{
		{"zero weights", splitRule(0, 0)},
		{"missing service", &meshv1.RouteRule{Matches: []*meshv1.RouteMatch{prefixMatch("/")},
			Backends: []*meshv1.RouteBackend{backendRef("orders-v9", 1)}}},
		{"missing port", &meshv1.RouteRule{Matches: []*meshv1.RouteMatch{prefixMatch("/")},
			Backends: []*meshv1.RouteBackend{{Service: "orders-v1", Namespace: "test", Port: 81, Weight: 1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig.mustRoute(tc.rule)
			for range 3 {
				if code, body := rig.send(c, http.MethodGet, "/", nil); code != http.StatusInternalServerError {
					t.Fatalf("%d %q, want 500", code, body)
				}
			}
		})
	}
	if h := rig.hits(); h[0]+h[1]+h[2] != 0 {
		t.Fatalf("peers got %v requests", h)
	}
}

func TestRouteModifiesRequestHeaders(t *testing.T) {
	rig := newRouteRig(t)
	rule := splitRule(0, 1)
	rule.RequestHeaders = &meshv1.HeaderModifier{
		Set:    []*meshv1.Header{{Name: "X-Write", Value: "true"}},
		Remove: []string{"x-debug"},
	}
	rule.Backends[1].RequestHeaders = &meshv1.HeaderModifier{Add: []*meshv1.Header{{Name: "X-Backend", Value: "v2"}}}
	rig.mustRoute(rule)
	c := &http.Client{}
	code, body := rig.send(c, http.MethodGet, "/", http.Header{
		"X-Write": {"false"}, "X-Debug": {"1"}, "X-Backend": {"app"},
	})
	want := fmt.Sprintf(`v2 port=%d write=["true"] debug=[] backend=["app" "v2"]`, v2Target)
	if code != http.StatusOK || body != want {
		t.Fatalf("%d %q, want 200 %q", code, body, want)
	}
}

func TestRouteTimeouts(t *testing.T) {
	rig := newRouteRig(t)
	release := make(chan struct{})
	defer close(release)
	rig.peers[1].set(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c := &http.Client{}

	t.Run("request", func(t *testing.T) {
		rule := splitRule(0, 1)
		rule.RequestTimeout = durationpb.New(100 * time.Millisecond)
		rig.mustRoute(rule)
		if code, body := rig.send(c, http.MethodGet, "/", nil); code != http.StatusGatewayTimeout {
			t.Fatalf("%d %q, want 504", code, body)
		}
		if got := metrics.Value(rig.m.Requests, "direction", metrics.Outbound, "dst_identity", rig.peers[1].id.String(), "dst_service", "orders-v2.test", "code", "504"); got != 1 {
			t.Fatalf("504s counted under orders-v2: %v, want 1", got)
		}
	})

	t.Run("per try", func(t *testing.T) {
		rule := splitRule(0, 1)
		rule.BackendRequestTimeout = durationpb.New(50 * time.Millisecond)
		rig.mustRoute(rule)
		before := rig.peers[1].hits.Load()
		if code, body := rig.send(c, http.MethodGet, "/", nil); code != http.StatusGatewayTimeout {
			t.Fatalf("%d %q, want 504", code, body)
		}
		// A GET whose attempt timed out is retried, on the same backend.
		if n := rig.peers[1].hits.Load() - before; n != retry.DefaultMaxAttempts {
			t.Fatalf("v2 got %d attempts, want %d", n, retry.DefaultMaxAttempts)
		}
		if n := rig.peers[0].hits.Load(); n != 0 {
			t.Fatalf("v1 got %d requests: a retry left its backend", n)
		}
	})
}

func TestRouteRetriesStayOnTheBackendAndUseTheParentsBudget(t *testing.T) {
	rig := newRouteRig(t)
	rig.peers[0].set(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "v1 down", http.StatusServiceUnavailable)
	})
	rig.mustRoute(splitRule(1, 0))
	c := &http.Client{}
	if code, body := rig.send(c, http.MethodGet, "/", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("%d %q, want v1's 503", code, body)
	}
	if n := rig.peers[1].hits.Load(); n != 0 {
		t.Fatalf("v2 got %d requests: a retry left its backend", n)
	}
	if got := testutil.ToFloat64(rig.m.Retries.WithLabelValues(testService, retry.Retry.String())); got != retry.DefaultMaxAttempts-1 {
		t.Fatalf("retries counted under %s: %v, want %d", testService, got, retry.DefaultMaxAttempts-1)
	}
}

func TestRouteWeightChangeAppliesAtOnce(t *testing.T) {
	rig := newRouteRig(t)
	c := &http.Client{}
	for _, tc := range []struct {
		v1, v2 uint32
		want   string
	}{{1, 0, "v1"}, {0, 1, "v2"}, {1, 0, "v1"}} {
		rig.mustRoute(splitRule(tc.v1, tc.v2))
		// On the same connection: it looks its route up per request.
		for range 20 {
			if code, body := rig.send(c, http.MethodGet, "/", nil); code != http.StatusOK || backendOf(body) != tc.want {
				t.Fatalf("weights %d/%d: %d %q, want %s", tc.v1, tc.v2, code, body, tc.want)
			}
		}
	}
	// The backends' balancers are the ones direct traffic to them would
	// use: one per backend service port, kept across the updates.
	eps := rig.o.Endpoints()
	for _, name := range []string{"orders-v1.test:8081", "orders-v2.test:8082"} {
		if len(eps[name]) != 1 {
			t.Fatalf("endpoints %v: want one for %s", eps, name)
		}
	}
}

func TestRouteInvalidConfigurationIsRejected(t *testing.T) {
	rig := newRouteRig(t)
	rig.mustRoute(splitRule(0, 1))
	bad := splitRule(1, 0)
	bad.RequestHeaders = &meshv1.HeaderModifier{Set: []*meshv1.Header{{Name: "Rampart-Client-Id", Value: "spiffe://evil/x"}}}
	err := rig.routed(bad)
	if !errors.Is(err, rtable.ErrInvalid) {
		t.Fatalf("Update: %v, want an error wrapping route.ErrInvalid", err)
	}
	// The last good configuration stays: everything still goes to v2.
	c := &http.Client{}
	for range 10 {
		if code, body := rig.send(c, http.MethodGet, "/", nil); code != http.StatusOK || backendOf(body) != "v2" {
			t.Fatalf("after a rejected configuration: %d %q, want v2", code, body)
		}
	}
}

func TestRouteBackendWithoutEndpointsAnswers503(t *testing.T) {
	rig := newRouteRig(t)
	rig.mustRoute(splitRule(0, 1))
	// orders-v2 loses its endpoints.
	pc := &meshv1.ProxyConfig{Services: []*meshv1.Service{
		{Name: "orders", Namespace: "test",
			Ports:  []*meshv1.ServicePort{{Port: 80, TargetPort: parentTarget, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
			Routes: []*meshv1.Route{{Namespace: "test", Name: "orders", Rules: []*meshv1.RouteRule{splitRule(0, 1)}}}},
		{Name: "orders-v2", Namespace: "test",
			Ports: []*meshv1.ServicePort{{Port: 80, TargetPort: v2Target, Protocol: meshv1.Protocol_PROTOCOL_HTTP}}},
	}}
	if err := rig.o.Update(pc); err != nil {
		t.Fatal(err)
	}
	if code, body := rig.send(&http.Client{}, http.MethodGet, "/", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("%d %q, want 503", code, body)
	}
	if got := metrics.Value(rig.m.Requests, "direction", metrics.Outbound, "dst_identity", "", "dst_service", "orders-v2.test", "route", "test/orders", "code", "503"); got != 1 {
		t.Fatalf("503s counted under orders-v2: %v, want 1", got)
	}
}
