package main

// The traffic scenario: a mesh under a fixed request rate loses an
// endpoint, then has its HTTPRoute flipped from blue to green. It reports
// the requests that failed in each phase and how long the route change
// took to reach every client proxy.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Shape of the traffic scenario.
const (
	trafficClients   = 3 // client proxies, each with its own --upstream listener
	trafficBlue      = 3 // endpoints of web-blue: rampart-proxy processes in front of the blue app
	trafficGreen     = 2
	trafficWarmup    = 3 * time.Second
	trafficKillPhase = 5 * time.Second
	trafficFlipPhase = 5 * time.Second
	// trafficTimeout bounds one request of the load.
	trafficTimeout = 5 * time.Second
)

// trafficResult is the traffic scenario's part of results.json.
type trafficResult struct {
	RPS         int     `json:"rps"`          // the fixed rate asked for, all clients together
	AchievedRPS float64 `json:"achieved_rps"` // requests sent over the whole run, per second
	Clients     int     `json:"clients"`
	Blue        int     `json:"blue_endpoints"`
	Green       int     `json:"green_endpoints"`
	// Warmup, Kill and Flip count the requests sent in each phase and how
	// many failed (an error, or a status other than 200).
	Warmup trafficPhase `json:"warmup"`
	Kill   trafficPhase `json:"kill"`
	Flip   trafficPhase `json:"flip"`
	// PropagationMs is, from the write of the HTTPRoute file, how long
	// until a request of every client proxy had reached green: the
	// largest of PropagationMsByClient.
	PropagationMs         float64   `json:"propagation_ms"`
	PropagationMsByClient []float64 `json:"propagation_ms_by_client"`
	// StaleAfterGreen counts the requests answered by blue although their
	// client proxy had already sent one to green before they were sent.
	StaleAfterGreen int `json:"stale_after_green"`
	// Retries and BudgetExhausted add up rampart_proxy_retries_total of
	// the client proxies (verdict retry, budget_exhausted).
	Retries         float64 `json:"retries"`
	BudgetExhausted float64 `json:"budget_exhausted"`
}

type trafficPhase struct {
	Requests    int      `json:"requests"`
	Failed      int      `json:"failed"`
	FirstErrors []string `json:"first_errors,omitempty"`
}

// trafficServices declares web, routed, and its two versions; the blue
// and green apps listen on their own ports of the one host, and every
// endpoint of a version forwards to its version's app.
func trafficServices(bluePort, greenPort int) string {
	svc := func(name, selector string, port int) string {
		return fmt.Sprintf(`---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata:
  name: %s
  namespace: %s
spec:
  selector: {%s}
  ports:
  - port: 80
    targetPort: %d
    protocol: HTTP
`, name, meshNamespace, selector, port)
	}
	return "# Written by bench/sidecars: the traffic scenario's services.\n" +
		svc("web", "app: web", bluePort) +
		svc("web-blue", "app: web, color: blue", bluePort) +
		svc("web-green", "app: web, color: green", greenPort)
}

// trafficRoute sends web's requests to blue and green by weight.
func trafficRoute(blue, green int) string {
	return fmt.Sprintf(`# Written by bench/sidecars: web's route.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: %s
spec:
  parentRefs:
  - {group: "", kind: Service, name: web, port: 80}
  rules:
  - backendRefs:
    - {name: web-blue, port: 80, weight: %d}
    - {name: web-green, port: 80, weight: %d}
`, meshNamespace, blue, green)
}

// writeAtomically replaces path with data by a rename, as a config
// management tool would, so that the controller never reads half a file.
func writeAtomically(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// colorApp answers its color and records, per calling identity
// (Rampart-Client-Id), when its first request arrived.
type colorApp struct {
	color string
	srv   *http.Server
	mu    sync.Mutex
	first map[string]time.Time
}

func startColorApp(color string, port int) (*colorApp, error) {
	l, err := net.Listen("tcp", addr(port))
	if err != nil {
		return nil, err
	}
	a := &colorApp{color: color, first: make(map[string]time.Time)}
	a.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		id := r.Header.Get("Rampart-Client-Id")
		a.mu.Lock()
		if _, ok := a.first[id]; !ok {
			a.first[id] = now
		}
		a.mu.Unlock()
		io.WriteString(w, a.color)
	})}
	go a.srv.Serve(l) //nolint:errcheck // ends at Close
	return a, nil
}

