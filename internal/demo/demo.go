// Package demo runs `rampart demo`: a whole mesh on one machine, started
// with one command. It starts rampart-controller, creates a join token per
// workload, and starts four workloads, each an app (package apps, run as
// `rampart demo-app`) beside its own rampart-proxy: loadgen calls web over
// HTTP, web calls orders over HTTP, orders calls payments over gRPC, and
// every hop goes through the proxies over mTLS with SPIFFE identities. It
// prints where everything listens and who is who, traces one request
// through the chain, then prints the traffic of every hop at a fixed
// interval, read from the calling proxies' metrics.
//
// The demo drives the binaries only through their command lines, files and
// HTTP admin endpoints, as a user would; it must not import the controller
// or the proxy. It shares internal/identity with them to mint join tokens.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rampart-mesh/rampart/internal/demo/apps"
	"github.com/rampart-mesh/rampart/internal/identity"
)

// The binaries the demo runs from Config.BinDir.
const (
	ControllerBinary = "rampart-controller"
	ProxyBinary      = "rampart-proxy"
)

// Defaults of Config.
const (
	DefaultInterval     = 5 * time.Second
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopTimeout  = 5 * time.Second
	DefaultRate         = apps.DefaultRate
	// MinInterval is the shortest Interval accepted.
	MinInterval = 100 * time.Millisecond
)

const (
	// tokenTTL bounds how long a proxy may take to present its join token.
	tokenTTL = 10 * time.Minute
	// traceTimeout bounds the wait for the first request to get through.
	traceTimeout = 15 * time.Second
	// pollEvery is how often readiness is checked.
	pollEvery = 100 * time.Millisecond
	// requestTimeout bounds each readiness check, scrape and traced request.
	requestTimeout = 2 * time.Second
)

// Stop stages: the supervisor stops the highest first, so that traffic ends
// before the proxies do and the controller goes last.
const (
	stageController = iota
	stageMesh       // apps and proxies
	stageLoad       // loadgen's app
)

// Config configures a Demo.
type Config struct {
	// BinDir holds rampart-controller and rampart-proxy. Required.
	BinDir string
	// StateDir holds the controller's state, the Service documents and the
	// logs. Empty means a new temporary directory, removed when Run
	// returns nil and kept (and named) when it fails.
	StateDir string
	// AppCommand is the command line that runs a demo app, before the
	// app's own flags. Nil means the running executable with "demo-app",
	// which is right when that executable is the rampart CLI.
	AppCommand []string
	// Out receives what the user reads; nil discards it.
	Out io.Writer
	// Logger receives the demo's own diagnostics; nil discards them.
	Logger *slog.Logger
	// Interval is how often the traffic table is printed; zero means
	// DefaultInterval.
	Interval time.Duration
	// Rate is loadgen's requests per second; zero means DefaultRate.
	Rate float64
	// ReadyTimeout bounds the wait for each process to become ready; zero
	// means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// StopTimeout is how long a process may take to exit after SIGTERM
	// before it is killed; zero means DefaultStopTimeout.
	StopTimeout time.Duration
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	if c.BinDir == "" {
		return errors.New("demo: no binary directory: point it at the directory holding " + ControllerBinary + " and " + ProxyBinary)
	}
	if c.Interval != 0 && c.Interval < MinInterval {
		return fmt.Errorf("demo: interval %v is shorter than %v", c.Interval, MinInterval)
	}
	if c.Rate < 0 || c.ReadyTimeout < 0 || c.StopTimeout < 0 {
		return errors.New("demo: rate and timeouts must not be negative")
	}
	if c.AppCommand != nil && len(c.AppCommand) == 0 {
		return errors.New("demo: the app command is empty")
	}
	return nil
}

// Demo is one run of the demo.
type Demo struct {
	cfg        Config
	out        io.Writer
	log        *slog.Logger
	controller string // path of rampart-controller
	proxy      string // path of rampart-proxy
	client     *http.Client
}

// New validates cfg and finds the binaries.
func New(cfg Config) (*Demo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.AppCommand == nil {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("demo: finding the rampart executable to run the demo apps: %w", err)
		}
		cfg.AppCommand = []string{self, "demo-app"}
	}
	d := &Demo{
		cfg:    cfg,
		out:    cfg.Out,
		log:    cfg.Logger,
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: requestTimeout},
	}
	if d.out == nil {
		d.out = io.Discard
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	var missing []string
	for _, b := range []struct {
		name string
		path *string
	}{{ControllerBinary, &d.controller}, {ProxyBinary, &d.proxy}} {
		p := filepath.Join(cfg.BinDir, b.name)
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, p)
			continue
		}
		*b.path = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("demo: %s not found or not executable: build the binaries first (make build) or point --bin-dir at them",
			strings.Join(missing, " and "))
	}
	return d, nil
}

