package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// results is what bench/results.json holds.
type results struct {
	Machine       machine                 `json:"machine"`
	Date          string                  `json:"date"`
	Settings      settings                `json:"settings"`
	Targets       []targetResult          `json:"targets"`
	RatiosToNginx map[string]ratios       `json:"ratios_to_nginx,omitempty"`
	GRPC          *grpcResults            `json:"grpc,omitempty"`
	DiscoveryRSS  *discoveryResult        `json:"discovery_rss,omitempty"`
	Traffic       *trafficResult          `json:"traffic,omitempty"`
	Notes         []string                `json:"notes"`
	opts          options                 // for the table's header
	byName        map[string]targetResult // filled by finish
}

type machine struct {
	CPUs         int               `json:"cpus"`
	CPUModel     string            `json:"cpu_model,omitempty"`
	MemoryGB     float64           `json:"memory_gb,omitempty"`
	GoVersion    string            `json:"go_version"`
	Kernel       string            `json:"kernel"`
	OS           string            `json:"os,omitempty"`
	Rampart      string            `json:"rampart,omitempty"`
	Commit       string            `json:"commit,omitempty"`
	Tools        map[string]string `json:"tools"`
	LoadAvgStart string            `json:"loadavg_start"`
	LoadAvgEnd   string            `json:"loadavg_end"`
}

type settings struct {
	Duration    string `json:"duration"`
	Warmup      string `json:"warmup"`
	Rounds      int    `json:"rounds"`
	QPS         int    `json:"fixed_rate_qps"`
	Connections int    `json:"connections"`
	Backend     string `json:"backend"`
	PeerWorkers int    `json:"peer_workers"`
	Saturation  string `json:"saturation_command"`
	FixedRate   string `json:"fixed_rate_command"`
}

