package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// successRateQuery is the success rate of each workload's outbound
// requests, as docs/observability.md gives it: the share of requests not
// answered 5xx, by calling workload.
const successRateQuery = `sum by (src_workload) (rampart_proxy_requests_total{direction="outbound",code!~"5.."})
  / sum by (src_workload) (rampart_proxy_requests_total{direction="outbound"})`

// TestPrometheusScrapesTheMesh runs a real Prometheus server on loopback
// that scrapes the controller and every proxy each second, drives known
// traffic through the mesh (one client whose requests all succeed, one
// whose requests fail one in four), and reads each client's success rate
// back through Prometheus's HTTP API.
func TestPrometheusScrapesTheMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin := findTool(t, "prometheus")

	// The app fails every request under /fail with a 500.
	app := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/fail") {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})}
	go hs.Serve(app)
	t.Cleanup(func() { hs.Close() })

	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: shop, namespace: %s}
spec:
  selector: {app: shop}
  ports: [{name: http, port: 80, targetPort: %d, protocol: HTTP}]
`, ns, port(app)), adminOn)
	shop := m.startProxy(proxyOpts{name: "shop", labels: map[string]string{"app": "shop"}}, true)
	good := m.startProxy(proxyOpts{name: "good", upstreams: []string{"shop"}}, true)
	flaky := m.startProxy(proxyOpts{name: "flaky", upstreams: []string{"shop"}}, true)

	prom := startPrometheus(t, bin, m.ctrl.AdminAddr(), shop.AdminAddr(), good.AdminAddr(), flaky.AdminAddr())
	prom.waitTargetsUp(t, 4)

	// What each client sent through its proxy, and how much of it
	// succeeded (not 5xx), as the test saw it.
	sent, ok := map[string]float64{}, map[string]float64{}
	send := func(c *runningProxy, name, path string) int {
		code, _, err := get(c.UpstreamAddr(0), path, nil)
		if err != nil {
			t.Fatalf("%s GET %s: %v", name, path, err)
		}
		sent[name]++
		if code < 500 {
			ok[name]++
		}
		return code
	}
	// The clients learn the shop's endpoint before the counted traffic
	// (requests answered 503 meanwhile count too).
	for name, c := range map[string]*runningProxy{"good": good, "flaky": flaky} {
		eventually(t, 5*time.Second, func() error {
			if code := send(c, name, "/warm-up"); code != http.StatusOK {
				return fmt.Errorf("%s warm-up: %d", name, code)
			}
			return nil
		})
	}
	// good: 40 requests, all answered 200. flaky: 40 requests, 10 of them
	// to /fail, answered 500.
	for i := range 40 {
		if code := send(good, "good", fmt.Sprintf("/orders/%d", i)); code != http.StatusOK {
			t.Fatalf("good request %d: %d", i, code)
		}
		path, want := fmt.Sprintf("/orders/%d", i), http.StatusOK
		if i%4 == 0 {
			path, want = "/fail/"+strconv.Itoa(i), http.StatusInternalServerError
		}
		if code := send(flaky, "flaky", path); code != want {
			t.Fatalf("flaky request %d: %d, want %d", i, code, want)
		}
	}

	eventually(t, 30*time.Second, func() error {
		// Wait for the scrapes that saw every request.
		total, err := prom.query(`sum by (src_workload) (rampart_proxy_requests_total{direction="outbound"})`)
		if err != nil {
			return err
		}
		if total["good"] != sent["good"] || total["flaky"] != sent["flaky"] {
			return fmt.Errorf("Prometheus holds %v outbound requests by workload, want %v", total, sent)
		}
		rate, err := prom.query(successRateQuery)
		if err != nil {
			return err
		}
		for w := range sent {
			want := ok[w] / sent[w]
			if got, found := rate[w]; !found || got < want-1e-9 || got > want+1e-9 {
				return fmt.Errorf("success rate of %s: %v (present %v), want %v", w, got, found, want)
			}
		}
		return nil
	})
	if ok["good"] != sent["good"] || ok["flaky"] >= sent["flaky"] {
		t.Fatalf("traffic sent %v, succeeded %v: want every good request and not every flaky one to succeed", sent, ok)
	}
	t.Logf("success rates through Prometheus: good 100%%, flaky %.1f%%", 100*ok["flaky"]/sent["flaky"])

	// The proxies report their edges to the controller.
	eventually(t, 30*time.Second, func() error {
		got, err := prom.query(`sum by (result) (rampart_controller_telemetry_reports_total)`)
		if err != nil {
			return err
		}
		sentN, err := prom.query(`sum(rampart_proxy_telemetry_reports_total)`)
		if err != nil {
			return err
		}
		if got["accepted"] < 3 || sentN[""] < 3 {
			return fmt.Errorf("telemetry reports: proxies sent %v, the controller counted %v; want at least 3 accepted", sentN, got)
		}
		return nil
	})

	// The server side sees the same requests, named by their source.
	eventually(t, 30*time.Second, func() error {
		in, err := prom.query(`sum by (src_identity) (rampart_proxy_requests_total{direction="inbound",dst_workload="shop",tls="mtls",code="500"})`)
		if err != nil {
			return err
		}
		if len(in) != 1 || in[flaky.ID().String()] != 10 {
			return fmt.Errorf("inbound 500s by source %v, want 10 from %s", in, flaky.ID())
		}
		return nil
	})
}

// prometheus is a Prometheus server run by a test.
type prometheus struct {
	addr string
	log  *lockedLog
}

// lockedLog keeps what a process writes.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startPrometheus starts Prometheus on a free loopback port with its own
// storage, scraping targets every second, and waits until it is ready.
// It stops when the test ends.
func startPrometheus(t *testing.T, bin string, targets ...string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	var quoted []string
	for _, tg := range targets {
		if tg == "" {
			t.Fatal("a scrape target has no admin address")
		}
		quoted = append(quoted, strconv.Quote(tg))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: rampart
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// A free port: bound and released here. Should another process take
	// it meanwhile, Prometheus exits and the test says so.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &prometheus{addr: addr, log: &lockedLog{}}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v\n%s", err, p.log)
		default:
		}
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("prometheus not ready: %s", resp.Status)
		}
		return nil
	})
	return p
}

// api GETs a Prometheus API path and decodes its data.
func (p *prometheus) api(path string, data any) error {
	resp, err := http.Get("http://" + p.addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s: %d %q: %w", path, resp.StatusCode, b, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, data)
}

// waitTargetsUp waits until n targets are scraped successfully.
func (p *prometheus) waitTargetsUp(t *testing.T, n int) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		var data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := p.api("/api/v1/targets", &data); err != nil {
			return err
		}
		up := 0
		var problems []string
		for _, tg := range data.ActiveTargets {
			if tg.Health == "up" {
				up++
			} else {
				problems = append(problems, fmt.Sprintf("%s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
			}
		}
		if up != n {
			return fmt.Errorf("%d of %d targets up: %v", up, n, problems)
		}
		return nil
	})
}

// query runs an instant PromQL query whose result is a vector with at
// most one label, and returns its values by that label's value ("" for a
// sample without labels).
func (p *prometheus) query(q string) (map[string]float64, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.api("/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %q, want vector", q, data.ResultType)
	}
	out := make(map[string]float64, len(data.Result))
	for _, r := range data.Result {
		key := ""
		for _, v := range r.Metric {
			if key != "" {
				return nil, errors.New("query " + q + ": more than one label in the result")
			}
			key = v
		}
		s, ok := r.Value[1].(string)
		if !ok {
			return nil, fmt.Errorf("query %q: value %v is not a string", q, r.Value[1])
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", q, err)
		}
		out[key] = v
	}
	return out, nil
}
