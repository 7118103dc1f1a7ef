package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// authzApps are an HTTP app that records every path it is asked for and a
// server-first TCP app, behind the "server" proxy.
type authzApps struct {
	httpPort, tcpPort int
	seen              chan string // paths the HTTP app served
}

func startAuthzApps(t *testing.T) *authzApps {
	t.Helper()
	a := &authzApps{seen: make(chan string, 1024)}
	hl := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case a.seen <- r.URL.RawPath + "|" + r.URL.Path:
		default:
		}
		fmt.Fprintf(w, "caller=%s path=%s", r.Header.Get("Rampart-Client-Id"), r.URL.Path)
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	a.httpPort = port(hl)

	a.tcpPort = startLineEcho(t)
	return a
}

// authzConfig is a namespace that denies by default and allows exactly
// three edges: web may GET /orders/*, batch may open TCP connections to
// the lines app, noisy may GET /orders/* within a rate limit that every
// caller has a bucket of its own in.
func authzConfig(a *authzApps) string {
	return fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: orders, namespace: %[1]s}
spec:
  selector: {app: server}
  serviceAccounts: [server]
  ports: [{name: http, port: 80, targetPort: %[2]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: lines, namespace: %[1]s}
spec:
  selector: {app: server}
  ports: [{name: tcp, port: 7, targetPort: %[3]d, protocol: TCP}]
---
apiVersion: rampart.dev/v1alpha1
kind: NamespacePolicy
metadata: {name: default, namespace: %[1]s}
spec: {defaultAuthorization: deny-all}
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: server-api, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://%[4]s/ns/%[1]s/sa/web", "spiffe://%[4]s/ns/%[1]s/sa/noisy"]}]
    to: [{methods: [GET], paths: ["/orders/*"]}]
  - from: [{principals: ["spiffe://%[4]s/ns/%[1]s/sa/batch"]}]
    to: [{ports: [%[3]d]}]
---
apiVersion: rampart.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: server, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: server}}
  limits:
  - {name: per-caller, per: source, requestsPerSecond: 1, burst: 20}