// Run starts the mesh, reports on it every Interval until ctx ends, then
// stops every process it started and returns once they have all exited.
// It returns nil when ctx ends, and an error when the mesh cannot start or
// a process dies.
func (d *Demo) Run(ctx context.Context) (err error) {
	stateDir, temporary := d.cfg.StateDir, false
	if stateDir == "" {
		stateDir, err = os.MkdirTemp("", "rampart-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		temporary = true
	}
	if stateDir, err = filepath.Abs(stateDir); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		switch {
		case err == nil && temporary:
			if rerr := os.RemoveAll(stateDir); rerr != nil {
				d.log.Warn("removing the state directory", "dir", stateDir, "err", rerr)
			}
		case err != nil:
			fmt.Fprintf(d.out, "\nState and logs are kept in %s.\n", stateDir)
		}
	}()

	ports, err := freePorts(portsNeeded())
	if err != nil {
		return err
	}
	p, err := newPlan(stateDir, ports)
	if err != nil {
		return err
	}
	if err := p.writeConfig(); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "Rampart demo: loadgen -> web -> orders -> payments, every hop through Rampart proxies over mTLS.\n")
	if temporary {
		fmt.Fprintf(d.out, "State and logs: %s (removed when the demo ends cleanly)\n\n", stateDir)
	} else {
		fmt.Fprintf(d.out, "State and logs: %s\n\n", stateDir)
	}

	sup := newSupervisor(d.log, d.cfg.StopTimeout)
	defer func() {
		fmt.Fprintf(d.out, "\nStopping every process ...")
		sup.stop()
		fmt.Fprintf(d.out, " done.\n")
	}()

	err = d.run(ctx, sup, p)
	d.client.CloseIdleConnections()
	if ctx.Err() != nil {
		// Interrupted: whatever failed failed because of it.
		return nil
	}
	return err
}

func (d *Demo) run(ctx context.Context, sup *supervisor, p *plan) error {
	if err := d.startController(ctx, sup, p); err != nil {
		return err
	}
	tokens, err := d.createTokens(p)
	if err != nil {
		return err
	}
	if err := d.startMesh(ctx, sup, p, tokens); err != nil {
		return err
	}
	d.printLayout(p)
	if err := d.trace(ctx, sup, p); err != nil {
		return err
	}

	lg := p.workload("loadgen")
	if _, err := sup.start(lg.appName(), stageLoad, d.appArgs(lg), p.logPath(lg.appName())); err != nil {
		return err
	}
	return d.monitor(ctx, sup, p)
}

func (d *Demo) startController(ctx context.Context, sup *supervisor, p *plan) error {
	fmt.Fprintf(d.out, "Starting the controller ...")
	start := time.Now()
	c, err := sup.start("controller", stageController, []string{
		d.controller,
		"--state-dir", p.controllerDir,
		"--config-dir", p.configDir,
		"--listen", p.controllerAddr,
		"--admin-listen", p.controllerAdmin,
		"--trust-domain", TrustDomain,
		"--svid-ttl", "24h",
		"--log-format", "text",
	}, p.logPath("controller"))
	if err != nil {
		return err
	}
	ready := "http://" + p.controllerAdmin + "/ready"
	if err := d.waitFor(ctx, sup, "the controller", []*child{c}, func(ctx context.Context) error {
		if err := d.httpReady(ctx, ready); err != nil {
			return err
		}
		if _, err := os.Stat(p.bundlePath()); err != nil {
			return fmt.Errorf("no trust bundle yet: %w", err)
		}
		return nil
	}); err != nil {
		return err
	}
	fmt.Fprintf(d.out, " ready in %s\n", since(start))
	return nil
}

// createTokens mints one single-use join token per workload, admitting it
// as spiffe://rampart.local/ns/demo/sa/<name>. The controller reads the
// same store file when a proxy presents its token.
func (d *Demo) createTokens(p *plan) (map[string]string, error) {
	store, err := identity.OpenTokenStore(p.tokensPath(), nil)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	tokens := make(map[string]string, len(p.workloads))
	for _, w := range p.workloads {
		tok, err := store.Create(w.id, tokenTTL)
		if err != nil {
			return nil, fmt.Errorf("demo: join token for %s: %w", w.name, err)
		}
		tokens[w.name] = tok
	}
	fmt.Fprintf(d.out, "Created a single-use join token for each workload (unused, it expires in %d minutes)\n", tokenTTL/time.Minute)
	return tokens, nil
}

