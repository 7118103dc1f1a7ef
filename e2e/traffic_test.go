package e2e

// Traffic management end to end: one client proxy balancing over three
// server proxies of one service, each reached through a relay in front of
// its tunnel listener, so that the test can make one endpoint slow (the
// relay delays what the endpoint sends back) or kill it (the relay cuts
// its connections and refuses new ones, as when its node dies). The
// server proxies share one app: what tells the endpoints apart is the
// relay, and each server proxy's inbound request count.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampart-mesh/rampart/internal/proxy"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
)

// relay forwards TCP connections to a proxy's tunnel listener, delaying
// what comes back.
type relay struct {
	l      net.Listener
	target atomic.Pointer[string]
	delay  time.Duration

	mu    sync.Mutex
	conns map[net.Conn]bool
	dead  bool
}

func newRelay(t *testing.T, delay time.Duration) *relay {
	t.Helper()
	r := &relay{l: listen(t), delay: delay, conns: make(map[net.Conn]bool)}
	go r.serve()
	t.Cleanup(r.kill)
	return r
}

func (r *relay) addr() string { return r.l.Addr().String() }

func (r *relay) serve() {
	for {
		c, err := r.l.Accept()
		if err != nil {
			return
		}
		go r.carry(c)
	}
}

// track registers c, unless the relay is dead.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		return false
	}
	r.conns[c] = true
	return true
}

func (r *relay) carry(c net.Conn) {
	target := r.target.Load()
	if target == nil || !r.track(c) {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", *target)
	if err != nil || !r.track(up) {
		c.Close()
		if up != nil {
			up.Close()
		}
		return
	}
	defer c.Close()
	defer up.Close()
	go func() {
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
	}()
	delayedCopy(c, up, r.delay)
}

// delayedCopy copies src to dst, each chunk written delay after it was
// read: latency without a bound on throughput.
func delayedCopy(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			src.Close()
			for range ch {
			}
			return
		}
	}
	dst.(*net.TCPConn).CloseWrite()
}

// kill closes the relay's listener and cuts every connection.
func (r *relay) kill() {
	r.l.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dead = true
	for c := range r.conns {
		c.Close()
	}
}

// startRelayedProxy starts a proxy that peers reach through r.
func (m *mesh) startRelayedProxy(name string, labels map[string]string, r *relay) *runningProxy {
	m.t.Helper()
	roots, err := proxy.LoadBundle(m.bundlePath)
	if err != nil {
		m.t.Fatal(err)
	}
	p, err := proxy.New(proxy.Config{
		Controller:     m.ctrlAddr,
		TrustBundle:    roots,
		JoinToken:      m.token(name),
		Namespace:      ns,
		ServiceAccount: name,
		Workload:       name,
		Labels:         labels,
		TunnelListen:   "127.0.0.1:0",
		Advertise:      r.addr(),
		AdminListen:    "127.0.0.1:0",
		DrainTimeout:   2 * time.Second,
		Logger:         m.logger(name),
	})
	if err != nil {
		m.t.Fatalf("proxy %s: %v", name, err)
	}
	target := p.TunnelAddr()
	r.target.Store(&target)
	ctx, cancel := context.WithCancel(context.Background())
	rp := &runningProxy{Proxy: p, cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- p.Run(ctx) }()
	m.t.Cleanup(func() {
		cancel()
		<-rp.done
	})
	eventually(m.t, 10*time.Second, func() error {
		if !p.Ready() {
			return fmt.Errorf("proxy %s not ready", name)
		}
		return nil
	})
	return rp
}

// trafficMesh is a client proxy and three relayed server proxies of the
// service "web", whose app answers after appDelay.
type trafficMesh struct {
	client  *runningProxy
	servers []*runningProxy
	relays  []*relay
	appPort int
}

func newTrafficMesh(t *testing.T, delays [3]time.Duration, appDelay time.Duration) *trafficMesh {
	t.Helper()
	hl := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(appDelay)
		io.WriteString(w, "ok")
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	tm := &trafficMesh{appPort: port(hl)}
	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %s}
