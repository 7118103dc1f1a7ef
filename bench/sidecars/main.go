// Command sidecars is Rampart's side-by-side data-plane benchmark. In one
// run on one machine it loads the same small HTTP/1.1 backend directly,
// through a pair of rampart-proxy (the client side's --upstream listener,
// the mTLS tunnel, the server side; a rampart-controller in local mode),
// through a pair of nginx and through a pair of HAProxy set up as mTLS
// sidecars (TLS 1.3, client certificates, keep-alive both ways), and
// reports for each the request rate at saturation (wrk), the latency at a
// fixed rate (fortio), the CPU time and memory of the proxies, and ratios to
// nginx. It also compares gRPC unary calls through the mesh with direct
// ones (ghz), and measures the memory of one proxy holding discovery for
// many services.
//
// It drives the Rampart binaries only through their command lines and admin
// endpoints, as a user would, and must not import the proxy or the
// controller. The load generators and peers are external programs that
// bench/setup.sh installs.
//
// From the repository root:
//
//	bash bench/setup.sh && go run ./bench/sidecars -out bench/results.json
//
// -quick makes a short smoke run. Every process it starts is stopped when
// it ends, on Ctrl-C too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == backendCommand {
		if err := runBackend(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "sidecars backend:", err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "sidecars:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "sidecars: interrupted; every process it started is stopped")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "sidecars:", err)
		os.Exit(1)
	}
}

// All target names, in the order they are reported.
const (
	targetDirect     = "direct"
	targetRampart    = "rampart"
	targetRampartGMP = "rampart-gomaxprocs1"
	targetNginx      = "nginx"
	targetHAProxy    = "haproxy"
)

var allTargets = []string{targetDirect, targetRampart, targetRampartGMP, targetNginx, targetHAProxy}

// options are the command line's settings.
type options struct {
	out         string
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	qps         int
	connections int
	targets     []string
	basePort    int
	binDir      string
	backend     string
	workers     int
	grpc        bool
	discovery   bool
	services    int
	endpoints   int
	keep        bool
	traffic     bool
	trafficRPS  int
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("sidecars", flag.ContinueOnError)
	var o options
	var targets string
	var quick bool
	fs.StringVar(&o.out, "out", "bench/results.json", "where to write the results as JSON (empty: nowhere)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured run (saturation and fixed rate each)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before each target's measurements, not measured")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds over every target, interleaved; the median of each metric is reported")
	fs.BoolVar(&quick, "quick", false, "smoke run: -duration 3s -warmup 1s -rounds 1 (numbers are not to be published)")
	fs.IntVar(&o.qps, "qps", 1000, "rate of the fixed-rate runs that measure latency and CPU")
	fs.IntVar(&o.connections, "connections", 10, "connections of wrk and fortio, concurrent calls of ghz")
	fs.StringVar(&targets, "targets", strings.Join(allTargets, ","), "targets to measure, comma-separated")
	fs.IntVar(&o.basePort, "base-port", 17000, "first of the consecutive loopback ports used, each checked free (0: ports the kernel picks)")
	fs.StringVar(&o.binDir, "bin-dir", "", "directory with prebuilt rampart, rampart-controller and rampart-proxy (default: build them into .cache/bench/bin)")
	fs.StringVar(&o.backend, "backend", "nginx", "HTTP backend every target reaches: nginx (return 200) or go (net/http)")
	fs.IntVar(&o.workers, "peer-workers", 1, "nginx worker_processes and HAProxy nbthread of each side")
	fs.BoolVar(&o.grpc, "grpc", true, "also compare gRPC unary calls direct and through Rampart (ghz)")
	fs.BoolVar(&o.discovery, "discovery", true, "also measure the memory of a proxy holding discovery for -services services")
	fs.IntVar(&o.services, "services", 1000, "services of the discovery measurement")
	fs.IntVar(&o.endpoints, "endpoints", 10000, "endpoints (static workloads) of the discovery measurement, spread evenly over the services")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory (configurations, logs) even when the run succeeds")
	fs.BoolVar(&o.traffic, "traffic", true, "also run the traffic scenario: an endpoint killed and a route flipped under a fixed request rate")
	fs.IntVar(&o.trafficRPS, "traffic-rps", 500, "request rate of the traffic scenario, all its clients together")
	var onlyTraffic bool
	fs.BoolVar(&onlyTraffic, "only-traffic", false, "run the traffic scenario alone (no targets, gRPC or discovery; needs none of the external tools)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if quick {
		o.duration, o.warmup, o.rounds = 3*time.Second, time.Second, 1
	}
	if onlyTraffic {
		targets, o.grpc, o.discovery, o.traffic = "", false, false, true
	}
	for _, t := range strings.Split(targets, ",") {
		if t = strings.TrimSpace(t); t == "" && onlyTraffic {
			continue
		}
		t = strings.TrimSpace(t)
		if !slices.Contains(allTargets, t) {
			return o, fmt.Errorf("-targets: unknown target %q; known: %s", t, strings.Join(allTargets, ", "))
		}
		if !slices.Contains(o.targets, t) {
			o.targets = append(o.targets, t)
		}
	}
	switch {
	case o.duration < time.Second:
		return o, errors.New("-duration must be at least 1s")
	case o.rounds < 1 || o.qps < 1 || o.connections < 1 || o.workers < 1:
		return o, errors.New("-rounds, -qps, -connections and -peer-workers must be positive")
	case o.traffic && (o.trafficRPS < trafficClients || o.trafficRPS > 5000):
		return o, fmt.Errorf("-traffic-rps must be between %d and 5000", trafficClients)
	case o.backend != "nginx" && o.backend != "go":
		return o, fmt.Errorf("-backend %q: want nginx or go", o.backend)
	case o.services < 1 || o.endpoints < o.services:
		return o, errors.New("-services must be positive and -endpoints at least -services")
	case o.basePort < 0 || o.basePort > 65000:
		return o, errors.New("-base-port must be between 0 and 65000")
	}
	o.endpoints -= o.endpoints % o.services // evenly spread
	return o, nil
}

