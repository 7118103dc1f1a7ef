//go:build linux

package netns

// Traffic management with real pods: a client pod sends steady load to a
// service address, and the test makes one endpoint slow, kills one, or
// flips an HTTPRoute from blue to green, counting every request the app
// sent and how it ended.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// delayedWebApp is webApp answering after delay (on every path), with
// its pod's name first; it returns the server so that the test can kill
// the app.
func delayedWebApp(t *testing.T, p *meshPod, delay time.Duration) *http.Server {
	t.Helper()
	l, err := p.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", webPort))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		fmt.Fprintf(w, "%s %s %s", p.Name, r.Proto, r.Header.Get("Rampart-Client-Id"))
	})}
	go srv.Serve(l) //nolint:errcheck // ends at Close
	t.Cleanup(func() { srv.Close() })
	return srv
}

// loadAnswer is one request of a load: when it was sent, when its answer
// was read, and the pod that answered (or what went wrong).
type loadAnswer struct {
	sent, done time.Time
	from       string
	err        error
}

// load is a few goroutines in a pod, each sending GETs to one URL, a
// pause between two.
type load struct {
	stop    atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers []loadAnswer
}

func startLoad(t *testing.T, p *meshPod, url string, workers int, pause time.Duration) *load {
	t.Helper()
	l := &load{}
	for range workers {
		hc := p.HTTPClient()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for !l.stop.Load() {
				a := loadAnswer{sent: time.Now()}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				body, err := doGet(hc, req)
				cancel()
				a.done, a.err = time.Now(), err
				if err == nil {
					a.from, _, _ = strings.Cut(body, " ")
				}
				l.mu.Lock()
				l.answers = append(l.answers, a)
				l.mu.Unlock()
				time.Sleep(pause)
			}
		}()
	}
	t.Cleanup(l.halt) // also when the test fails first
	return l
}

func doGet(hc *http.Client, req *http.Request) (string, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), nil
}

// halt stops the load and waits for the requests in flight.
func (l *load) halt() {
	l.stop.Store(true)
	l.wg.Wait()
}

func (l *load) snapshot() []loadAnswer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.answers)
}

// waitFor polls until n answers more than from have come.
func (l *load) waitFor(t *testing.T, from, n int) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if got := len(l.snapshot()) - from; got < n {
			return fmt.Errorf("%d answers of the %d awaited", got, n)
		}
		return nil
	})
}

// tally counts answers by the pod that answered, and the failures.
func tally(answers []loadAnswer) (by map[string]int, failed []loadAnswer) {
	by = map[string]int{}
	for _, a := range answers {
		if a.err != nil {
			failed = append(failed, a)
			continue
		}
		by[a.from]++
	}
	return by, failed
}

func reportFailures(t *testing.T, what string, total int, failed []loadAnswer) {
	t.Helper()
	if len(failed) == 0 {
		return
	}
	var first []string
	for _, a := range failed[:min(len(failed), 3)] {
		first = append(first, a.err.Error())
	}
	t.Errorf("%s: %d of %d requests failed; the first: %s", what, len(failed), total, strings.Join(first, "; "))
}

