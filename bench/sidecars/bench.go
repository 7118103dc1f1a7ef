package main

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// bench is one run's state.
type bench struct {
	opts  options
	root  string
	dir   string
	tools toolPaths
	sup   *supervisor
	ports *portAllocator
	lg    *loadgen
	bin   string // Rampart binaries

	httpBackend, grpcBackend int // ports
	certs                    certFiles
	targets                  []*target
	ctrl                     *controller
}

// target is one way to reach the backend.
type target struct {
	name        string
	description string
	url         string // HTTP/1.1 entry
	grpcAddr    string // gRPC entry, empty when gRPC is not measured
	sides       []side // the proxies, none for direct
	// mtlsAddr is the server side of an nginx or HAProxy pair, checked to
	// require a client certificate and TLS 1.3.
	mtlsAddr string
}

// side is one proxy of a pair.
type side struct {
	role  string // "client" or "server"
	child *child
}

func (b *bench) run(ctx context.Context) (*results, error) {
	o := b.opts
	res := newResults(o)
	b.lg = &loadgen{wrk: b.tools.wrk, fortio: b.tools.fortio, ghz: b.tools.ghz, connections: o.connections, qps: o.qps, dir: b.dir,
		protoFile: filepath.Join(b.dir, "health.proto")}
	if err := os.WriteFile(b.lg.protoFile, []byte(healthProto), 0o644); err != nil {
		return nil, err
	}
	res.Machine = machineInfo(ctx, b.root, b.tools)
	step("working directory %s", b.dir)

	if o.wantsRampart() || o.discovery || o.traffic {
		b.bin = o.binDir
		if b.bin == "" {
			b.bin = filepath.Join(b.root, ".cache", "bench", "bin")
			step("building the Rampart binaries into %s", b.bin)
			if err := buildRampart(ctx, b.root, b.bin); err != nil {
				return nil, err
			}
		}
		if out, err := exec.Command(filepath.Join(b.bin, cliBinary), "version").CombinedOutput(); err == nil {
			res.Machine.Rampart = firstLine(out)
		}
	}
	var err error
	if b.certs, err = writeCerts(b.dir); err != nil {
		return nil, err
	}
	if len(o.targets) > 0 {
		if err := b.startBackends(ctx); err != nil {
			return nil, err
		}
	}
	for _, name := range o.targets {
		step("starting target %s", name)
		if err := b.startTarget(ctx, name); err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
	}
	for _, t := range b.targets {
		if err := b.checkTarget(ctx, t); err != nil {
			return nil, err
		}
	}

	// Rounds interleave the targets, each round starting one further, so
	// that a slow spell of a shared machine spreads over all of them.
	rounds := make(map[string][]roundResult)
	for r := range o.rounds {
		for i := range b.targets {
			t := b.targets[(i+r)%len(b.targets)]
			step("round %d/%d: %s over HTTP/1.1", r+1, o.rounds, t.name)
			rr, err := b.measureHTTP(ctx, t)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			rounds[t.name] = append(rounds[t.name], rr)
		}
	}
	for _, t := range b.targets {
		res.Targets = append(res.Targets, summarize(t, rounds[t.name]))
	}

	if o.grpc {
		var gts []*target
		for _, t := range b.targets {
			if t.grpcAddr != "" {
				gts = append(gts, t)
			}
		}
		if len(gts) > 1 {
			grounds := make(map[string][]grpcRound)
			for r := range o.rounds {
				for i := range gts {
					t := gts[(i+r)%len(gts)]
					step("round %d/%d: %s over gRPC", r+1, o.rounds, t.name)
					gr, err := b.measureGRPC(ctx, t)
					if err != nil {
						return nil, fmt.Errorf("%s gRPC: %w", t.name, err)
					}
					grounds[t.name] = append(grounds[t.name], gr)
				}
			}
			res.GRPC = &grpcResults{Method: "grpc.health.v1.Health/Check", Backend: "grpc-go health server (bench/sidecars backend)"}
			for _, t := range gts {
				res.GRPC.Targets = append(res.GRPC.Targets, summarizeGRPC(t, grounds[t.name]))
			}
		}
	}

	if o.discovery {
		step("discovery: one proxy holding %d services and %d endpoints", o.services, o.endpoints)
		d, err := b.measureDiscovery(ctx)
		if err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		res.DiscoveryRSS = d
	}
	if o.traffic {
		// Last: it kills a proxy, which the checks of the other
		// measurements would report.
		step("traffic: an endpoint killed and a route flipped at %d req/s", o.trafficRPS)
		tr, err := b.measureTraffic(ctx)
		if err != nil {
			return nil, fmt.Errorf("traffic: %w", err)
		}
		res.Traffic = tr
	}
	res.finish()
	res.Machine.LoadAvgEnd = loadAvg()
	return res, nil
}