`, ns, a.httpPort, a.tcpPort, trustDomain)
}

// send makes one request through an outbound listener and returns the
// status, the decision ID header, the Retry-After header and the body.
func send(t *testing.T, method, addr, path string) (code int, decision, retryAfter, body string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Send the path exactly as written, as an attacker would.
	req.URL.Opaque = path
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Rampart-Decision-Id"), resp.Header.Get("Retry-After"), string(b)
}

// dialLines opens a connection to the lines service through addr and
// reports whether the app's greeting arrived.
func dialLines(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "hello\n"
}

// scrape returns the lines of a proxy's /metrics that start with name.
func scrape(t *testing.T, p *runningProxy, name string) []string {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.Lines(string(b)) {
		if strings.HasPrefix(l, name+"{") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// hasSeries reports whether one of lines has every label pair of labels.
// seriesValue sums the values of the lines that carry every label.
func seriesValue(lines []string, labels ...string) float64 {
	var sum float64
	for _, l := range lines {
		all := true
		for _, lv := range labels {
			all = all && strings.Contains(l, lv)
		}
		if i := strings.LastIndexByte(l, ' '); all && i >= 0 {
			v, _ := strconv.ParseFloat(l[i+1:], 64)
			sum += v
		}
	}
	return sum
}

func hasSeries(lines []string, labels ...string) bool {
	for _, l := range lines {
		all := true
		for _, lv := range labels {
			all = all && strings.Contains(l, lv)
		}
		if all {
			return true
		}
	}
	return false
}

func TestAuthorizationDenyByDefault(t *testing.T) {
	a := startAuthzApps(t)
	m := newMesh(t, time.Hour, authzConfig(a))
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	web := m.startProxy(proxyOpts{name: "web", upstreams: []string{"orders", "lines"}}, true)
	batch := m.startProxy(proxyOpts{name: "batch", upstreams: []string{"orders", "lines"}}, true)
	intruder := m.startProxy(proxyOpts{name: "intruder", upstreams: []string{"orders", "lines"}}, true)
	noisy := m.startProxy(proxyOpts{name: "noisy", upstreams: []string{"orders"}}, true)

	// The first request waits for the client to learn the endpoints.
	eventually(t, 5*time.Second, func() error {
		if code, _, _, body := send(t, "GET", web.UpstreamAddr(0), "/orders/7"); code != 200 {
			return fmt.Errorf("web GET /orders/7: %d %q", code, body)
		}
		return nil
	})

	t.Run("the allowed edges work", func(t *testing.T) {
		code, _, _, body := send(t, "GET", web.UpstreamAddr(0), "/orders/8")
		if want := "caller=" + web.ID().String() + " path=/orders/8"; code != 200 || body != want {
			t.Errorf("web GET /orders/8: %d %q, want 200 %q", code, body, want)
		}
		if !dialLines(t, batch.UpstreamAddr(1)) {
			t.Error("batch's TCP connection to lines got no greeting")
		}
	})

	t.Run("everything else is denied with a decision ID", func(t *testing.T) {
		// The caller learns the decision ID and nothing about the
		// policy; the server's metrics (and log) know why.
		noAllowMatch := []string{`decision="deny"`, `code="no_allow_match"`}
		before := seriesValue(scrape(t, server, "rampart_proxy_authz_decisions_total"), noAllowMatch...)
		for _, c := range []struct {
			who          *runningProxy
			method, path string
		}{
			{web, "GET", "/admin"},
			{web, "POST", "/orders/8"},
			{intruder, "GET", "/orders/8"},
			{batch, "GET", "/orders/8"},
		} {
			code, id, _, body := send(t, c.method, c.who.UpstreamAddr(0), c.path)
			if code != http.StatusForbidden || id == "" || body != "rampart: denied (decision "+id+")\n" {
				t.Errorf("%s %s %s: %d, decision %q, body %q; want 403 with the decision ID alone",
					c.who.ID(), c.method, c.path, code, id, body)
			}
		}
		if got := seriesValue(scrape(t, server, "rampart_proxy_authz_decisions_total"), noAllowMatch...); got != before+4 {
			t.Errorf("no_allow_match denials counted %v times, want %v", got, before+4)
		}
		if dialLines(t, web.UpstreamAddr(1)) || dialLines(t, intruder.UpstreamAddr(1)) {
			t.Error("a TCP connection to lines was allowed for a caller no rule names")
		}
	})

	t.Run("paths are normalized before matching and forwarded normalized", func(t *testing.T) {
		for len(a.seen) > 0 {
			<-a.seen
		}
		// Resolves to /admin: denied.
		if code, _, _, _ := send(t, "GET", web.UpstreamAddr(0), "/orders/../admin"); code != http.StatusForbidden {
			t.Errorf("GET /orders/../admin: %d, want 403", code)
		}
		// Cannot be normalized safely: refused before any rule.
		for _, p := range []string{"/orders/%2e%2e/admin", "/orders/x%2Fy", "/orders/x;y", "/orders/%252e"} {
			if code, id, _, _ := send(t, "GET", web.UpstreamAddr(0), p); code != http.StatusBadRequest || id == "" {
				t.Errorf("GET %s: %d (decision %q), want 400 with a decision ID", p, code, id)
			}
		}
		// Allowed, and the app sees the normalized form.
		if code, _, _, body := send(t, "GET", web.UpstreamAddr(0), "/orders//x/./9"); code != 200 || !strings.HasSuffix(body, "path=/orders/x/9") {
			t.Errorf("GET /orders//x/./9: %d %q, want 200 and the app to see /orders/x/9", code, body)
		}
		select {
		case got := <-a.seen:
			if got != "|/orders/x/9" {
				t.Errorf("the app saw %q, want only the allowed, normalized request", got)
			}
		default:
			t.Error("the app saw nothing")
		}
		if len(a.seen) > 0 {
			t.Errorf("the app saw %d more requests than were allowed", len(a.seen))
		}
	})

	t.Run("a noisy caller is rate limited and the others are not", func(t *testing.T) {
		limited, ok := 0, 0
		for i := range 40 {
			code, id, retry, _ := send(t, "GET", noisy.UpstreamAddr(0), "/orders/1")
			switch code {
			case http.StatusTooManyRequests:
				limited++
				if retry == "" || id == "" {
					t.Errorf("429 without Retry-After (%q) or decision ID (%q)", retry, id)
				}
			case http.StatusOK:
				ok++
			default:
				t.Errorf("noisy: status %d", code)
			}
			// web has a bucket of its own, untouched by noisy's flood.
			if i%8 == 0 {
				if code, _, _, body := send(t, "GET", web.UpstreamAddr(0), "/orders/2"); code != 200 {
					t.Errorf("web during noisy's flood: %d %q", code, body)
				}
			}
		}
		// The bucket holds 20 and refills at 1/s: 20 pass at once, then
		// one a second.
		if limited < 10 || ok < 20 {
			t.Errorf("noisy: %d allowed, %d limited; want the burst (20) allowed and the rest mostly limited", ok, limited)
		}
	})

	t.Run("decisions are counted by policy and rule", func(t *testing.T) {
		decisions := scrape(t, server, "rampart_proxy_authz_decisions_total")
		if !hasSeries(decisions, `decision="allow"`, `policy="e2e/server-api"`, `rule="0"`) ||
			!hasSeries(decisions, `decision="deny"`, `code="no_allow_match"`) {
			t.Errorf("decision metrics lack allow by server-api rule 0 or deny no_allow_match:\n%s", strings.Join(decisions, "\n"))
		}
		if limited := scrape(t, server, "rampart_proxy_rate_limited_total"); !hasSeries(limited, `policy="e2e/server"`, `limit="per-caller"`) {
			t.Errorf("rate limit metrics:\n%s", strings.Join(limited, "\n"))
		}
	})

	t.Run("a policy change reaches the proxy", func(t *testing.T) {
		m.writeConfig("intruder.yaml", fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: let-intruder-read, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://%[2]s/ns/%[1]s/sa/intruder"]}]
    to: [{methods: [GET]}]
`, ns, trustDomain))
		eventually(t, 10*time.Second, func() error {
			if code, _, _, body := send(t, "GET", intruder.UpstreamAddr(0), "/orders/3"); code != 200 {
				return fmt.Errorf("intruder after the new policy: %d %q", code, body)
			}
			return nil
		})
		// And a broken policy file changes nothing: the controller
		// refuses it and the last good configuration stays in force.
		errorsBefore := reloadErrors(t, m)
		m.writeConfig("broken.yaml", "apiVersion: rampart.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: e2e}\nspec: {action: ALLOW, rules: [{when: 'request.nope'}]}\n")
		eventually(t, 10*time.Second, func() error {
			if reloadErrors(t, m) == errorsBefore {
				return fmt.Errorf("the controller has not refused the broken file yet")
			}
			return nil
		})
		if code, _, _, _ := send(t, "GET", intruder.UpstreamAddr(0), "/orders/3"); code != 200 {
			t.Errorf("after a broken policy file: %d, want the last good policy (200)", code)
		}
		if code, _, _, _ := send(t, "GET", web.UpstreamAddr(0), "/admin"); code != http.StatusForbidden {
			t.Errorf("after a broken policy file: web GET /admin %d, want 403", code)
		}
	})
}