// TestTrafficSlowEndpointAndKill runs three endpoints of web, one of them
// 30 ms slower than the others: under steady load the slow one gets
// clearly less than its third; then one fast endpoint's app is killed
// under load, and no request fails (the client's proxy retries the GETs
// its dead app answered 502 on another endpoint).
func TestTrafficSlowEndpointAndKill(t *testing.T) {
	c := newCluster(t, "allow-any", map[string]string{"services.yaml": services})
	// The endpoints and their apps come first, so that the client's
	// first configuration holds all three: no warm-up skews the shares.
	web1 := c.addMeshPod("web-1", "web", "app=web")
	web2 := c.addMeshPod("web-2", "web", "app=web")
	slow := c.addMeshPod("web-slow", "web", "app=web")
	srv1 := delayedWebApp(t, web1, 0)
	delayedWebApp(t, web2, 0)
	delayedWebApp(t, slow, 30*time.Millisecond)
	client := c.addMeshPod("client", "client", "app=client")
	url := "http://" + webVIP + "/"

	hc := client.HTTPClient()
	seen := map[string]int{}
	eventually(t, 20*time.Second, func() error {
		body, err := get(hc, url)
		if err != nil {
			return err
		}
		from, _, _ := strings.Cut(body, " ")
		seen[from]++
		if len(seen) < 3 {
			return fmt.Errorf("answers so far by pod: %v", seen)
		}
		return nil
	})

	start := time.Now()
	l := startLoad(t, client, url, 4, 20*time.Millisecond)
	const phase = 500
	l.waitFor(t, 0, phase)
	steady := l.snapshot()
	by, failed := tally(steady)
	share := float64(by["web-slow"]) / float64(len(steady)-len(failed))
	t.Logf("steady: %d requests in %v, by pod %v, %d failed; the slow pod got %.1f%%",
		len(steady), time.Since(start).Round(time.Millisecond), by, len(failed), 100*share)
	if share >= 0.2 {
		t.Errorf("the slow pod got %.1f%% of the requests, want < 20%% (fair share 33%%)", 100*share)
	}

	retries := func(verdict string) float64 {
		return client.metric("rampart_proxy_retries_total", `service="web.default"`, `verdict="`+verdict+`"`)
	}
	retriedBefore := retries("retry")
	killedAt := len(l.snapshot())
	srv1.Close() // the listener and every connection to it: the app is gone
	kill := time.Now()
	// The client's proxy sends web-1 requests until outlier detection
	// ejects it: web-1's proxy answers them 502, having no app.
	eventually(t, 20*time.Second, func() error {
		if got := web1.metric("rampart_proxy_refusals_total", `direction="inbound"`, `reason="app_unavailable"`); got == 0 {
			return fmt.Errorf("web-1's proxy has not yet found its app gone")
		}
		return nil
	})
	l.waitFor(t, killedAt, phase)
	l.halt()
	all := l.snapshot()
	after := all[killedAt:]
	byAfter, _ := tally(after)
	late := 0 // answered by web-1 although sent after the kill
	for _, a := range after {
		if a.err == nil && a.from == "web-1" && a.sent.After(kill) {
			late++
		}
	}
	_, failedAll := tally(all)
	t.Logf("after the kill: %d requests in %v, by pod %v; in all %d requests, %d failed; retries %v (%v before the kill), refused by the budget %v; web-1's app_unavailable refusals %v, ejections %v",
		len(after), time.Since(kill).Round(time.Millisecond), byAfter, len(all), len(failedAll),
		retries("retry"), retriedBefore, retries("budget_exhausted"),
		web1.metric("rampart_proxy_refusals_total", `direction="inbound"`, `reason="app_unavailable"`),
		client.metric("rampart_proxy_endpoint_ejections_total", `service="web.default"`))
	reportFailures(t, "under load, with the slow pod and the kill", len(all), failedAll)
	if late > 0 {
		t.Errorf("%d requests sent after web-1's app was killed were answered by it", late)
	}
	if retries("retry") == retriedBefore {
		t.Errorf("no retry counted after the kill, yet web-1's proxy refused requests")
	}
}

const blueGreenServices = `apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  addresses: [` + webVIP + `]
  ports: [{port: 80, targetPort: 8080, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web-blue}
spec:
  selector: {app: web, version: blue}
  ports: [{port: 80, targetPort: 8080, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web-green}
spec:
  selector: {app: web, version: green}
  ports: [{port: 80, targetPort: 8080, protocol: HTTP}]
`

