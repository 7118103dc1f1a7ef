package outbound

// A service's TrafficPolicy applied by a real Outbound: the balancer
// mode, retry conditions and attempts, outlier settings, and the idle
// timeout of HTTP requests and opaque TCP streams.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/balance"
	"github.com/rampart-mesh/rampart/internal/proxy/balance/retry"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
)

func u32p(v uint32) *uint32 { return &v }

// configurePolicy makes the rig's peers the endpoints of a service whose
// port has protocol proto and whose traffic policy is tp.
func (rig *trafficRig) configurePolicy(proto meshv1.Protocol, tp *meshv1.TrafficPolicy) error {
	rig.version++
	svc := &meshv1.Service{
		Name: "orders", Namespace: "test", Traffic: tp,
		Ports: []*meshv1.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: proto}},
	}
	for _, p := range rig.peers {
		svc.Endpoints = append(svc.Endpoints, &meshv1.Endpoint{Address: p.addr, SpiffeId: p.id.String()})
	}
	return rig.o.Update(&meshv1.ProxyConfig{Version: fmt.Sprint(rig.version), Services: []*meshv1.Service{svc}})
}

func (rig *trafficRig) idleCuts() float64 {
	return testutil.ToFloat64(rig.m.Refusals.WithLabelValues(metrics.Outbound, ReasonIdleTimeout))
}

// RoundRobin takes the endpoints in turn, a slow one included, where the
// default PeakEWMA avoids it.
func TestTrafficPolicyRoundRobin(t *testing.T) {
	rig := newTrafficRig(t, 3, nil)
	rig.peers[2].set(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(10 * time.Millisecond)
		io.WriteString(w, "ok")
	})
	if err := rig.configurePolicy(meshv1.Protocol_PROTOCOL_HTTP, &meshv1.TrafficPolicy{LoadBalancer: meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN}); err != nil {
		t.Fatal(err)
	}
	const total = 150
	if failed := rig.load(1, total); failed != 0 {
		t.Fatalf("%d of %d requests failed", failed, total)
	}
	for i, h := range rig.hits() {
		if h != total/3 {
			t.Errorf("endpoint %d got %d requests, want %d (round-robin, one client): %v", i, h, total/3, rig.hits())
		}
	}
}

// retryOn and attempts: a 500, which the defaults do not retry, is
// retried when the policy lists it; ejection is off, so the failing
// endpoint keeps its turn.
func TestTrafficPolicyRetryOn(t *testing.T) {
	rig := newTrafficRig(t, 3, nil)
	rig.peers[0].set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "broken", http.StatusInternalServerError) })
	tp := &meshv1.TrafficPolicy{
		LoadBalancer: meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN,
		Retry: &meshv1.TrafficPolicy_Retry{
			Attempts: 2, RetryOn: &meshv1.TrafficPolicy_RetryOn{HttpStatuses: []uint32{500}},
		},
		OutlierDetection: &meshv1.TrafficPolicy_OutlierDetection{ConsecutiveFailures: u32p(0), FailurePercent: u32p(0)},
	}
	if err := rig.configurePolicy(meshv1.Protocol_PROTOCOL_HTTP, tp); err != nil {
		t.Fatal(err)
	}
	const total = 60
	if failed := rig.load(1, total); failed != 0 {
		t.Fatalf("%d of %d requests failed with 500 listed in retryOn", failed, total)
	}
	if h := rig.hits()[0]; h < total/3-2 {
		t.Errorf("the failing endpoint got %d requests, want its turn (%d): ejection is off", h, total/3)
	}
	if rig.ejections() != 0 {
		t.Errorf("%v ejections with both outlier rules off", rig.ejections())
	}
	if got := rig.retries(retry.Retry); got < total/3-2 {
		t.Errorf("%v retries, want one per failed first attempt (about %d)", got, total/3)
	}

	// Without the policy, a 500 is an answer.
	if err := rig.configurePolicy(meshv1.Protocol_PROTOCOL_HTTP, nil); err != nil {
		t.Fatal(err)
	}
	failed := int64(0)
	c := &http.Client{}
	for range 30 {
		if code, err := rig.do(c, http.MethodGet); err != nil || code != http.StatusOK {
			failed++
		}
	}
	if failed == 0 {
		t.Errorf("no request failed without the policy: the 500s were retried by default")
	}
}