// startMesh starts the serving apps, then every proxy, and waits for all.
func (d *Demo) startMesh(ctx context.Context, sup *supervisor, p *plan, tokens map[string]string) error {
	fmt.Fprintf(d.out, "Starting the apps ...")
	start := time.Now()
	var started []*child
	for _, w := range p.workloads {
		if w.appAddr == "" {
			continue // loadgen starts once the mesh is up
		}
		c, err := sup.start(w.appName(), stageMesh, d.appArgs(w), p.logPath(w.appName()))
		if err != nil {
			return err
		}
		started = append(started, c)
	}
	for i, c := range started {
		addr := p.workload(c.name).appAddr
		if err := d.waitFor(ctx, sup, "the "+c.name+" app", started[i:i+1], func(ctx context.Context) error {
			return dialReady(ctx, addr)
		}); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, " ready in %s\n", since(start))

	fmt.Fprintf(d.out, "Starting the proxies ...")
	start = time.Now()
	started = started[:0]
	for _, w := range p.workloads {
		c, err := sup.start(w.proxyName(), stageMesh, d.proxyArgs(p, w, tokens[w.name]), p.logPath(w.proxyName()))
		if err != nil {
			return err
		}
		started = append(started, c)
	}
	for i, w := range p.workloads {
		ready := "http://" + w.adminAddr + "/ready"
		if err := d.waitFor(ctx, sup, "the "+w.proxyName(), started[i:i+1], func(ctx context.Context) error {
			return d.httpReady(ctx, ready)
		}); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, " ready in %s (each holds a certificate for its SPIFFE ID and its configuration)\n\n", since(start))
	return nil
}

func (d *Demo) appArgs(w *workload) []string {
	args := append([]string(nil), d.cfg.AppCommand...)
	args = append(args, "--role", w.name)
	switch w.name {
	case "loadgen":
		args = append(args, "--target", "http://"+w.outboundAddr+"/", "--rate", strconv.FormatFloat(d.cfg.Rate, 'g', -1, 64))
	case "web":
		args = append(args, "--listen", w.appAddr, "--orders", "http://"+w.outboundAddr)
	case "orders":
		args = append(args, "--listen", w.appAddr, "--payments", w.outboundAddr)
	case "payments":
		args = append(args, "--listen", w.appAddr)
	}
	return args
}

func (d *Demo) proxyArgs(p *plan, w *workload, token string) []string {
	args := []string{
		d.proxy,
		"--controller", p.controllerAddr,
		"--trust-bundle", p.bundlePath(),
		"--join-token", token,
		"--namespace", Namespace,
		"--service-account", w.name,
		"--workload", w.name,
		"--labels", "app=" + w.name,
		"--tunnel-listen", w.tunnelAddr,
		"--admin-listen", w.adminAddr,
		"--log-format", "text",
	}
	if w.calls != "" {
		args = append(args, "--upstream", w.calls+"="+w.outboundAddr)
	}
	return args
}

// waitFor polls check until it succeeds. It fails when any child exits,
// when ctx ends, or after ReadyTimeout, quoting the logs of watch.
func (d *Demo) waitFor(ctx context.Context, sup *supervisor, what string, watch []*child, check func(context.Context) error) error {
	deadline := time.NewTimer(d.cfg.ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, requestTimeout)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-sup.exited:
			fmt.Fprintln(d.out)
			return fmt.Errorf("demo: while waiting for %s: %w", what, sup.exitErr(c))
		case <-deadline.C:
			fmt.Fprintln(d.out)
			var b strings.Builder
			fmt.Fprintf(&b, "demo: %s is not ready after %s (last check: %v)", what, d.cfg.ReadyTimeout, last)
			for _, c := range watch {
				fmt.Fprintf(&b, "; %s", describeTail(c.logPath, tail(c.logPath, tailLines)))
			}
			return errors.New(b.String())
		case <-tick.C:
		}
	}
}