func (a *colorApp) firstFrom(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.first[id]
	return t, ok
}

// trafficAnswer is one request of the load.
type trafficAnswer struct {
	client     int
	sent, done time.Time
	color      string
	err        string // "" for a 200
}

// trafficLoad sends GETs to each client's upstream listener at a fixed
// combined rate, open loop: a request is sent on time whether or not the
// earlier ones were answered.
type trafficLoad struct {
	mu      sync.Mutex
	answers []trafficAnswer
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startTrafficLoad(urls []string, rps int) *trafficLoad {
	l := &trafficLoad{stop: make(chan struct{})}
	interval := time.Duration(int64(time.Second) * int64(len(urls)) / int64(rps))
	for i, url := range urls {
		hc := &http.Client{
			Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 256},
			Timeout:   trafficTimeout,
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer hc.CloseIdleConnections()
			var inflight sync.WaitGroup
			defer inflight.Wait()
			// Each client starts at its own offset in the interval.
			next := time.Now().Add(interval * time.Duration(i) / time.Duration(len(urls)))
			for {
				select {
				case <-l.stop:
					return
				case <-time.After(time.Until(next)):
				}
				next = next.Add(interval)
				inflight.Add(1)
				go func() {
					defer inflight.Done()
					a := trafficAnswer{client: i, sent: time.Now()}
					a.color, a.err = trafficGet(hc, url)
					a.done = time.Now()
					l.mu.Lock()
					l.answers = append(l.answers, a)
					l.mu.Unlock()
				}()
			}
		}()
	}
	return l
}

func trafficGet(hc *http.Client, url string) (color, errMsg string) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Sprintf("%s: %s", resp.Status, truncate(strings.TrimSpace(string(b)), 120))
	}
	return string(b), ""
}

// halt stops sending and waits for the answers of the requests in flight.
func (l *trafficLoad) halt() []trafficAnswer {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Slice(l.answers, func(i, j int) bool { return l.answers[i].sent.Before(l.answers[j].sent) })
	return l.answers
}

// phase counts the answers to requests sent in [from, to).
func phase(answers []trafficAnswer, from, to time.Time) trafficPhase {
	var p trafficPhase
	for _, a := range answers {
		if a.sent.Before(from) || !a.sent.Before(to) {
			continue
		}
		p.Requests++
		if a.err != "" {
			p.Failed++
			if len(p.FirstErrors) < 3 {
				p.FirstErrors = append(p.FirstErrors, a.err)
			}
		}
	}
	return p
}