// step tells the user what the benchmark is doing, on stderr so that
// stdout is only the table.
func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "sidecars: "+format+"\n", args...)
}

func (b *bench) port(what string) (int, error) { return b.ports.take(what) }

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// startBackends starts the HTTP backend every target reaches and the gRPC
// backend.
func (b *bench) startBackends(ctx context.Context) error {
	var err error
	if b.httpBackend, err = b.port("the HTTP backend"); err != nil {
		return err
	}
	if b.grpcBackend, err = b.port("the gRPC backend"); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	goArgs := []string{self, backendCommand, "-grpc", addr(b.grpcBackend)}
	if b.opts.backend == "go" {
		goArgs = append(goArgs, "-http", addr(b.httpBackend))
	} else {
		if err := b.startNginx(ctx, "backend", "nginx-backend", peerConfig{Listen: b.httpBackend, Body: backendBody}); err != nil {
			return err
		}
	}
	c, err := b.sup.start("go backend", goArgs, nil, filepath.Join(b.dir, "go-backend.log"))
	if err != nil {
		return err
	}
	for _, p := range []int{b.httpBackend, b.grpcBackend} {
		if err := waitFor(ctx, 10*time.Second, "the backend on "+addr(p), c, func() error { return dialable(addr(p)) }); err != nil {
			return err
		}
	}
	return nil
}

// startNginx renders an nginx configuration, has nginx check it and starts
// it, returning once it accepts connections.
func (b *bench) startNginx(ctx context.Context, role, name string, c peerConfig) error {
	_, err := b.startPeer(ctx, "nginx", role, name, c)
	return err
}

func (b *bench) startPeer(ctx context.Context, kind, role, name string, c peerConfig) (*child, error) {
	c.Dir, c.Name, c.Certs, c.ServerName = b.dir, name, b.certs, serverName
	if c.Workers == 0 {
		c.Workers = b.opts.workers
	}
	var conf []byte
	var err error
	var check, argv []string
	cfgPath := filepath.Join(b.dir, name+".conf")
	switch kind {
	case "nginx":
		if conf, err = renderNginx(role, c); err != nil {
			return nil, err
		}
		for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			if err := os.MkdirAll(filepath.Join(b.dir, name+"-tmp", d), 0o755); err != nil {
				return nil, err
			}
		}
		base := []string{b.tools.nginx, "-p", b.dir, "-e", filepath.Join(b.dir, name+".error.log"), "-c", cfgPath}
		check, argv = append(slices.Clone(base), "-t", "-q"), base
	case "haproxy":
		if conf, err = renderHAProxy(role, c); err != nil {
			return nil, err
		}
		check = []string{b.tools.haproxy, "-c", "-q", "-f", cfgPath}
		argv = []string{b.tools.haproxy, "-db", "-f", cfgPath}
	}
	if err := os.WriteFile(cfgPath, conf, 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, check[0], check[1:]...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s rejects %s: %w\n%s", kind, cfgPath, err, out)
	}
	ch, err := b.sup.start(name, argv, nil, filepath.Join(b.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, 10*time.Second, name, ch, func() error { return dialable(addr(c.Listen)) })
	return ch, err
}