// httpReady checks that GET url answers 200.
func (d *Demo) httpReady(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// dialReady checks that something accepts connections at addr.
func dialReady(ctx context.Context, addr string) error {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func since(t time.Time) time.Duration {
	return time.Since(t).Round(100 * time.Millisecond)
}

// printLayout tells where everything listens and who is who.
func (d *Demo) printLayout(p *plan) {
	fmt.Fprintf(d.out, "Controller: gRPC %s, admin http://%s, trust domain %s\n", p.controllerAddr, p.controllerAdmin, TrustDomain)
	fmt.Fprintf(d.out, "Trust bundle: %s\n\n", p.bundlePath())

	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tSPIFFE ID\tAPP\tPROXY TUNNEL (mTLS)\tPROXY ADMIN\tCALLS")
	for i := len(p.workloads) - 1; i >= 0; i-- { // in the order requests flow
		w := p.workloads[i]
		app := "-"
		if w.appAddr != "" {
			app = w.appAddr + " (" + w.protocol + ")"
		}
		calls := "-"
		if w.calls != "" {
			calls = w.calls + " via " + w.outboundAddr
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\thttp://%s\t%s\n", w.name, w.id, app, w.tunnelAddr, w.adminAddr, calls)
	}
	tw.Flush()

	fmt.Fprintf(d.out, "\nLogs:\n")
	tw = tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  controller\t%s\n", p.logPath("controller"))
	for i := len(p.workloads) - 1; i >= 0; i-- {
		w := p.workloads[i]
		fmt.Fprintf(tw, "  %s\t%s\n", w.appName(), p.logPath(w.appName()))
		fmt.Fprintf(tw, "  %s\t%s\n", w.proxyName(), p.logPath(w.proxyName()))
	}
	tw.Flush()
	fmt.Fprintln(d.out)
}

// trace sends one request into the mesh where loadgen sends its own (its
// proxy's listener for web) and prints who each service saw calling. A
// failure to get an answer is reported, not fatal: the traffic table will
// show it too. It fails only when a process dies meanwhile.
func (d *Demo) trace(ctx context.Context, sup *supervisor, p *plan) error {
	url := "http://" + p.workload("loadgen").outboundAddr + "/"
	var (
		resp    apps.WebResponse
		lastErr error
	)
	ctx, cancel := context.WithTimeout(ctx, traceTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		lastErr = d.getJSON(ctx, url, &resp)
		if lastErr == nil {
			break
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(d.out, "Could not trace a request through the mesh within %s: %v\n(the logs above say more)\n\n", traceTimeout, lastErr)
			return nil
		case c := <-sup.exited:
			return fmt.Errorf("demo: %w", sup.exitErr(c))
		case <-tick.C:
		}
	}
	o := resp.Order
	decision := "declined: " + o.Payment.Reason
	if o.Payment.Approved {
		decision = "approved as " + o.Payment.AuthorizationID
	}
	fmt.Fprintf(d.out, "One request, traced (sent to %s, loadgen's proxy listener for web):\n", url)
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  web\twas called by\t%s\tasked orders for order %s\n", orNone(resp.Caller), o.OrderID)
	fmt.Fprintf(tw, "  orders\twas called by\t%s\tasked payments to authorize %d.%02d EUR\n", orNone(o.Caller), o.AmountCents/100, o.AmountCents%100)
	fmt.Fprintf(tw, "  payments\twas called by\t%s\t%s\n", orNone(o.Payment.Caller), decision)
	tw.Flush()
	fmt.Fprintf(d.out, "Each caller identity was verified by the receiving proxy over mTLS and passed to the app in the %s header.\n\n", apps.CallerHeader)
	return nil
}

func orNone(id string) string {
	if id == "" {
		return "(no identity: not through the mesh?)"
	}
	return id
}

func (d *Demo) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, v)
}

// monitor prints the traffic table every Interval until ctx ends or a
// process dies.
func (d *Demo) monitor(ctx context.Context, sup *supervisor, p *plan) error {
	type source struct {
		edge    edge
		metrics string
		prev    snapshot
		at      time.Time
	}
	var sources []*source
	for i := len(p.workloads) - 1; i >= 0; i-- {
		w := p.workloads[i]
		if w.calls == "" {
			continue
		}
		s := &source{edge: edge{Source: w.name, Service: w.calls + "." + Namespace}, metrics: "http://" + w.adminAddr + "/metrics"}
		// Without a baseline the first table counts everything so far.
		s.prev, _ = d.scrape(ctx, s.metrics)
		s.at = time.Now()
		sources = append(sources, s)
	}
	fmt.Fprintf(d.out, "Traffic every %s, from each calling proxy's metrics (Ctrl-C to stop):\n", d.cfg.Interval)

	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-sup.exited:
			return fmt.Errorf("demo: %w", sup.exitErr(c))
		case now := <-tick.C:
			rows := make([]edgeStats, 0, len(sources))
			for _, s := range sources {
				at := time.Now()
				cur, err := d.scrape(ctx, s.metrics)
				if err != nil {
					rows = append(rows, edgeStats{edge: s.edge, Err: err})
					continue
				}
				rows = append(rows, statsFor(s.edge, s.prev, cur, at.Sub(s.at)))
				s.prev, s.at = cur, at
			}
			if ctx.Err() != nil {
				return nil
			}
			// A failed scrape is often a proxy that just died: say so
			// rather than print its row.
			select {
			case c := <-sup.exited:
				return fmt.Errorf("demo: %w", sup.exitErr(c))
			default:
			}
			fmt.Fprintln(d.out)
			writeTable(d.out, now, rows) //nolint:errcheck // nothing to do about a broken terminal
		}
	}
}

// scrape reads a proxy's metrics.
func (d *Demo) scrape(ctx context.Context, url string) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	return parseSnapshot(resp.Body)
}