// measureTraffic runs the traffic scenario with its own controller.
func (b *bench) measureTraffic(ctx context.Context) (*trafficResult, error) {
	o := b.opts
	res := &trafficResult{RPS: o.trafficRPS, Clients: trafficClients, Blue: trafficBlue, Green: trafficGreen}
	bluePort, err := b.port("the traffic scenario's blue app")
	if err != nil {
		return nil, err
	}
	greenPort, err := b.port("the traffic scenario's green app")
	if err != nil {
		return nil, err
	}
	blue, err := startColorApp("blue", bluePort)
	if err != nil {
		return nil, err
	}
	defer blue.srv.Close()
	green, err := startColorApp("green", greenPort)
	if err != nil {
		return nil, err
	}
	defer green.srv.Close()

	cfgDir := filepath.Join(b.dir, "traffic-mesh")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "services.yaml"), []byte(trafficServices(bluePort, greenPort)), 0o644); err != nil {
		return nil, err
	}
	routePath := filepath.Join(cfgDir, "route.yaml")
	if err := os.WriteFile(routePath, []byte(trafficRoute(100, 0)), 0o644); err != nil {
		return nil, err
	}
	ctrl, err := startController(ctx, b.sup, b.bin, b.dir, "traffic-controller", cfgDir, b.ports)
	if err != nil {
		return nil, err
	}
	var blues []*rampartProxy
	for i := range trafficBlue {
		p, err := ctrl.startProxy(ctx, b.sup, b.dir, proxySpec{name: fmt.Sprintf("blue-%d", i+1), labels: "app=web,color=blue"}, b.ports)
		if err != nil {
			return nil, err
		}
		blues = append(blues, p)
	}
	for i := range trafficGreen {
		if _, err := ctrl.startProxy(ctx, b.sup, b.dir, proxySpec{name: fmt.Sprintf("green-%d", i+1), labels: "app=web,color=green"}, b.ports); err != nil {
			return nil, err
		}
	}
	var (
		clients []*rampartProxy
		urls    []string
		ids     []string
	)
	for i := range trafficClients {
		port, err := b.port("a traffic client's upstream listener")
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("client-%d", i+1)
		p, err := ctrl.startProxy(ctx, b.sup, b.dir, proxySpec{name: name, labels: "app=client", upstreams: []string{"web=" + addr(port)}}, b.ports)
		if err != nil {
			return nil, err
		}
		clients = append(clients, p)
		urls = append(urls, "http://"+addr(port)+"/")
		ids = append(ids, fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, meshNamespace, name))
	}
	// Every client reaches blue, through every blue endpoint, before the
	// load starts.
	probe := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 2 * time.Second}
	defer probe.CloseIdleConnections()
	for _, url := range urls {
		if err := waitFor(ctx, 60*time.Second, "web through "+url, nil, func() error {
			color, msg := trafficGet(probe, url)
			if msg != "" {
				return errors.New(msg)
			}
			if color != "blue" {
				return fmt.Errorf("answered by %q, want blue", color)
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if err := waitFor(ctx, 60*time.Second, "every blue endpoint in the clients' configurations", nil, func() error {
		for _, c := range clients {
			b, err := httpGet(ctx, "http://"+c.admin+"/config")
			if err != nil {
				return err
			}
			if n := strings.Count(string(b), "/sa/blue-"); n < trafficBlue {
				return fmt.Errorf("a client knows %d blue endpoints of %d", n, trafficBlue)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}

	step("traffic: %d req/s from %d client proxies; warm-up %v", o.trafficRPS, trafficClients, trafficWarmup)
	start := time.Now()
	load := startTrafficLoad(urls, o.trafficRPS)
	stopped := false
	defer func() {
		if !stopped {
			load.halt()
		}
	}()
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := sleep(trafficWarmup); err != nil {
		return nil, err
	}

	// The kill: blue-1's proxy dies at once (SIGKILL), its tunnel
	// connections and requests in flight with it.
	step("traffic: killing blue-1's proxy")
	kill := time.Now()
	if err := syscall.Kill(-blues[0].child.pid(), syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("killing blue-1's proxy: %w", err)
	}
	if err := sleep(trafficKillPhase); err != nil {
		return nil, err
	}

	// The flip: the route file is rewritten, all of web to green.
	step("traffic: flipping web's route from blue to green")
	if err := writeAtomically(routePath, []byte(trafficRoute(0, 100))); err != nil {
		return nil, err
	}
	flip := time.Now()
	firstGreen := make([]time.Time, len(ids))
	if err := waitFor(ctx, 60*time.Second, "a green answer through every client", nil, func() error {
		for i, id := range ids {
			t, ok := green.firstFrom(id)
			if !ok {
				return fmt.Errorf("no request of client-%d reached green yet", i+1)
			}
			firstGreen[i] = t
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := sleep(time.Until(flip.Add(trafficFlipPhase))); err != nil {
		return nil, err
	}
	end := time.Now()
	answers := load.halt()
	stopped = true

	res.AchievedRPS = round(float64(len(answers))/end.Sub(start).Seconds(), 1)
	res.Warmup = phase(answers, start, kill)
	res.Kill = phase(answers, kill, flip)
	res.Flip = phase(answers, flip, end.Add(time.Hour))
	for i, t := range firstGreen {
		ms := round(float64(t.Sub(flip))/float64(time.Millisecond), 1)
		res.PropagationMsByClient = append(res.PropagationMsByClient, ms)
		res.PropagationMs = max(res.PropagationMs, ms)
		for _, a := range answers {
			if a.client == i && a.err == "" && a.color == "blue" && a.sent.After(t) {
				res.StaleAfterGreen++
			}
		}
	}
	for _, c := range clients {
		body, err := httpGet(ctx, "http://"+c.admin+"/metrics")
		if err != nil {
			return nil, err
		}
		res.Retries += sumMetric(string(body), "rampart_proxy_retries_total", `verdict="retry"`)
		res.BudgetExhausted += sumMetric(string(body), "rampart_proxy_retries_total", `verdict="budget_exhausted"`)
	}
	return res, nil
}

// sumMetric adds up the samples of a Prometheus text exposition whose
// name is name and whose labels contain every one of labels.
func sumMetric(text, name string, labels ...string) float64 {
	var sum float64
lines:
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