// reloadErrors returns how many times the controller refused its config
// directory.
func reloadErrors(t *testing.T, m *mesh) float64 {
	t.Helper()
	mfs, err := m.ctrl.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rampart_controller_config_reloads_total" {
			continue
		}
		for _, c := range mf.GetMetric() {
			for _, l := range c.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "error" {
					return c.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal("rampart_controller_config_reloads_total{result=\"error\"} is not exported")
	return 0
}

// TestAuthorizationGRPC checks that gRPC callers get gRPC statuses from
// the mesh's policy: PERMISSION_DENIED and RESOURCE_EXHAUSTED naming the
// decision, rather than an HTTP error their client cannot read.
func TestAuthorizationGRPC(t *testing.T) {
	gl := listen(t)
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, echoService{})
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)
	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: echo, namespace: %[1]s}
spec:
  selector: {app: server}
  ports: [{name: grpc, port: 50051, targetPort: %[2]d, protocol: GRPC}]
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: echo, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://%[3]s/ns/%[1]s/sa/client"]}]
---
apiVersion: rampart.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: echo, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: server}}
  limits:
  - {name: calls, per: source, requestsPerSecond: 1, burst: 3}
`, ns, port(gl), trustDomain))
	m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"echo"}}, true)
	intruder := m.startProxy(proxyOpts{name: "intruder", upstreams: []string{"echo"}}, true)

	call := func(p *runningProxy) error {
		conn, err := grpc.NewClient(p.UpstreamAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = testgrpc.NewTestServiceClient(conn).EmptyCall(ctx, &testgrpc.Empty{})
		return err
	}
	// The app implements only FullDuplexCall: an allowed EmptyCall reaches
	// it and comes back UNIMPLEMENTED.
	eventually(t, 5*time.Second, func() error {
		if err := call(client); status.Code(err) != codes.Unimplemented {
			return fmt.Errorf("allowed call: %v, want the app's UNIMPLEMENTED", err)
		}
		return nil
	})
	err := call(intruder)
	if msg := status.Convert(err).Message(); status.Code(err) != codes.PermissionDenied ||
		!regexp.MustCompile(`^rampart: denied \(decision [0-9a-f]{12}\)$`).MatchString(msg) {
		t.Errorf("denied call: %v, want PERMISSION_DENIED with the decision ID alone", err)
	}
	var exhausted error
	for range 10 {
		if err := call(client); status.Code(err) == codes.ResourceExhausted {
			exhausted = err
			break
		}
	}
	if exhausted == nil || !regexp.MustCompile(`^rampart: rate limited \(decision [0-9a-f]{12}\); retry after [0-9]+s$`).MatchString(status.Convert(exhausted).Message()) {
		t.Errorf("after a burst: %v, want RESOURCE_EXHAUSTED with the decision ID alone", exhausted)
	}
}