// blueGreenRoute sends web's requests to web-blue and web-green by weight.
func blueGreenRoute(blue, green int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs:
    - {name: web-blue, port: 80, weight: %d}
    - {name: web-green, port: 80, weight: %d}
`, namespace, blue, green)
}

// TestTrafficBlueGreenFlip flips web's route from blue to green under
// steady load: no request fails, and once a green answer came back every
// request sent after it is answered by green.
func TestTrafficBlueGreenFlip(t *testing.T) {
	c := newCluster(t, "allow-any", map[string]string{
		"services.yaml": blueGreenServices,
		"route.yaml":    blueGreenRoute(100, 0),
	})
	blue := c.addMeshPod("web-blue", "web", "app=web,version=blue")
	green := c.addMeshPod("web-green", "web", "app=web,version=green")
	delayedWebApp(t, blue, 0)
	delayedWebApp(t, green, 0)
	client := c.addMeshPod("client", "client", "app=client")
	url := "http://" + webVIP + "/"
	hc := client.HTTPClient()
	// Green works, by its own address (not routed)...
	eventually(t, 20*time.Second, func() error {
		body, err := get(hc, fmt.Sprintf("http://%s:%d/", green.IP, webPort))
		if err == nil && !strings.HasPrefix(body, "web-green ") {
			err = fmt.Errorf("answer %q from green's address", body)
		}
		return err
	})
	// ...and web is all blue.
	eventually(t, 20*time.Second, func() error {
		body, err := get(hc, url)
		if err == nil && !strings.HasPrefix(body, "web-blue ") {
			err = fmt.Errorf("answer %q, want web-blue", body)
		}
		return err
	})

	start := time.Now()
	l := startLoad(t, client, url, 4, 20*time.Millisecond)
	l.waitFor(t, 0, 150)
	flippedAt := len(l.snapshot())
	flip := time.Now()
	c.writeConfig("route.yaml", blueGreenRoute(0, 100))
	// The flip took effect when the first green answer came back: every
	// request sent after that must go to green. Wait for 300 of them.
	firstGreen := func(answers []loadAnswer) (loadAnswer, bool) {
		var first loadAnswer
		for _, a := range answers {
			if a.err == nil && a.from == "web-green" && (first.done.IsZero() || a.done.Before(first.done)) {
				first = a
			}
		}
		return first, !first.done.IsZero()
	}
	eventually(t, 30*time.Second, func() error {
		answers := l.snapshot()
		fg, ok := firstGreen(answers)
		if !ok {
			return fmt.Errorf("no green answer yet, %d requests after the route was rewritten", len(answers)-flippedAt)
		}
		n := 0
		for _, a := range answers {
			if a.sent.After(fg.done) {
				n++
			}
		}
		if n < 300 {
			return fmt.Errorf("%d requests sent after the first green answer, want 300", n)
		}
		return nil
	})
	l.halt()
	all := l.snapshot()
	by, failed := tally(all)
	fg, _ := firstGreen(all)
	var stale []loadAnswer // blue answers to requests sent after green answered
	lastBlue, afterGreen := flip, 0
	for _, a := range all {
		if a.err == nil && a.from == "web-blue" && a.sent.After(lastBlue) {
			lastBlue = a.sent
		}
		if !a.sent.After(fg.done) {
			continue
		}
		afterGreen++
		if a.err == nil && a.from != "web-green" {
			stale = append(stale, a)
		}
	}
	t.Logf("%d requests in %v (%.0f/s), by pod %v, %d failed; %d sent before the route was rewritten; the first green answer came %v after the write (its request sent %v after it), the last blue answer was to a request sent %v after it; %d requests sent after the first green answer",
		len(all), time.Since(start).Round(time.Millisecond), float64(len(all))/time.Since(start).Seconds(), by, len(failed), flippedAt,
		fg.done.Sub(flip).Round(time.Millisecond), fg.sent.Sub(flip).Round(time.Millisecond), lastBlue.Sub(flip).Round(time.Millisecond), afterGreen)
	reportFailures(t, "across the flip", len(all), failed)
	if len(stale) > 0 {
		t.Errorf("%d of the %d requests sent after the first green answer were answered by %s", len(stale), afterGreen, stale[0].from)
	}
	if by["web-blue"] == 0 {
		t.Errorf("no blue answer: the load did not span the flip")
	}
}

// togglingWebApp is webApp answering 503 while failing is set; it counts
// the requests it receives, whatever it answers.
func togglingWebApp(t *testing.T, p *meshPod, failing *atomic.Bool, hits *atomic.Int64) {
	t.Helper()
	l, err := p.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", webPort))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if failing.Load() {
			http.Error(w, p.Name+" is failing", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "%s %s %s", p.Name, r.Proto, r.Header.Get("Rampart-Client-Id"))
	})}
	go srv.Serve(l) //nolint:errcheck // ends at Close
	t.Cleanup(func() { srv.Close() })
}

// ejectionPolicy shortens web's ejections so that the test sees one end,
// and balances round-robin: PeakEWMA's failure penalty alone already
// steers requests away from an endpoint that fails fast, so that it
// reaches five failures in a row only slowly; round-robin leaves the
// ejection to outlier detection.
const ejectionPolicy = `apiVersion: rampart.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web}
spec:
  targetRefs: [{kind: Service, name: web}]
  loadBalancer: RoundRobin
  outlierDetection:
    consecutiveFailures: 5
    baseEjectionTime: 5s