// targetResult is one target's medians over the rounds.
type targetResult struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	RPS         float64 `json:"rps"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	// CPUSPer1k is both proxies' CPU seconds per 1000 requests at the
	// fixed rate; RSSMB the larger of the two proxies' VmRSS. Nil for
	// direct, which has no proxy.
	CPUSPer1k           *float64      `json:"cpu_s_per_1k"`
	RSSMB               *float64      `json:"rss_mb"`
	SaturationCPUSPer1k *float64      `json:"saturation_cpu_s_per_1k,omitempty"`
	SaturationP50Ms     float64       `json:"saturation_p50_ms"`
	SaturationP99Ms     float64       `json:"saturation_p99_ms"`
	FixedRateQPS        float64       `json:"fixed_rate_actual_qps"`
	P90Ms               float64       `json:"p90_ms"`
	P999Ms              float64       `json:"p99_9_ms"`
	Errors              int64         `json:"errors"` // summed over rounds and runs
	Proxies             []proxyResult `json:"proxies,omitempty"`
	Rounds              []roundResult `json:"rounds"`
}

type proxyResult struct {
	Role                string  `json:"role"`
	CPUSPer1k           float64 `json:"cpu_s_per_1k"`
	SaturationCPUSPer1k float64 `json:"saturation_cpu_s_per_1k"`
	RSSMB               float64 `json:"rss_mb"`
}

// ratios compare a target with nginx: above 1 means more requests per
// second, more latency, more CPU or more memory than nginx.
type ratios struct {
	RPS      float64  `json:"rps"`
	P50      float64  `json:"p50"`
	P99      float64  `json:"p99"`
	CPUPer1k *float64 `json:"cpu_s_per_1k,omitempty"`
	RSS      *float64 `json:"rss_mb,omitempty"`
}

type grpcResults struct {
	Method  string             `json:"method"`
	Backend string             `json:"backend"`
	Targets []grpcTargetResult `json:"targets"`
	// RatiosToDirect compare each target with calling the backend
	// directly.
	RatiosToDirect map[string]ratios `json:"ratios_to_direct,omitempty"`
}

type grpcTargetResult struct {
	Name      string        `json:"name"`
	RPS       float64       `json:"rps"`
	P50Ms     float64       `json:"p50_ms"`
	P99Ms     float64       `json:"p99_ms"`
	CPUSPer1k *float64      `json:"cpu_s_per_1k"`
	RSSMB     *float64      `json:"rss_mb"`
	Errors    int64         `json:"errors"`
	Proxies   []proxyResult `json:"proxies,omitempty"`
	Rounds    []grpcRound   `json:"rounds"`
}

type discoveryResult struct {
	Services  int `json:"services"`
	Endpoints int `json:"endpoints"`
	// BaselineRSSMB is a proxy of the same controller that asks for no
	// service.
	BaselineRSSMB   float64        `json:"baseline_rss_mb"`
	ControllerRSSMB float64        `json:"controller_rss_mb"`
	SettleSeconds   float64        `json:"settle_s"`
	Runs            []discoveryRun `json:"runs"`
}

type discoveryRun struct {
	Mode              string  `json:"mode"` // transparent or upstreams
	Measured          bool    `json:"measured"`
	Reason            string  `json:"reason,omitempty"`
	ServicesRequested int     `json:"services_requested"`
	ServicesReceived  int     `json:"services_received"`
	EndpointsReceived int     `json:"endpoints_received"`
	ConfigSeconds     float64 `json:"config_s,omitempty"`
	RSSMB             float64 `json:"rss_mb,omitempty"`
}

func newResults(o options) *results {
	return &results{
		Date: time.Now().UTC().Format(time.RFC3339),
		Settings: settings{
			Duration: o.duration.String(), Warmup: o.warmup.String(), Rounds: o.rounds, QPS: o.qps, Connections: o.connections,
			Backend: o.backend, PeerWorkers: o.workers,
			Saturation: fmt.Sprintf("wrk -t1 -c%d -d%s --latency URL", o.connections, wrkDuration(o.duration)),
			FixedRate:  fmt.Sprintf("fortio load -qps %d -c %d -t %s -r 0.00001 -json FILE URL", o.qps, o.connections, o.duration),
		},
		opts: o,
	}
}

// summarize takes the median of each metric over a target's rounds.
func summarize(t *target, rounds []roundResult) targetResult {
	r := targetResult{Name: t.name, Description: t.description, Rounds: rounds}
	med := func(f func(roundResult) float64) float64 {
		v := make([]float64, len(rounds))
		for i, rr := range rounds {
			v[i] = f(rr)
		}
		return median(v)
	}
	r.RPS = round(med(func(rr roundResult) float64 { return rr.Saturation.RPS }), 0)
	r.SaturationP50Ms = round(med(func(rr roundResult) float64 { return rr.Saturation.P50Ms }), 3)
	r.SaturationP99Ms = round(med(func(rr roundResult) float64 { return rr.Saturation.P99Ms }), 3)
	r.P50Ms = round(med(func(rr roundResult) float64 { return rr.FixedRate.P50Ms }), 3)
	r.P90Ms = round(med(func(rr roundResult) float64 { return rr.FixedRate.P90Ms }), 3)
	r.P99Ms = round(med(func(rr roundResult) float64 { return rr.FixedRate.P99Ms }), 3)
	r.P999Ms = round(med(func(rr roundResult) float64 { return rr.FixedRate.P999Ms }), 3)
	r.FixedRateQPS = round(med(func(rr roundResult) float64 { return rr.FixedRate.ActualQPS }), 1)
	for _, rr := range rounds {
		r.Errors += rr.Saturation.Non2xx + rr.Saturation.SocketErrors + rr.FixedRate.Errors
	}
	if len(t.sides) == 0 {
		return r
	}
	var cpu, satCPU, rss float64
	for i, s := range t.sides {
		p := proxyResult{Role: s.role}
		p.CPUSPer1k = round(med(func(rr roundResult) float64 {
			return per1k(rr.Proxies[i].CPUSeconds, rr.FixedRate.Requests+rr.FixedRate.Warmup)
		}), 4)
		p.SaturationCPUSPer1k = round(med(func(rr roundResult) float64 {
			return per1k(rr.Proxies[i].SaturationCPUSeconds, rr.Saturation.Requests)
		}), 4)
		p.RSSMB = round(med(func(rr roundResult) float64 { return mb(rr.Proxies[i].RSSBytes) }), 1)
		cpu += p.CPUSPer1k
		satCPU += p.SaturationCPUSPer1k
		rss = max(rss, p.RSSMB)
		r.Proxies = append(r.Proxies, p)
	}
	cpu, satCPU = round(cpu, 4), round(satCPU, 4)
	r.CPUSPer1k, r.SaturationCPUSPer1k, r.RSSMB = &cpu, &satCPU, &rss
	return r
}

func summarizeGRPC(t *target, rounds []grpcRound) grpcTargetResult {
	r := grpcTargetResult{Name: t.name, Rounds: rounds}
	med := func(f func(grpcRound) float64) float64 {
		v := make([]float64, len(rounds))
		for i, gr := range rounds {
			v[i] = f(gr)
		}
		return median(v)
	}
	r.RPS = round(med(func(gr grpcRound) float64 { return gr.Saturation.RPS }), 0)
	r.P50Ms = round(med(func(gr grpcRound) float64 { return gr.FixedRate.P50Ms }), 3)
	r.P99Ms = round(med(func(gr grpcRound) float64 { return gr.FixedRate.P99Ms }), 3)
	for _, gr := range rounds {
		r.Errors += gr.Saturation.Errors + gr.FixedRate.Errors
	}
	if len(t.sides) == 0 {
		return r
	}
	var cpu, rss float64
	for i, s := range t.sides {
		p := proxyResult{Role: s.role}
		p.CPUSPer1k = round(med(func(gr grpcRound) float64 { return per1k(gr.Proxies[i].CPUSeconds, gr.FixedRate.Requests) }), 4)
		p.SaturationCPUSPer1k = round(med(func(gr grpcRound) float64 {
			return per1k(gr.Proxies[i].SaturationCPUSeconds, gr.Saturation.Requests)
		}), 4)
		p.RSSMB = round(med(func(gr grpcRound) float64 { return mb(gr.Proxies[i].RSSBytes) }), 1)
		cpu += p.CPUSPer1k
		rss = max(rss, p.RSSMB)
		r.Proxies = append(r.Proxies, p)
	}
	cpu = round(cpu, 4)
	r.CPUSPer1k, r.RSSMB = &cpu, &rss
	return r
}

func per1k(cpuSeconds float64, requests int64) float64 {
	if requests <= 0 {
		return 0
	}
	return cpuSeconds / float64(requests) * 1000
}

// median of v; the mean of the middle two for an even count.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// ratio is a/b, nil when either is unknown or b is zero.
func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	r := round(*a / *b, 2)
	return &r
}

// finish computes the ratios and the notes.
func (r *results) finish() {
	r.byName = make(map[string]targetResult)
	for _, t := range r.Targets {
		r.byName[t.Name] = t
	}
	if n, ok := r.byName[targetNginx]; ok && n.RPS > 0 && n.P50Ms > 0 && n.P99Ms > 0 {
		r.RatiosToNginx = make(map[string]ratios)
		for _, t := range r.Targets {
			r.RatiosToNginx[t.Name] = ratios{
				RPS: round(t.RPS/n.RPS, 2), P50: round(t.P50Ms/n.P50Ms, 2), P99: round(t.P99Ms/n.P99Ms, 2),
				CPUPer1k: ratio(t.CPUSPer1k, n.CPUSPer1k), RSS: ratio(t.RSSMB, n.RSSMB),
			}
		}
	}
	if g := r.GRPC; g != nil {
		var d *grpcTargetResult
		for i := range g.Targets {
			if g.Targets[i].Name == targetDirect {
				d = &g.Targets[i]
			}
		}
		if d != nil && d.RPS > 0 && d.P50Ms > 0 && d.P99Ms > 0 {
			g.RatiosToDirect = make(map[string]ratios)
			for _, t := range g.Targets {
				g.RatiosToDirect[t.Name] = ratios{RPS: round(t.RPS/d.RPS, 2), P50: round(t.P50Ms/d.P50Ms, 2), P99: round(t.P99Ms/d.P99Ms, 2)}
			}
		}
	}
	o := r.opts
	r.Notes = []string{
		fmt.Sprintf("Everything runs on one machine on 127.0.0.1: the load generator, both proxies of a pair and the backend share its %d CPUs, so a target's req/s is that of the whole chain; compare targets with each other, measured in the same run, not with numbers from another machine.", r.Machine.CPUs),
		fmt.Sprintf("rps: wrk -t1 -c%d at saturation, HTTP/1.1 keep-alive; p50_ms and p99_ms: fortio at a fixed %d req/s over %d keep-alive connections (histogram resolution 10 µs). Each is the median over %d round(s); the rounds interleave the targets.", o.connections, o.qps, o.connections, o.rounds),
		"cpu_s_per_1k: user+system CPU seconds of the proxies (/proc/<pid>/stat utime+stime of each proxy and its child processes) during the fixed-rate run, divided by the requests fortio made (its warm-up calls included), times 1000; the sum of the client side and the server side. saturation_cpu_s_per_1k is the same during the wrk run. Per-proxy values are in proxies[]. The backend, the load generator and the controller are not counted.",
		"rss_mb: the larger of the two proxies' VmRSS (/proc/<pid>/status) at the end of the fixed-rate run; for nginx the master's and the worker's VmRSS added (which counts the pages they share twice). Both sides are in proxies[].",
		fmt.Sprintf("Peers sized as a sidecar is: nginx with worker_processes %d (plus its master) and HAProxy with nbthread %d per side. rampart runs rampart-proxy with GOMAXPROCS unset (Go uses every CPU, %d here); rampart-gomaxprocs1 runs the same pair with GOMAXPROCS=1, the closest match to one nginx worker or one HAProxy thread. Both are reported; which is fairer depends on how many cores a sidecar is given.", o.workers, o.workers, r.Machine.CPUs),
		"nginx and HAProxy pairs: plain HTTP/1.1 in, HTTP/1.1 over TLS 1.3 between the sides with a client certificate required (ECDSA P-256 from one CA, generated for the run), keep-alive connections to the peer and to the backend, no access log. Rampart: the client side's --upstream listener for an HTTP service port, HTTP/2 over mTLS (SPIFFE X.509-SVIDs from the controller) between the sides, HTTP/1.1 to the backend; a rampart-controller in local mode.",
		fmt.Sprintf("Backend: %s answering %q to every request, the same process for every target.", map[string]string{"nginx": "nginx (one worker, return 200)", "go": "Go net/http"}[o.backend], backendBody),
	}
	if r.GRPC != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("gRPC: ghz calling %s over one HTTP/2 connection with %d concurrent workers: rps at saturation, p50/p99 at %d calls/s. Through Rampart the service port is declared GRPC. ghz counts the calls in flight when a timed run ends as Unavailable; errors leaves those out.", r.GRPC.Method, o.connections, o.qps))
	}
	if d := r.DiscoveryRSS; d != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("discovery_rss: a second controller holds %d Services and %d static Workloads (namespace bench); VmRSS of a proxy %v after its configuration holds what it asked for, next to a proxy of the same controller that asks for nothing (baseline). transparent: a proxy in transparent mode (--outbound-listen), which receives every service; upstreams: a proxy naming as many services with --upstream as one Watch request may (%d), each with its own listener.", d.Services, d.Endpoints, time.Duration(d.SettleSeconds*float64(time.Second)), maxUpstreams))
	}
	if t := r.Traffic; t != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("traffic: a third controller; service web routed by an HTTPRoute to web-blue (%d endpoints) and web-green (%d), each endpoint a rampart-proxy in front of its version's app (a Go net/http server in the benchmark process); %d client proxies, each with an --upstream listener for web, get GETs at %d req/s together, open loop (a request is sent on time whatever the earlier ones did; %v timeout). After %v, blue-1's proxy is killed (SIGKILL); %v later the route file is rewritten (renamed into place) to send everything to green. warmup, kill and flip count the requests sent in each phase and the failed ones (an error or a non-200 answer). propagation_ms: from the rename to the arrival at green of the first request of each client proxy (per client, and the largest). stale_after_green: blue answers to requests sent after their client's first green arrival. retries and budget_exhausted: rampart_proxy_retries_total of the client proxies.",
			t.Blue, t.Green, t.Clients, t.RPS, trafficTimeout, trafficWarmup, trafficKillPhase))
	}
	for _, t := range r.Targets {
		if t.Errors > 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("%s: %d requests failed (non-2xx answers, socket errors); see rounds[].", t.Name, t.Errors))
		}
	}
	if r.GRPC != nil {
		for _, t := range r.GRPC.Targets {
			if t.Errors > 0 {
				r.Notes = append(r.Notes, fmt.Sprintf("gRPC %s: %d calls failed; see rounds[].", t.Name, t.Errors))
			}
		}
	}
	if o.duration < 10*time.Second || o.rounds < 3 {
		r.Notes = append(r.Notes, "A short run (-quick, or under 10 s or 3 rounds): a smoke test of the harness, not numbers to publish.")
	}
}

func (r *results) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// markdown renders the results as tables for the README.
func (r *results) markdown() string {
	var b strings.Builder
	m := r.Machine
	if len(r.Targets) > 0 {
		fmt.Fprintf(&b, "Side-by-side data plane, %s: %d CPUs (%s), %s, Linux %s; %s each run, median of %d round(s), %d connections.\n\n",
			r.Date[:10], m.CPUs, m.CPUModel, m.GoVersion, m.Kernel, r.Settings.Duration, r.Settings.Rounds, r.Settings.Connections)
		fmt.Fprintf(&b, "| HTTP/1.1 | req/s (wrk) | p50 ms @%d/s | p99 ms @%d/s | proxy CPU s / 1k req | proxy RSS MB | req/s vs nginx | p99 vs nginx | CPU vs nginx | RSS vs nginx |\n",
			r.Settings.QPS, r.Settings.QPS)
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	}
	for _, t := range r.Targets {
		rt, ok := r.RatiosToNginx[t.Name]
		vs := func(v float64) string {
			if !ok {
				return "–"
			}
			return fmt.Sprintf("%.2fx", v)
		}
		vsp := func(v *float64) string {
			if !ok || v == nil {
				return "–"
			}
			return fmt.Sprintf("%.2fx", *v)
		}
		fmt.Fprintf(&b, "| %s | %s | %.3f | %.3f | %s | %s | %s | %s | %s | %s |\n", t.Name, thousands(t.RPS), t.P50Ms, t.P99Ms,
			optional(t.CPUSPer1k, "%.4f"), optional(t.RSSMB, "%.1f"), vs(rt.RPS), vs(rt.P99), vsp(rt.CPUPer1k), vsp(rt.RSS))
	}
	if g := r.GRPC; g != nil {
		fmt.Fprintf(&b, "\n| gRPC unary | calls/s (ghz) | p50 ms @%d/s | p99 ms @%d/s | proxy CPU s / 1k calls | proxy RSS MB | calls/s vs direct | p99 vs direct |\n",
			r.Settings.QPS, r.Settings.QPS)
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, t := range g.Targets {
			rt, ok := g.RatiosToDirect[t.Name]
			vs := func(v float64) string {
				if !ok {
					return "–"
				}
				return fmt.Sprintf("%.2fx", v)
			}
			fmt.Fprintf(&b, "| %s | %s | %.3f | %.3f | %s | %s | %s | %s |\n", t.Name, thousands(t.RPS), t.P50Ms, t.P99Ms,
				optional(t.CPUSPer1k, "%.4f"), optional(t.RSSMB, "%.1f"), vs(rt.RPS), vs(rt.P99))
		}
	}
	if d := r.DiscoveryRSS; d != nil {
		fmt.Fprintf(&b, "\nDiscovery: %d services, %d endpoints; a proxy asking for none: %.1f MB; the controller: %.1f MB.\n\n",
			d.Services, d.Endpoints, d.BaselineRSSMB, d.ControllerRSSMB)
		b.WriteString("| proxy receiving | services | endpoints | RSS MB |\n|---|---:|---:|---|\n")
		for _, run := range d.Runs {
			what := "every service (--outbound-listen)"
			if run.Mode == "upstreams" {
				what = fmt.Sprintf("%d --upstream services", run.ServicesRequested)
			}
			if run.Measured {
				fmt.Fprintf(&b, "| %s | %d | %d | %.1f |\n", what, run.ServicesReceived, run.EndpointsReceived, run.RSSMB)
			} else {
				fmt.Fprintf(&b, "| %s | – | – | %s |\n", what, run.Reason)
			}
		}
	}
	if t := r.Traffic; t != nil {
		b.WriteString(t.markdown())
	}
	return b.String()
}

// trafficMarkdown renders the traffic scenario.
func (t *trafficResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nTraffic: %d req/s asked (%.1f sent per second) from %d client proxies; web-blue has %d endpoints, web-green %d.\n\n",
		t.RPS, t.AchievedRPS, t.Clients, t.Blue, t.Green)
	b.WriteString("| phase | requests | failed |\n|---|---:|---:|\n")
	for _, p := range []struct {
		name string
		ph   trafficPhase
	}{{"steady", t.Warmup}, {"blue-1's proxy killed", t.Kill}, {"route flipped to green", t.Flip}} {
		fmt.Fprintf(&b, "| %s | %d | %d |\n", p.name, p.ph.Requests, p.ph.Failed)
	}
	fmt.Fprintf(&b, "\nRoute change at every client proxy: %.0f ms after the file was written (per client: %v ms); %d blue answers after a client's first green one; retries %.0f, refused by the budget %.0f.\n",
		t.PropagationMs, t.PropagationMsByClient, t.StaleAfterGreen, t.Retries, t.BudgetExhausted)
	return b.String()
}

func optional(v *float64, format string) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(format, *v)
}

// thousands renders a rate with thousands separators: 23,812.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