// startTarget starts what stands between the load generator and the
// backend for the named target.
func (b *bench) startTarget(ctx context.Context, name string) error {
	switch name {
	case targetDirect:
		b.targets = append(b.targets, &target{name: name, description: "load generator -> backend",
			url: "http://" + addr(b.httpBackend) + "/", grpcAddr: addr(b.grpcBackend)})
		return nil
	case targetNginx, targetHAProxy:
		serverPort, err := b.port(name + " server side")
		if err != nil {
			return err
		}
		clientPort, err := b.port(name + " client side")
		if err != nil {
			return err
		}
		server, err := b.startPeer(ctx, name, "server", name+"-server", peerConfig{Listen: serverPort, Backend: b.httpBackend})
		if err != nil {
			return err
		}
		client, err := b.startPeer(ctx, name, "client", name+"-client", peerConfig{Listen: clientPort, Peer: serverPort})
		if err != nil {
			return err
		}
		b.targets = append(b.targets, &target{
			name:        name,
			description: fmt.Sprintf("load generator -> %s (plain HTTP) -> TLS 1.3 with client certificate -> %s -> backend; %d worker(s) each", name, name, b.opts.workers),
			url:         "http://" + addr(clientPort) + "/",
			sides:       []side{{"client", client}, {"server", server}},
			mtlsAddr:    addr(serverPort),
		})
		return nil
	case targetRampart, targetRampartGMP:
		return b.startRampartPair(ctx, name)
	}
	return fmt.Errorf("unknown target %q", name)
}

// startRampartPair starts, under the one controller, a server-side proxy
// in front of the backends and a client-side proxy whose --upstream
// listeners reach them. rampart-gomaxprocs1 runs both with GOMAXPROCS=1.
func (b *bench) startRampartPair(ctx context.Context, name string) error {
	if b.ctrl == nil {
		cfgDir := filepath.Join(b.dir, "mesh")
		if err := os.MkdirAll(cfgDir, 0o755); err != nil {
			return err
		}
		// Both pairs' services are declared before the controller starts.
		for _, n := range []string{targetRampart, targetRampartGMP} {
			if !b.opts.wants(n) {
				continue
			}
			doc, err := renderService(serviceFor(n), b.httpBackend, b.grpcBackend)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(cfgDir, serviceFor(n)+".yaml"), doc, 0o644); err != nil {
				return err
			}
		}
		var err error
		if b.ctrl, err = startController(ctx, b.sup, b.bin, b.dir, "rampart-controller", cfgDir, b.ports); err != nil {
			return err
		}
	}
	svc := serviceFor(name)
	var env []string
	if name == targetRampartGMP {
		env = []string{"GOMAXPROCS=1"}
	}
	server, err := b.ctrl.startProxy(ctx, b.sup, b.dir, proxySpec{name: svc, labels: "app=" + svc, env: env}, b.ports)
	if err != nil {
		return err
	}
	httpPort, err := b.port(name + " client side")
	if err != nil {
		return err
	}
	grpcPort, err := b.port(name + " client side, gRPC")
	if err != nil {
		return err
	}
	client, err := b.ctrl.startProxy(ctx, b.sup, b.dir, proxySpec{
		name:      "loadgen" + strings.TrimPrefix(svc, "bench"),
		labels:    "app=loadgen",
		upstreams: []string{svc + ":http=" + addr(httpPort), svc + ":grpc=" + addr(grpcPort)},
		env:       env,
	}, b.ports)
	if err != nil {
		return err
	}
	procs := "GOMAXPROCS unset"
	if env != nil {
		procs = "GOMAXPROCS=1"
	}
	b.targets = append(b.targets, &target{
		name:        name,
		description: "load generator -> rampart-proxy --upstream listener -> mTLS tunnel (HTTP/2) -> rampart-proxy -> backend; " + procs,
		url:         "http://" + addr(httpPort) + "/",
		grpcAddr:    addr(grpcPort),
		sides:       []side{{"client", client.child}, {"server", server.child}},
	})
	return nil
}