`

// TestTrafficEjectAndReturn runs three endpoints of web under steady
// load; one starts answering 503: the client's proxy ejects it
// (rampart_proxy_endpoint_ejections_total) and its share of the requests
// drops to about nothing while it is out, the GETs it failed being
// retried on the others. Then it heals, and once its ejection is over it
// takes its share again.
func TestTrafficEjectAndReturn(t *testing.T) {
	c := newCluster(t, "allow-any", map[string]string{"services.yaml": services, "traffic.yaml": ejectionPolicy})
	var (
		failing atomic.Bool
		hits    [3]atomic.Int64
	)
	names := []string{"web-1", "web-2", "web-3"}
	for i, name := range names {
		p := c.addMeshPod(name, "web", "app=web")
		var never atomic.Bool
		if i == 0 {
			togglingWebApp(t, p, &failing, &hits[i])
		} else {
			togglingWebApp(t, p, &never, &hits[i])
		}
	}
	client := c.addMeshPod("client", "client", "app=client")
	url := "http://" + webVIP + "/"
	hc := client.HTTPClient()
	seen := map[string]int{}
	eventually(t, 20*time.Second, func() error {
		body, err := get(hc, url)
		if err != nil {
			return err
		}
		from, _, _ := strings.Cut(body, " ")
		seen[from]++
		if len(seen) < 3 {
			return fmt.Errorf("answers so far by pod: %v", seen)
		}
		return nil
	})
	ejections := func() float64 {
		return client.metric("rampart_proxy_endpoint_ejections_total", `service="web.default"`)
	}
	hitsNow := func() (out [3]int64) {
		for i := range hits {
			out[i] = hits[i].Load()
		}
		return out
	}
	share := func(from, to [3]int64) (float64, int64) {
		var total int64
		for i := range from {
			total += to[i] - from[i]
		}
		if total == 0 {
			return 0, 0
		}
		return float64(to[0]-from[0]) / float64(total), total
	}

	l := startLoad(t, client, url, 4, 20*time.Millisecond)
	l.waitFor(t, 0, 200)
	steadyFrom := hitsNow()
	l.waitFor(t, 200, 300)
	steadyShare, steadyN := share(steadyFrom, hitsNow())
	t.Logf("steady: web-1 got %.1f%% of %d requests", 100*steadyShare, steadyN)

	before := ejections()
	failing.Store(true)
	failStart := time.Now()
	eventually(t, 20*time.Second, func() error {
		if ejections() == before {
			return fmt.Errorf("web-1 answers 503 and is not ejected yet")
		}
		return nil
	})
	ejectedAfter := time.Since(failStart)
	// While it is out (the first ejection lasts 5 s; it fails again when
	// it comes back, and is ejected for longer), it gets almost nothing.
	outFrom, outStart := hitsNow(), time.Now()
	n := len(l.snapshot())
	l.waitFor(t, n, 150)
	outShare, outN := share(outFrom, hitsNow())
	t.Logf("web-1 failing: ejected %v after it started answering 503 (ejections %v); then it got %.1f%% of %d requests over %v",
		ejectedAfter.Round(time.Millisecond), ejections(), 100*outShare, outN, time.Since(outStart).Round(time.Millisecond))
	if outShare > 0.05 {
		t.Errorf("ejected web-1 got %.1f%% of the requests, want about none (< 5%%)", 100*outShare)
	}

	failing.Store(false)
	heal := time.Now()
	// It comes back when its ejection ends (at most the 5 min cap; here
	// seconds), answers, warms up and takes its share again.
	var backFrom [3]int64
	eventually(t, 90*time.Second, func() error {
		now := hitsNow()
		if backFrom == ([3]int64{}) {
			backFrom = now
		}
		// Over windows of 150 requests.
		s, total := share(backFrom, now)
		switch {
		case total < 150:
			return fmt.Errorf("%d requests in this window so far", total)
		case s < steadyShare/3:
			backFrom = now
			return fmt.Errorf("web-1 got %.1f%% of the last %d requests, want at least %.1f%%", 100*s, total, 100*steadyShare/3)
		}
		return nil
	})
	back := time.Since(heal)
	l.halt()
	all := l.snapshot()
	by, failed := tally(all)
	t.Logf("healed: web-1 back to a share %v after it healed; in all %d requests, by pod %v, %d failed; ejections %v; retries %v, refused by the budget %v",
		back.Round(time.Millisecond), len(all), by, len(failed), ejections(),
		client.metric("rampart_proxy_retries_total", `service="web.default"`, `verdict="retry"`),
		client.metric("rampart_proxy_retries_total", `service="web.default"`, `verdict="budget_exhausted"`))
	reportFailures(t, "across the failure, ejection and return", len(all), failed)
}
