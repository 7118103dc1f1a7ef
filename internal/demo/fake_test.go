package demo

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/rampart-mesh/rampart/internal/demo/apps"
	"github.com/rampart-mesh/rampart/internal/identity"
)

// The test binary doubles as every process the demo starts: linked as
// rampart-controller, rampart-proxy or rampart, it behaves as a fake of
// that binary; run with "fake-child MODE" it is a process for the
// supervisor tests. The fakes keep the contracts the demo relies on (flags,
// files, admin endpoints, metrics) and nothing else.
func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case ControllerBinary:
		os.Exit(fakeController(os.Args[1:]))
	case ProxyBinary:
		os.Exit(fakeProxy(os.Args[1:]))
	case "rampart":
		os.Exit(fakeApp(os.Args[1:]))
	}
	if len(os.Args) > 2 && os.Args[1] == "fake-child" {
		os.Exit(fakeChild(os.Args[2]))
	}
	goleak.VerifyTestMain(m)
}

// Environment the fakes read; children inherit it from the test.
const (
	// envController makes the fake controller "fail" at once or stay
	// "unready".
	envController = "RAMPART_FAKE_CONTROLLER"
	// envCrash names a workload whose fake proxy crashes on its second
	// metrics scrape.
	envCrash = "RAMPART_FAKE_CRASH"
)