// serviceFor is the mesh service of a Rampart target; the pair's server
// side runs as the workload and service account of that name.
func serviceFor(target string) string {
	if target == targetRampartGMP {
		return "bench-gmp1"
	}
	return "bench"
}

// checkTarget makes sure a request through t reaches the backend; a mesh
// needs a moment after its proxies are ready for the client side to learn
// the server side's endpoint.
func (b *bench) checkTarget(ctx context.Context, t *target) error {
	err := waitFor(ctx, 30*time.Second, "a request through "+t.name, nil, func() error {
		body, err := httpGet(ctx, t.url)
		if err != nil {
			return err
		}
		if string(body) != backendBody {
			return fmt.Errorf("answer %q, want the backend's %q", truncate(string(body), 100), backendBody)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if t.mtlsAddr != "" {
		if err := checkMTLS(ctx, t.mtlsAddr, b.certs); err != nil {
			return fmt.Errorf("%s server side: %w", t.name, err)
		}
	}
	return b.sup.dead()
}

// roundResult is one target's measurements in one round.
type roundResult struct {
	Saturation wrkResult    `json:"saturation"`
	FixedRate  fortioResult `json:"fixed_rate"`
	// Proxies, in the order of the target's sides.
	Proxies []proxyRound `json:"proxies,omitempty"`
}

// proxyRound is what one proxy used in one round.
type proxyRound struct {
	Role string `json:"role"`
	// CPUSeconds is the proxy's CPU time (user and system, all its
	// processes) during the fixed-rate run, SaturationCPUSeconds during
	// the saturation run.
	CPUSeconds           float64 `json:"cpu_s"`
	SaturationCPUSeconds float64 `json:"saturation_cpu_s"`
	// RSSBytes is VmRSS (summed over its processes) at the end of the
	// fixed-rate run.
	RSSBytes uint64 `json:"rss_bytes"`
}

// measureHTTP warms t up, then measures its rate at saturation and its
// latency, CPU time and memory at a fixed rate.
func (b *bench) measureHTTP(ctx context.Context, t *target) (roundResult, error) {
	var rr roundResult
	if b.opts.warmup > 0 {
		if _, err := b.lg.runWrk(ctx, t.url, b.opts.warmup); err != nil {
			return rr, fmt.Errorf("warm-up: %w", err)
		}
	}
	satCPU, err := b.sampleCPU(t, func() error {
		var err error
		rr.Saturation, err = b.lg.runWrk(ctx, t.url, b.opts.duration)
		return err
	})
	if err != nil {
		return rr, err
	}
	var rss []uint64
	cpu, err := b.sampleCPU(t, func() error {
		var err error
		rr.FixedRate, err = b.lg.runFortio(ctx, t.url, b.opts.duration)
		if err != nil {
			return err
		}
		// Memory at the end of the fixed-rate run, before the
		// processes idle.
		rss, err = b.sampleRSS(t)
		return err
	})
	if err != nil {
		return rr, err
	}
	for i, s := range t.sides {
		rr.Proxies = append(rr.Proxies, proxyRound{Role: s.role, CPUSeconds: cpu[i], SaturationCPUSeconds: satCPU[i], RSSBytes: rss[i]})
	}
	return rr, b.sup.dead()
}

// sampleCPU runs f and returns the CPU seconds each of t's proxies used
// meanwhile.
func (b *bench) sampleCPU(t *target, f func() error) ([]float64, error) {
	before := make([]usage, len(t.sides))
	for i, s := range t.sides {
		u, err := readUsage(s.child.pid())
		if err != nil {
			return nil, fmt.Errorf("%s side: %w", s.role, err)
		}
		before[i] = u
	}
	if err := f(); err != nil {
		return nil, err
	}
	cpu := make([]float64, len(t.sides))
	for i, s := range t.sides {
		u, err := readUsage(s.child.pid())
		if err != nil {
			return nil, fmt.Errorf("%s side: %w", s.role, err)
		}
		cpu[i] = u.cpuSeconds - before[i].cpuSeconds
	}
	return cpu, nil
}

func (b *bench) sampleRSS(t *target) ([]uint64, error) {
	rss := make([]uint64, len(t.sides))
	for i, s := range t.sides {
		u, err := readUsage(s.child.pid())
		if err != nil {
			return nil, fmt.Errorf("%s side: %w", s.role, err)
		}
		rss[i] = u.rssBytes
	}
	return rss, nil
}

// grpcRound is one target's gRPC measurements in one round.
type grpcRound struct {
	Saturation ghzResult    `json:"saturation"`
	FixedRate  ghzResult    `json:"fixed_rate"`
	Proxies    []proxyRound `json:"proxies,omitempty"`
}

func (b *bench) measureGRPC(ctx context.Context, t *target) (grpcRound, error) {
	var gr grpcRound
	if b.opts.warmup > 0 {
		if _, err := b.lg.runGhz(ctx, t.grpcAddr, b.opts.warmup, 0); err != nil {
			return gr, fmt.Errorf("warm-up: %w", err)
		}
	}
	satCPU, err := b.sampleCPU(t, func() error {
		var err error
		gr.Saturation, err = b.lg.runGhz(ctx, t.grpcAddr, b.opts.duration, 0)
		return err
	})
	if err != nil {
		return gr, err
	}
	var rss []uint64
	cpu, err := b.sampleCPU(t, func() error {
		var err error
		if gr.FixedRate, err = b.lg.runGhz(ctx, t.grpcAddr, b.opts.duration, b.opts.qps); err != nil {
			return err
		}
		rss, err = b.sampleRSS(t)
		return err
	})
	if err != nil {
		return gr, err
	}
	for i, s := range t.sides {
		gr.Proxies = append(gr.Proxies, proxyRound{Role: s.role, CPUSeconds: cpu[i], SaturationCPUSeconds: satCPU[i], RSSBytes: rss[i]})
	}
	return gr, b.sup.dead()
}

// measureDiscovery starts a second controller whose config holds
// -services Services and -endpoints static Workloads, and measures the
// memory of proxies that receive them: in transparent mode (every
// service; --outbound-listen) and with as many --upstream flags as the
// controller accepts in one Watch request.
func (b *bench) measureDiscovery(ctx context.Context) (*discoveryResult, error) {
	o := b.opts
	d := &discoveryResult{Services: o.services, Endpoints: o.endpoints, SettleSeconds: discoverySettle.Seconds()}
	cfgDir := filepath.Join(b.dir, "discovery-mesh")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		return nil, err
	}
	if err := writeDiscoveryConfig(cfgDir, o.services, o.endpoints/o.services); err != nil {
		return nil, err
	}
	ctrl, err := startController(ctx, b.sup, b.bin, b.dir, "discovery-controller", cfgDir, b.ports)
	if err != nil {
		return nil, err
	}

	// A proxy that asks for nothing, for comparison.
	base, err := ctrl.startProxy(ctx, b.sup, b.dir, proxySpec{name: "disc-baseline", labels: "app=disc-baseline"}, b.ports)
	if err != nil {
		return nil, err
	}
	time.Sleep(discoverySettle)
	rss, err := readVmRSS(base.child.pid())
	if err != nil {
		return nil, err
	}
	d.BaselineRSSMB = mb(rss)

	tr := discoveryRun{Mode: "transparent", ServicesRequested: o.services}
	tp, err := b.port("a transparent outbound listener")
	if err != nil {
		return nil, err
	}
	b.discoveryRun(ctx, ctrl, &tr, proxySpec{name: "disc-transparent", labels: "app=disc-transparent", extra: []string{"--outbound-listen", addr(tp)}}, o.endpoints)
	d.Runs = append(d.Runs, tr)

	n := min(o.services, maxUpstreams)
	ur := discoveryRun{Mode: "upstreams", ServicesRequested: n}
	spec := proxySpec{name: "disc-upstreams", labels: "app=disc-upstreams"}
	for i := range n {
		p, err := b.port("a discovery --upstream listener")
		if err != nil {
			return nil, err
		}
		spec.upstreams = append(spec.upstreams, discoveryService(i)+"="+addr(p))
	}
	b.discoveryRun(ctx, ctrl, &ur, spec, n*(o.endpoints/o.services))
	d.Runs = append(d.Runs, ur)

	if rss, err := readVmRSS(ctrl.child.pid()); err == nil {
		d.ControllerRSSMB = mb(rss)
	}
	return d, nil
}

// maxUpstreams is how many services one Watch request may name
// (discovery.MaxUpstreams in the controller).
const maxUpstreams = 256

// discoverySettle is how long after its configuration arrives a proxy's
// memory is read, so that what decoding it allocated has been collected.
const discoverySettle = 2 * time.Second

// discoveryRun starts one proxy, waits until its configuration holds the
// expected services and endpoints and records its memory; a failure is
// recorded in r, not returned, since it says something about the proxy.
func (b *bench) discoveryRun(ctx context.Context, ctrl *controller, r *discoveryRun, spec proxySpec, wantEndpoints int) {
	p, err := ctrl.startProxy(ctx, b.sup, b.dir, spec, b.ports)
	if err != nil {
		r.Reason = "not measured: " + firstLine([]byte(err.Error()))
		return
	}
	start := time.Now()
	err = waitFor(ctx, 120*time.Second, spec.name+"'s configuration", p.child, func() error {
		s, e, err := p.configCounts(ctx)
		r.ServicesReceived, r.EndpointsReceived = s, e
		if err != nil {
			return err
		}
		if s < r.ServicesRequested || e < wantEndpoints {
			return fmt.Errorf("%d services and %d endpoints so far", s, e)
		}
		return nil
	})
	if err != nil {
		r.Reason = "not measured: " + firstLine([]byte(err.Error()))
		return
	}
	r.ConfigSeconds = time.Since(start).Seconds()
	time.Sleep(discoverySettle)
	rss, err := readVmRSS(p.child.pid())
	if err != nil {
		r.Reason = "not measured: " + err.Error()
		return
	}
	r.Measured, r.RSSMB = true, mb(rss)
}

func mb(bytes uint64) float64 { return float64(bytes) / (1 << 20) }

// machineInfo describes where the benchmark ran.
func machineInfo(ctx context.Context, root string, t toolPaths) machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgStart: loadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					m.MemoryGB = round(kb/(1<<20), 1)
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	version := func(argv ...string) string {
		if argv[0] == "" {
			return ""
		}
		out, _ := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		return firstLine(out)
	}
	m.Tools = map[string]string{
		"wrk":     version(t.wrk, "-v"),
		"fortio":  goToolVersion(t.fortio),
		"ghz":     goToolVersion(t.ghz),
		"nginx":   version(t.nginx, "-v"),
		"haproxy": version(t.haproxy, "-v"),
	}
	for k, v := range m.Tools {
		if v == "" {
			delete(m.Tools, k)
		}
	}
	if out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if out, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(out) > 0 {
			m.Commit += " (with uncommitted changes)"
		}
	}
	return m
}

// goToolVersion is the module version a Go program was built from (ghz
// built by go install calls itself "dev").
func goToolVersion(path string) string {
	if path == "" {
		return ""
	}
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	return bi.Main.Path + " " + bi.Main.Version
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