// The outlier settings eject after the policy's consecutive failures, for
// the policy's base ejection time.
func TestTrafficPolicyOutlier(t *testing.T) {
	rig := newTrafficRig(t, 3, nil)
	rig.peers[0].set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	tp := &meshv1.TrafficPolicy{
		LoadBalancer: meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN,
		Retry:        &meshv1.TrafficPolicy_Retry{Attempts: 1},
		OutlierDetection: &meshv1.TrafficPolicy_OutlierDetection{
			ConsecutiveFailures: u32p(2), FailurePercent: u32p(0), BaseEjectionTime: durationpb.New(time.Hour),
		},
	}
	if err := rig.configurePolicy(meshv1.Protocol_PROTOCOL_HTTP, tp); err != nil {
		t.Fatal(err)
	}
	// Round-robin with one client: the failing endpoint's second failure
	// is at the 4th request; it is then out for the hour.
	failed := rig.load(1, 60)
	if failed != 2 {
		t.Errorf("%d requests failed, want 2 (ejected after 2 in a row, attempts 1)", failed)
	}
	if rig.ejections() != 1 || rig.ejectedNow() != 1 {
		t.Errorf("ejections %v, ejected now %d; want 1 and 1", rig.ejections(), rig.ejectedNow())
	}
	for _, eps := range rig.o.Endpoints() {
		for _, st := range eps {
			if until := time.Until(st.EjectedUntil); !st.EjectedUntil.IsZero() && until < 50*time.Minute {
				t.Errorf("ejected for %v more, want about the policy's hour", until)
			}
		}
	}
}