// fakeBinDir links the test binary into a fresh directory under the names
// of the demo's binaries.
func fakeBinDir(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{ControllerBinary, ProxyBinary, "rampart"} {
		if err := os.Symlink(exe, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// untilTerminated blocks until SIGTERM or SIGINT.
func untilTerminated() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}

func fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	return 2
}

// serve serves h on addr in the background.
func serve(addr string, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go http.Serve(l, h) //nolint:errcheck // lives as long as the process
	return nil
}

func fakeController(args []string) int {
	fs := flag.NewFlagSet(ControllerBinary, flag.ContinueOnError)
	var stateDir, configDir, listen, admin, td, ttl, logFormat string
	fs.StringVar(&stateDir, "state-dir", "", "")
	fs.StringVar(&configDir, "config-dir", "", "")
	fs.StringVar(&listen, "listen", "", "")
	fs.StringVar(&admin, "admin-listen", "", "")
	fs.StringVar(&td, "trust-domain", "", "")
	fs.StringVar(&ttl, "svid-ttl", "", "")
	fs.StringVar(&logFormat, "log-format", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	mode := os.Getenv(envController)
	if mode == "fail" {
		return fail("fake controller: failing as asked")
	}
	if td != TrustDomain || ttl != "24h" || logFormat != "text" {
		return fail("fake controller: unexpected flags %q", args)
	}
	for _, name := range []string{"web.yaml", "orders.yaml", "payments.yaml"} {
		if _, err := os.Stat(filepath.Join(configDir, name)); err != nil {
			return fail("fake controller: %v", err)
		}
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fail("fake controller: %v", err)
	}
	defer l.Close()
	err = serve(admin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" && mode == "unready" {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	if err != nil {
		return fail("fake controller: %v", err)
	}
	bundle := "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(filepath.Join(stateDir, bundleFile), []byte(bundle), 0o600); err != nil {
		return fail("fake controller: %v", err)
	}
	fmt.Fprintln(os.Stderr, "fake controller: serving")
	if mode == "unready" {
		fmt.Fprintln(os.Stderr, "fake controller: not ready, on purpose")
	}
	untilTerminated()
	fmt.Fprintln(os.Stderr, "fake controller: stopped")
	return 0
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func fakeProxy(args []string) int {
	fs := flag.NewFlagSet(ProxyBinary, flag.ContinueOnError)
	var controller, bundle, token, workload, labels, tunnel, admin, logFormat, ns, sa string
	var upstreams listFlag
	fs.StringVar(&controller, "controller", "", "")
	fs.StringVar(&bundle, "trust-bundle", "", "")
	fs.StringVar(&token, "join-token", "", "")
	fs.StringVar(&workload, "workload", "", "")
	fs.StringVar(&labels, "labels", "", "")
	fs.StringVar(&tunnel, "tunnel-listen", "", "")
	fs.StringVar(&admin, "admin-listen", "", "")
	fs.StringVar(&logFormat, "log-format", "", "")
	fs.StringVar(&ns, "namespace", "default", "")
	fs.StringVar(&sa, "service-account", "", "")
	fs.Var(&upstreams, "upstream", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if ns != Namespace || sa != workload || labels != "app="+workload {
		return fail("fake proxy: identity flags %s/%s, labels %q for workload %s", ns, sa, labels, workload)
	}
	// Attest as the controller would: consume the token from the store
	// beside the bundle, and check what it admits.
	store, err := identity.OpenTokenStore(filepath.Join(filepath.Dir(bundle), tokensFile), nil)
	if err != nil {
		return fail("fake proxy: %v", err)
	}
	id, err := store.Consume(token)
	if err != nil {
		return fail("fake proxy: %v", err)
	}
	want, _ := identity.WorkloadID(spiffeid.RequireTrustDomainFromString(TrustDomain), Namespace, workload)
	if id != want {
		return fail("fake proxy: token admits %s, want %s", id, want)
	}
	if _, err := net.Dial("tcp", controller); err != nil {
		return fail("fake proxy: controller: %v", err)
	}
	tl, err := net.Listen("tcp", tunnel)
	if err != nil {
		return fail("fake proxy: %v", err)
	}
	defer tl.Close()

	var scrapes atomic.Int64
	crash := os.Getenv(envCrash) == workload
	err = serve(admin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ready":
			w.Write([]byte("ready\n"))
		case "/metrics":
			n := scrapes.Add(1)
			if crash && n == 2 {
				fmt.Fprintln(os.Stderr, "fake proxy: crashing, as asked")
				os.Exit(3)
			}
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			for _, u := range upstreams {
				svc, _, _ := strings.Cut(u, "=")
				writeFakeMetrics(w, svc, n)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	if err != nil {
		return fail("fake proxy: %v", err)
	}
	for _, u := range upstreams {
		svc, addr, _ := strings.Cut(u, "=")
		if err := serve(addr, fakeUpstream(svc)); err != nil {
			return fail("fake proxy: %v", err)
		}
	}
	fmt.Fprintf(os.Stderr, "fake proxy %s: serving as %s\n", workload, id)
	untilTerminated()
	return 0
}

// writeFakeMetrics writes cumulative outbound series for svc after n
// scrapes: 10 requests a scrape, one of them failed, latencies of 1 to 5ms.
func writeFakeMetrics(w http.ResponseWriter, svc string, n int64) {
	peer := "spiffe://rampart.local/ns/demo/sa/" + svc
	service := svc + "." + Namespace
	fmt.Fprintf(w, "# TYPE %s counter\n", requestsMetric)
	fmt.Fprintf(w, "%s{direction=%q,dst_identity=%q,dst_service=%q,code=\"200\"} %d\n", requestsMetric, outbound, peer, service, 9*n)
	fmt.Fprintf(w, "%s{direction=%q,dst_identity=%q,dst_service=%q,code=\"503\"} %d\n", requestsMetric, outbound, "", service, n)
	fmt.Fprintf(w, "%s{direction=\"inbound\",src_identity=%q,dst_service=%q,code=\"200\"} %d\n", requestsMetric, peer, service, 1000*n)
	fmt.Fprintf(w, "# TYPE %s histogram\n", durationMetric)
	for _, b := range []struct {
		le    string
		count int64
	}{{"0.001", 0}, {"0.0025", 5 * n}, {"0.005", 10 * n}, {"+Inf", 10 * n}} {
		fmt.Fprintf(w, "%s_bucket{direction=%q,dst_identity=%q,dst_service=%q,le=%q} %d\n", durationMetric, outbound, peer, service, b.le, b.count)
	}
	fmt.Fprintf(w, "%s_sum{direction=%q,dst_identity=%q,dst_service=%q} %g\n", durationMetric, outbound, peer, service, 0.03*float64(n))
	fmt.Fprintf(w, "%s_count{direction=%q,dst_identity=%q,dst_service=%q} %d\n", durationMetric, outbound, peer, service, 10*n)
}

// fakeUpstream answers on a proxy's outbound listener as the mesh would.
func fakeUpstream(svc string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if svc != "web" {
			w.Write([]byte("{}\n"))
			return
		}
		id := func(sa string) string { return "spiffe://rampart.local/ns/demo/sa/" + sa }
		json.NewEncoder(w).Encode(apps.WebResponse{ //nolint:errcheck // test fake
			Service: "web",
			Caller:  id("loadgen"),
			Order: apps.OrderResponse{
				Service: "orders", OrderID: "1", AmountCents: apps.AmountFor(1), Caller: id("web"),
				Payment: apps.PaymentResult{Approved: true, AuthorizationID: "auth-000001", Caller: id("orders")},
			},
		})
	})
}

func fakeApp(args []string) int {
	if len(args) == 0 || args[0] != "demo-app" {
		return fail("fake app: want demo-app, got %q", args)
	}
	fs := flag.NewFlagSet("demo-app", flag.ContinueOnError)
	var role, listen, orders, payments, target, rate string
	fs.StringVar(&role, "role", "", "")
	fs.StringVar(&listen, "listen", "", "")
	fs.StringVar(&orders, "orders", "", "")
	fs.StringVar(&payments, "payments", "", "")
	fs.StringVar(&target, "target", "", "")
	fs.StringVar(&rate, "rate", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	// What matters is that each app is pointed at its proxy's listener;
	// the real apps check the rest (package apps).
	cfg := apps.Config{Role: apps.Role(role), Listen: listen, Orders: orders, Payments: payments, Target: target}
	if err := cfg.Validate(); err != nil {
		return fail("fake app: %v", err)
	}
	if listen != "" {
		if err := serve(listen, http.NotFoundHandler()); err != nil {
			return fail("fake app: %v", err)
		}
	}
	fmt.Fprintf(os.Stderr, "fake app %s: running\n", role)
	untilTerminated()
	return 0
}

// fakeChild is a process for the supervisor tests.
func fakeChild(mode string) int {
	switch mode {
	case "serve":
		fmt.Println("serving")
		untilTerminated()
		fmt.Println("bye")
		return 0
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(time.Hour)
		return 0
	case "crash":
		for i := 1; i <= 30; i++ {
			fmt.Printf("line %d\n", i)
		}
		return 3
	case "spawn":
		// Leave a stubborn grandchild in the process group.
		cmd := exec.Command(os.Args[0], "fake-child", "stubborn")
		if err := cmd.Start(); err != nil {
			return fail("spawn: %v", err)
		}
		fmt.Printf("grandchild %d\n", cmd.Process.Pid)
		untilTerminated()
		return 0
	}
	return fail("fake-child: unknown mode %q", mode)
}