spec:
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: %d, protocol: HTTP}]
`, ns, tm.appPort))
	for i, d := range delays {
		r := newRelay(t, d)
		tm.relays = append(tm.relays, r)
		tm.servers = append(tm.servers, m.startRelayedProxy(fmt.Sprintf("server%d", i), map[string]string{"app": "server"}, r))
	}
	tm.client = m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
	// Until the client knows all three endpoints: each has answered.
	eventually(t, 10*time.Second, func() error {
		get(tm.client.UpstreamAddr(0), "/", nil)
		for i := range tm.servers {
			if tm.served(i) == 0 {
				return fmt.Errorf("server%d has served nothing yet", i)
			}
		}
		return nil
	})
	return tm
}

// served is how many requests server i passed to the app.
func (tm *trafficMesh) served(i int) float64 {
	return metrics.Value(tm.servers[i].Metrics().Requests,
		"direction", "inbound", "src_identity", tm.client.ID().String(), "dst_service", fmt.Sprintf(":%d", tm.appPort), "code", "200")
}

func (tm *trafficMesh) servedAll() (out [3]float64) {
	for i := range out {
		out[i] = tm.served(i)
	}
	return out
}

func (tm *trafficMesh) retries(verdict string) float64 {
	return testutil.ToFloat64(tm.client.Metrics().Retries.WithLabelValues("web."+ns, verdict))
}

// load sends total GETs from workers concurrent clients; it returns how
// many failed, and calls midway once half of them were sent.
func (tm *trafficMesh) load(workers, total int, midway func()) (failed int64) {
	var (
		next atomic.Int64
		bad  atomic.Int64
		once sync.Once
		wg   sync.WaitGroup
	)
	addr := tm.client.UpstreamAddr(0)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer c.CloseIdleConnections()
			for {
				n := next.Add(1)
				if n > int64(total) {
					return
				}
				if n == int64(total)/2 && midway != nil {
					once.Do(midway)
				}
				res, err := c.Get("http://" + addr + "/")
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return bad.Load()
}

func TestTrafficAvoidsASlowEndpoint(t *testing.T) {
	// The app answers in 2 ms; the third endpoint's answers take 50 ms
	// more to come back: over ten times slower, by a margin that a busy
	// machine's scheduling delays on the fast endpoints do not hide.
	tm := newTrafficMesh(t, [3]time.Duration{0, 0, 50 * time.Millisecond}, 2*time.Millisecond)
	before := tm.servedAll()
	const total = 400
	if failed := tm.load(8, total, nil); failed != 0 {
		t.Fatalf("%d of %d requests failed", failed, total)
	}
	after := tm.servedAll()
	var got [3]float64
	sum := 0.0
	for i := range got {
		got[i] = after[i] - before[i]
		sum += got[i]
	}
	share := got[2] / sum
	t.Logf("requests per endpoint %v; the slow one got %.1f%%", got, 100*share)
	if sum != total {
		t.Fatalf("the servers passed %v requests to the app for %d sent", sum, total)
	}
	if share >= 0.2 {
		t.Fatalf("the slow endpoint got %.1f%% of the requests, want < 20%% (fair share 33%%)", 100*share)
	}
}

func TestTrafficSurvivesAnEndpointDyingUnderLoad(t *testing.T) {
	tm := newTrafficMesh(t, [3]time.Duration{}, time.Millisecond)
	before := tm.servedAll()
	const total = 600
	failed := tm.load(8, total, func() { tm.relays[0].kill() })
	after := tm.servedAll()
	retried, overBudget := tm.retries("retry"), tm.retries("budget_exhausted")
	ejections := testutil.ToFloat64(tm.client.Metrics().Ejections.WithLabelValues("web." + ns))
	t.Logf("served per endpoint %v (before %v); failed %d of %d; retries %v, over budget %v, ejections %v",
		after, before, failed, total, retried, overBudget, ejections)
	// A request in flight on the dead endpoint broke and a new one could
	// not connect: both are retried on another endpoint (GET is
	// idempotent). The budget allows 100 retries plus a fifth of the
	// requests per 10 s, far more than this needs: nothing fails.
	if failed != 0 {
		t.Fatalf("%d of %d requests failed", failed, total)
	}
	if overBudget != 0 {
		t.Fatalf("%v retries refused by the budget", overBudget)
	}
}