// An HTTP request whose answer sends nothing for the idle timeout fails:
// a POST (not retried) with 504; a GET is retried on another endpoint. A
// body that stops mid-way is cut.
func TestTrafficPolicyIdleTimeoutHTTP(t *testing.T) {
	rig := newTrafficRig(t, 2, nil)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rig.peers[0].set(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	tp := &meshv1.TrafficPolicy{
		LoadBalancer: meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN,
		IdleTimeout:  durationpb.New(300 * time.Millisecond),
		// The stuck endpoint must stay in for the test's requests.
		OutlierDetection: &meshv1.TrafficPolicy_OutlierDetection{ConsecutiveFailures: u32p(0), FailurePercent: u32p(0)},
	}
	if err := rig.configurePolicy(meshv1.Protocol_PROTOCOL_HTTP, tp); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	codes := map[string][]int{}
	for range 4 {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			code, err := rig.do(c, m)
			if err != nil {
				t.Fatal(err)
			}
			codes[m] = append(codes[m], code)
		}
	}
	for _, code := range codes[http.MethodGet] {
		if code != http.StatusOK {
			t.Errorf("GET answers %v, want every one 200 (retried after the idle timeout)", codes[http.MethodGet])
			break
		}
	}
	if !containsInt(codes[http.MethodPost], http.StatusGatewayTimeout) {
		t.Errorf("POST answers %v, want a 504 from the stuck endpoint", codes[http.MethodPost])
	}
	if rig.idleCuts() == 0 {
		t.Errorf("no idle_timeout refusal counted")
	}

	// A body that stops: headers and a first chunk, then nothing.
	for _, p := range rig.peers {
		p.set(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
	}
	res, err := c.Get("http://" + rig.app + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Errorf("stalled body read to the end (%q), want it cut", body)
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// An opaque TCP stream with no bytes either way for the idle timeout is
// closed; one with traffic is not.
func TestTrafficPolicyIdleTimeoutTCP(t *testing.T) {
	rig := newTrafficRig(t, 1, nil)
	rig.peers[0].set(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "want CONNECT", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		buf := make([]byte, 1024)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	// Two seconds: twenty times the gap between pings below, so that a
	// busy machine's delays never make the stream with traffic look idle.
	const idle = 2 * time.Second
	if err := rig.configurePolicy(meshv1.Protocol_PROTOCOL_TCP, &meshv1.TrafficPolicy{IdleTimeout: durationpb.New(idle)}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", rig.app)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	// Traffic every 100 ms for two idle timeouts keeps it open.
	start := time.Now()
	for i := 0; time.Since(start) < 2*idle; i++ {
		line := fmt.Sprintf("ping %d\n", i)
		if _, err := io.WriteString(conn, line); err != nil {
			t.Fatalf("write after %v: %v", time.Since(start), err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := r.ReadString('\n')
		if err != nil || got != line {
			t.Fatalf("echo after %v: %q, %v (idle cuts %v)", time.Since(start), got, err, rig.idleCuts())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rig.idleCuts() != 0 {
		t.Fatalf("stream with traffic counted as idle")
	}
	// Then silence: the proxy closes it.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	quiet := time.Now()
	_, err = r.ReadString('\n')
	if err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("idle stream: read returned %v, want it closed by the proxy", err)
	}
	if waited := time.Since(quiet); waited < idle/2 {
		t.Errorf("closed after %v of silence, before the idle timeout %v", waited, idle)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rig.idleCuts() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if rig.idleCuts() != 1 {
		t.Errorf("idle_timeout refusals %v, want 1", rig.idleCuts())
	}
}

// trafficOf applies a policy over the defaults; gRPC requests have no
// idle timeout unless a policy sets one.
func TestTrafficOf(t *testing.T) {
	var cfg Config
	def, err := trafficOf(&cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if def.idleTCP != DefaultIdleTimeout || def.idleHTTP != DefaultIdleTimeout || def.idleGRPC != 0 {
		t.Errorf("default idle timeouts tcp %v http %v grpc %v; want %v, %v, none", def.idleTCP, def.idleHTTP, def.idleGRPC, DefaultIdleTimeout, DefaultIdleTimeout)
	}
	got, err := trafficOf(&cfg, &meshv1.TrafficPolicy{
		LoadBalancer: meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN,
		IdleTimeout:  durationpb.New(time.Minute),
		Retry: &meshv1.TrafficPolicy_Retry{
			Attempts: 4, BudgetPercent: u32p(0), BudgetMinPerSecond: u32p(3),
			RetryOn: &meshv1.TrafficPolicy_RetryOn{GrpcCodes: []uint32{8}},
		},
		OutlierDetection: &meshv1.TrafficPolicy_OutlierDetection{
			FailurePercent: u32p(25), BaseEjectionTime: durationpb.New(10 * time.Minute), MaxEjectedPercent: 100,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	o := got.balance.Outlier
	switch {
	case got.balance.Mode != balance.RoundRobin:
		t.Errorf("mode %v", got.balance.Mode)
	case got.idleGRPC != time.Minute || got.idleTCP != time.Minute:
		t.Errorf("idle timeouts %v %v", got.idleTCP, got.idleGRPC)
	case got.retry.MaxAttempts != 4 || got.retry.HTTPStatuses == nil || len(got.retry.HTTPStatuses) != 0 ||
		len(got.retry.GRPCCodes) != 1 || got.retry.GRPCCodes[0] != retry.ResourceExhausted:
		t.Errorf("retry policy %+v", got.retry)
	case got.budget.Ratio >= 0 || got.budget.MinPerSecond != 3:
		t.Errorf("budget %+v", got.budget)
	case o.ConsecutiveFailures != 0 || o.FailureRate != 0.25 || o.BaseEjection != 10*time.Minute ||
		o.MaxEjection != 10*time.Minute || o.MaxEjectedPercent != 100:
		t.Errorf("outlier %+v", o)
	}
}

// The proxy refuses a policy out of bounds, naming the service and field.
func TestValidateTraffic(t *testing.T) {
	for _, tc := range []struct {
		name string
		tp   *meshv1.TrafficPolicy
		want string
	}{
		{"balancer", &meshv1.TrafficPolicy{LoadBalancer: 7}, "unknown load balancer"},
		{"idle", &meshv1.TrafficPolicy{IdleTimeout: durationpb.New(25 * time.Hour)}, "idle timeout"},
		{"negative idle", &meshv1.TrafficPolicy{IdleTimeout: durationpb.New(-time.Second)}, "idle timeout"},
		{"attempts", &meshv1.TrafficPolicy{Retry: &meshv1.TrafficPolicy_Retry{Attempts: 11}}, "attempts"},
		{"budget", &meshv1.TrafficPolicy{Retry: &meshv1.TrafficPolicy_Retry{BudgetPercent: u32p(101)}}, "budget percent"},
		{"status", &meshv1.TrafficPolicy{Retry: &meshv1.TrafficPolicy_Retry{RetryOn: &meshv1.TrafficPolicy_RetryOn{HttpStatuses: []uint32{404}}}}, "HTTP status 404"},
		{"code", &meshv1.TrafficPolicy{Retry: &meshv1.TrafficPolicy_Retry{RetryOn: &meshv1.TrafficPolicy_RetryOn{GrpcCodes: []uint32{0}}}}, "gRPC status 0"},
		{"failure percent", &meshv1.TrafficPolicy{OutlierDetection: &meshv1.TrafficPolicy_OutlierDetection{FailurePercent: u32p(101)}}, "failure percent"},
		{"ejection", &meshv1.TrafficPolicy{OutlierDetection: &meshv1.TrafficPolicy_OutlierDetection{BaseEjectionTime: durationpb.New(2 * time.Hour)}}, "base ejection"},
		{"max ejected", &meshv1.TrafficPolicy{OutlierDetection: &meshv1.TrafficPolicy_OutlierDetection{MaxEjectedPercent: 101}}, "max ejected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateTraffic([]*meshv1.Service{{Name: "web", Namespace: "shop", Traffic: tc.tp}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "web.shop") {
				t.Errorf("ValidateTraffic: %v, want an error about %q naming web.shop", err, tc.want)
			}
		})
	}
	if err := ValidateTraffic([]*meshv1.Service{{Name: "web", Namespace: "shop", Traffic: &meshv1.TrafficPolicy{}}}); err != nil {
		t.Errorf("empty policy: %v", err)
	}
}