func (o options) wants(t string) bool { return slices.Contains(o.targets, t) }

func (o options) wantsRampart() bool { return o.wants(targetRampart) || o.wants(targetRampartGMP) }

// run is one benchmark: set up, measure, report, tear down.
func run(ctx context.Context, o options) (err error) {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	tools, err := findTools(root, o)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rampart-bench-")
	if err != nil {
		return err
	}
	// nginx's workers run as nobody and open nothing here, but may need
	// to traverse the directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	defer func() {
		if err != nil || o.keep {
			fmt.Fprintf(os.Stderr, "sidecars: configurations and logs are kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	sup := &supervisor{}
	defer sup.stop()

	b := &bench{opts: o, root: root, dir: dir, tools: tools, sup: sup, ports: &portAllocator{next: o.basePort}}
	res, err := b.run(ctx)
	if err != nil {
		return err
	}
	if o.out != "" {
		if err := res.write(o.out); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "sidecars: results written to %s\n", o.out)
	}
	fmt.Print(res.markdown())
	return nil
}

// repoRoot finds the repository root: the directory, from the working
// directory up, whose go.mod is Rampart's.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/rampart-mesh/rampart\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the Rampart repository: run it from the repository root, as go run ./bench/sidecars")
		}
		dir = parent
	}
}

// toolPaths are the external programs the benchmark runs.
type toolPaths struct {
	wrk, fortio, ghz, nginx, haproxy string
}

// findTools looks the programs up in PATH, then where bench/setup.sh
// installs them.
func findTools(root string, o options) (toolPaths, error) {
	dirs := append(filepath.SplitList(os.Getenv("PATH")), filepath.Join(root, ".cache", "bin"), "/usr/sbin", "/usr/local/sbin")
	var t toolPaths
	var missing []string
	need := func(name string, path *string, needed bool) {
		if !needed {
			return
		}
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				*path = p
				return
			}
		}
		missing = append(missing, name)
	}
	targets := len(o.targets) > 0
	need("wrk", &t.wrk, targets)
	need("fortio", &t.fortio, targets)
	need("ghz", &t.ghz, o.grpc && o.wantsRampart())
	need("nginx", &t.nginx, targets && (o.backend == "nginx" || o.wants(targetNginx)))
	need("haproxy", &t.haproxy, o.wants(targetHAProxy))
	if len(missing) > 0 {
		return t, fmt.Errorf("%s not found in PATH, .cache/bin or /usr/sbin: run `bash bench/setup.sh` first; it installs wrk, nginx and haproxy with apt-get and fortio and ghz into .cache/bin",
			strings.Join(missing, ", "))
	}
	if o.binDir == "" {
		if _, err := exec.LookPath("go"); err != nil {
			return t, errors.New("go not found in PATH: it builds the Rampart binaries; install Go or give -bin-dir with prebuilt ones")
		}
	}
	return t, nil
}
