package outbound

// Balancing, retries and outlier ejection through a real Outbound: the app
// side is an upstream listener, the peers are HTTP/2 servers behind real
// tunnel listeners with certificates from an in-process CA, answering as
// a peer proxy would (the test sets how).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampart-mesh/rampart/internal/ca"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/balance"
	"github.com/rampart-mesh/rampart/internal/proxy/balance/retry"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

var testTD = spiffeid.RequireTrustDomainFromString("traffic.rampart.test")

const testService = "orders.test"

// fakePeer is one endpoint: an HTTP/2 server behind a tunnel listener.
type fakePeer struct {
	id      spiffeid.ID
	addr    string
	hits    atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]
	stop    func()
}

func (p *fakePeer) set(h http.HandlerFunc) { p.handler.Store(&h) }

// trafficRig is an Outbound with one upstream to testService and its
// peers.
type trafficRig struct {
	t       *testing.T
	o       *Outbound
	m       *metrics.Metrics
	peers   []*fakePeer
	app     string // the upstream's address
	version int
}

func svidConfig(t *testing.T, authority *ca.CA, bundle *meshtls.Bundle, id spiffeid.ID) meshtls.Config {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	chain, err := authority.SignCSR(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := new(meshtls.SVID)
	if err := s.Set(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	return meshtls.Config{SVID: s, Bundle: bundle}
}

// newTrafficRig starts n peers answering 200 and an Outbound configured
// by adjust.
func newTrafficRig(t *testing.T, n int, adjust func(*Config)) *trafficRig {
	t.Helper()
	authority, err := ca.Open(ca.Config{Dir: t.TempDir(), TrustDomain: testTD})
	if err != nil {
		t.Fatal(err)
	}
	bundle := new(meshtls.Bundle)
	bundle.SetRoots(testTD, authority.Roots())
	rig := &trafficRig{t: t, m: metrics.New()}
	for i := range n {
		p := &fakePeer{id: spiffeid.RequireFromPath(testTD, fmt.Sprintf("/ns/test/sa/peer%d", i))}
		p.set(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := tunnel.NewListener(inner, tunnel.ListenerConfig{TLS: svidConfig(t, authority, bundle, p.id).Server(nil)})
		var protos http.Protocols
		protos.SetHTTP2(true)
		srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.hits.Add(1)
			if r.Method != http.MethodConnect {
				// A stream's handler reads its body as it goes.
				io.Copy(io.Discard, r.Body)
			}
			(*p.handler.Load())(w, r)
		})}
		go srv.Serve(l)
		var once sync.Once
		p.stop = func() { once.Do(func() { srv.Close(); l.Wait() }) }
		t.Cleanup(p.stop)
		p.addr = l.Addr().String()
		rig.peers = append(rig.peers, p)
	}
	d, err := tunnel.NewDialer(tunnel.DialerConfig{
		TLS: svidConfig(t, authority, bundle, spiffeid.RequireFromPath(testTD, "/ns/test/sa/client")),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	cfg := Config{
		Upstreams: []Upstream{{Service: testService, Listen: "127.0.0.1:0"}},
		Namespace: "test", Dialer: d, Metrics: rig.m, DrainTimeout: time.Second,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rig.o, rig.app = o, o.Addr(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	rig.configure(rig.peers...)
	return rig
}

// configure makes peers the service's endpoints.
func (rig *trafficRig) configure(peers ...*fakePeer) {
	rig.version++
	svc := &meshv1.Service{
		Name: "orders", Namespace: "test",
		Ports: []*meshv1.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
	}
	for _, p := range peers {
		svc.Endpoints = append(svc.Endpoints, &meshv1.Endpoint{Address: p.addr, SpiffeId: p.id.String()})
	}
	rig.o.Update(&meshv1.ProxyConfig{Version: fmt.Sprint(rig.version), Services: []*meshv1.Service{svc}})
}

// get sends one request through the upstream and returns its status.
func (rig *trafficRig) do(c *http.Client, method string) (int, error) {
	req, _ := http.NewRequest(method, "http://"+rig.app+"/", nil)
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

func (rig *trafficRig) hits() []int64 {
	out := make([]int64, len(rig.peers))
	for i, p := range rig.peers {
		out[i] = p.hits.Load()
	}
	return out
}

func (rig *trafficRig) retries(verdict retry.Verdict) float64 {
	return testutil.ToFloat64(rig.m.Retries.WithLabelValues(testService, verdict.String()))
}

func (rig *trafficRig) ejections() float64 {
	return testutil.ToFloat64(rig.m.Ejections.WithLabelValues(testService))
}

// ejectedNow counts the endpoints out now, as the balancer says.
func (rig *trafficRig) ejectedNow() int {
	n := 0
	for _, eps := range rig.o.Endpoints() {
		for _, st := range eps {
			if !st.EjectedUntil.IsZero() {
				n++
			}
		}
	}
	return n
}

// load sends total requests from workers concurrent clients and returns
// how many failed (an error or a status other than 200).
func (rig *trafficRig) load(workers, total int) (failed int64) {
	var (
		next atomic.Int64
		bad  atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer c.CloseIdleConnections()
			for next.Add(1) <= int64(total) {
				if code, err := rig.do(c, http.MethodGet); err != nil || code != http.StatusOK {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return bad.Load()
}

// A fake clock for the balancer and the budget.
type fakeClock struct{ ns atomic.Int64 }

var clockBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time          { return clockBase.Add(time.Duration(c.ns.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestSlowEndpointGetsLessTraffic(t *testing.T) {
	rig := newTrafficRig(t, 3, nil)
	for i, p := range rig.peers {
		// 5 ms against 50 ms: ten times slower, with a base large enough
		// that a busy machine's scheduling delays do not blur the two.
		delay := 5 * time.Millisecond
		if i == 2 {
			delay = 50 * time.Millisecond
		}
		p.set(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(delay)
			io.WriteString(w, "ok")
		})
	}
	const total = 600
	if failed := rig.load(8, total); failed != 0 {
		t.Fatalf("%d of %d requests failed", failed, total)
	}
	hits := rig.hits()
	share := float64(hits[2]) / total
	t.Logf("requests per endpoint %v; the slow one got %.1f%%", hits, 100*share)
	if share >= 0.2 {
		t.Fatalf("the 10x slower endpoint got %.1f%% of the requests, want < 20%% (fair share 33%%)", 100*share)
	}
}

func TestPeerDecisionIsNeitherRetriedNorHeldAgainstTheEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer http.HandlerFunc
		want   int
	}{
		{"policy denial", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(tunnel.HeaderDecisionID, "3f9a1c07b2e4")
			http.Error(w, "rampart: denied", http.StatusForbidden)
		}, http.StatusForbidden},
		{"rate limit", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(tunnel.HeaderDecisionID, "3f9a1c07b2e5")
			w.Header().Set("Retry-After", "1")
			http.Error(w, "rampart: rate limit", http.StatusTooManyRequests)
		}, http.StatusTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newTrafficRig(t, 2, nil)
			for _, p := range rig.peers {
				p.set(tc.answer)
			}
			c := &http.Client{}
			const n = 20 // four times what ejects an endpoint that fails
			for range n {
				code, err := rig.do(c, http.MethodGet)
				if err != nil || code != tc.want {
					t.Fatalf("answer %d, %v; want %d", code, err, tc.want)
				}
			}
			if h := rig.hits(); h[0]+h[1] != n {
				t.Fatalf("the peers saw %v requests for %d sent: refusals were retried", h, n)
			}
			if got := testutil.CollectAndCount(rig.m.Retries); got != 0 {
				t.Fatalf("%d retry series, want none", got)
			}
			if rig.ejections() != 0 || rig.ejectedNow() != 0 {
				t.Fatalf("%v ejections, %d out now: a refusal counted against the endpoint", rig.ejections(), rig.ejectedNow())
			}
		})
	}
}

func TestIdempotentRequestsAreRetriedOnAnotherEndpoint(t *testing.T) {
	rig := newTrafficRig(t, 2, func(c *Config) {
		// Both endpoints in turn, so that the failing one keeps getting
		// requests.
		c.Balance.Mode = balance.RoundRobin
		c.Balance.Outlier.ConsecutiveFailures = -1
		c.Balance.Outlier.FailureRate = -1
	})
	rig.peers[0].set(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "app down", http.StatusServiceUnavailable)
	})
	c := &http.Client{}
	const n = 20
	for range n {
		if code, err := rig.do(c, http.MethodGet); err != nil || code != http.StatusOK {
			t.Fatalf("GET: %d, %v; want 200 from the other endpoint", code, err)
		}
	}
	if got := rig.retries(retry.Retry); got == 0 || got != float64(rig.peers[0].hits.Load()) {
		t.Fatalf("%v retries, %d 503s from the failing endpoint: want one retry per 503", got, rig.peers[0].hits.Load())
	}
	// A POST answered 503 is not retried: it may have been acted on.
	before := rig.hits()
	for range n {
		code, err := rig.do(c, http.MethodPost)
		if err != nil || (code != http.StatusOK && code != http.StatusServiceUnavailable) {
			t.Fatalf("POST: %d, %v", code, err)
		}
	}
	after := rig.hits()
	if sent := after[0] + after[1] - before[0] - before[1]; sent != n {
		t.Fatalf("the peers saw %d POSTs for %d sent", sent, n)
	}
	if rig.retries(retry.NotRetryable) == 0 {
		t.Fatal("no not_retryable verdict counted for POSTs answered 503")
	}
}

func TestFailingEndpointIsEjectedAndComesBack(t *testing.T) {
	var clock fakeClock
	rig := newTrafficRig(t, 3, func(c *Config) {
		// Round-robin keeps sending the failing endpoint its share until
		// ejection takes it out (peak EWMA would avoid it first).
		c.Balance.Mode = balance.RoundRobin
		c.Balance.Now = clock.Now
		c.Budget.Now = clock.Now
	})
	var broken atomic.Bool
	broken.Store(true)
	bad := rig.peers[0]
	bad.set(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			http.Error(w, "app down", http.StatusBadGateway)
			return
		}
		io.WriteString(w, "ok")
	})
	c := &http.Client{}
	// Until it is ejected (five failures in a row), every GET still
	// succeeds: a 502 is retried on another endpoint.
	for i := 0; rig.ejections() == 0; i++ {
		if i == 200 {
			t.Fatalf("not ejected after %d requests; it answered %d", i, bad.hits.Load())
		}
		if code, err := rig.do(c, http.MethodGet); err != nil || code != http.StatusOK {
			t.Fatalf("GET: %d, %v", code, err)
		}
	}
	if got := bad.hits.Load(); got != outlierConsecutive {
		t.Errorf("ejected after %d failures, want %d", got, outlierConsecutive)
	}
	if n := rig.ejectedNow(); n != 1 {
		t.Fatalf("%d endpoints out, want 1", n)
	}
	if got := gaugeValue(t, rig.m, testService); got != 1 {
		t.Fatalf("rampart_proxy_endpoints_ejected = %v, want 1", got)
	}
	// While out, it gets nothing.
	before := bad.hits.Load()
	for range 30 {
		if code, err := rig.do(c, http.MethodGet); err != nil || code != http.StatusOK {
			t.Fatalf("GET: %d, %v", code, err)
		}
	}
	if got := bad.hits.Load() - before; got != 0 {
		t.Fatalf("the ejected endpoint got %d requests", got)
	}
	// A configuration push that keeps it does not bring it back early.
	rig.configure(rig.peers...)
	if n := rig.ejectedNow(); n != 1 {
		t.Fatalf("after an update, %d endpoints out, want 1", n)
	}
	// Its first ejection lasts BaseEjection; then it is back, healthy.
	broken.Store(false)
	clock.Advance(30*time.Second + time.Nanosecond)
	for range 30 {
		if code, err := rig.do(c, http.MethodGet); err != nil || code != http.StatusOK {
			t.Fatalf("GET: %d, %v", code, err)
		}
	}
	if bad.hits.Load() == before {
		t.Fatal("the endpoint got no request after its ejection ended")
	}
	if n := rig.ejectedNow(); n != 0 {
		t.Fatalf("%d endpoints out after the ejection ended, want 0", n)
	}
	if got := gaugeValue(t, rig.m, testService); got != 0 {
		t.Fatalf("rampart_proxy_endpoints_ejected = %v, want 0", got)
	}
}

// outlierConsecutive is the default number of failures in a row that
// eject an endpoint.
const outlierConsecutive = 5

// gaugeValue reads rampart_proxy_endpoints_ejected for a service.
func gaugeValue(t *testing.T, m *metrics.Metrics, service string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rampart_proxy_endpoints_ejected" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "service" && l.GetValue() == service {
					return mt.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no rampart_proxy_endpoints_ejected series for %s", service)
	return 0
}

func TestEndpointLossUnderLoadIsRetried(t *testing.T) {
	rig := newTrafficRig(t, 3, nil)
	for _, p := range rig.peers {
		p.set(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Millisecond)
			io.WriteString(w, "ok")
		})
	}
	const total = 600
	var failed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		failed.Store(rig.load(8, total))
	}()
	// Kill one endpoint once a third of the load went out: its
	// connections are cut and new ones refused, as when a node dies.
	for rig.peers[0].hits.Load()+rig.peers[1].hits.Load()+rig.peers[2].hits.Load() < total/3 {
		time.Sleep(time.Millisecond)
	}
	rig.peers[0].stop()
	<-done
	t.Logf("requests per endpoint %v; failed %d of %d; retries %v, ejections %v",
		rig.hits(), failed.Load(), total, rig.retries(retry.Retry), rig.ejections())
	// Requests in flight on the killed endpoint broke (GETs: retried) and
	// later ones could not connect (retried): none reaches the app as a
	// failure while the budget lasts, and 600 requests stay far within it.
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), total)
	}
}
