package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
	"github.com/rampart-mesh/rampart/internal/testutil/browser"
)

// newBrowser starts a headless Chromium for the test. Under `make test`
// as root (RAMPART_REQUIRE_NETNS=1) a missing browser fails the test;
// elsewhere it skips it.
func newBrowser(t *testing.T) *browser.Browser {
	t.Helper()
	return browser.New(t, os.Getenv("RAMPART_REQUIRE_NETNS") == "1")
}

// The page's state as the test reads it.
const (
	jsNodes = `[...document.querySelectorAll('#graph [data-node]')].map(e => e.dataset.node).sort()`
	jsEdges = `Object.fromEntries([...document.querySelectorAll('#graph [data-edge]')].map(e => [e.dataset.edge, e.dataset.state]))`
	jsRows  = `Object.fromEntries([...document.querySelectorAll('#workloads tr[data-workload]')].map(e => [e.dataset.workload, Number(e.dataset.requests)]))`
)

// TestDashboardInBrowser runs the demo's shape (web calls orders, which
// calls payments, all through proxies) and opens the controller's
// dashboard in headless Chromium: the page loads without a console error,
// shows the three workloads and their edges (mTLS and authorized), updates
// when more traffic flows, says "unknown workload" for a workload that does
// not exist, and shows a banner rather than a blank page when the
// controller goes away. Screenshots of each step are saved.
func TestDashboardInBrowser(t *testing.T) {
	b := newBrowser(t)

	payments := listen(t)
	paySrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "paid")
	})}
	go paySrv.Serve(payments)
	t.Cleanup(func() { paySrv.Close() })
	// orders calls payments through its own proxy's outbound listener,
	// known once that proxy runs.
	var paymentsVia atomic.Pointer[string]
	orders := listen(t)
	ordersSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := paymentsVia.Load()
		if addr == nil {
			http.Error(w, "no route to payments yet", http.StatusServiceUnavailable)
			return
		}
		code, body, err := get(*addr, "/pay", nil)
		if err != nil || code != http.StatusOK {
			http.Error(w, fmt.Sprintf("payments: %d %v", code, err), http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, "order placed, "+body)
	})}
	go ordersSrv.Serve(orders)
	t.Cleanup(func() { ordersSrv.Close() })

	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: orders, namespace: %[1]s}
spec:
  selector: {app: orders}
  serviceAccounts: [orders]
  ports: [{name: http, port: 80, targetPort: %[2]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: payments, namespace: %[1]s}
spec:
  selector: {app: payments}
  serviceAccounts: [payments]
  ports: [{name: http, port: 80, targetPort: %[3]d, protocol: HTTP}]
`, ns, port(orders), port(payments)), withAdmin)
	m.startProxy(proxyOpts{name: "payments", labels: map[string]string{"app": "payments"}}, true)
	ordersProxy := m.startProxy(proxyOpts{name: "orders", labels: map[string]string{"app": "orders"}, upstreams: []string{"payments"}}, true)
	addr := ordersProxy.UpstreamAddr(0)
	paymentsVia.Store(&addr)
	web := m.startProxy(proxyOpts{name: "web", upstreams: []string{"orders"}}, true)

	send := func(n int) {
		t.Helper()
		eventually(t, 10*time.Second, func() error { // the first may race the configuration
			code, body, err := get(web.UpstreamAddr(0), "/order", nil)
			if err != nil || code != 200 {
				return fmt.Errorf("order: %d %q %v", code, body, err)
			}
			return nil
		})
		for i := 1; i < n; i++ {
			if code, body, err := get(web.UpstreamAddr(0), fmt.Sprintf("/order/%d", i), nil); err != nil || code != 200 {
				t.Fatalf("order %d: %d %q %v", i, code, body, err)
			}
		}
	}
	send(30)

	base := "http://" + m.ctrl.AdminAddr() + "/dashboard/"
	// The CLI prints the address the browser opens.
	out, err := exec.Command(rampartCLI(t), "dashboard", "--controller-admin", m.ctrl.AdminAddr(), "--no-browser").Output()
	if err != nil || strings.TrimSpace(string(out)) != "Rampart dashboard: "+base {
		t.Fatalf("rampart dashboard printed %q, %v; want the address %s", out, err, base)
	}
	b.Do(chromedp.Navigate(base))

	// The graph: three workloads, two edges, both mTLS and authorized. The
	// proxies report every 5 s.
	wantNodes := []string{ns + "/orders", ns + "/payments", ns + "/web"}
	wantEdges := map[string]string{ns + "/web->" + ns + "/orders": "ok", ns + "/orders->" + ns + "/payments": "ok"}
	browser.WaitFor(b, 45*time.Second, jsNodes+`.concat(Object.entries(`+jsEdges+`).map(([k, v]) => k + '=' + v))`, func(got []string) error {
		var want []string
		want = append(want, wantNodes...)
		for k, v := range wantEdges {
			want = append(want, k+"="+v)
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				return fmt.Errorf("the graph shows %v, want %v", got, want)
			}
		}
		return nil
	})
	var nodes []string
	if err := b.Eval(jsNodes, &nodes); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(nodes, wantNodes) {
		t.Errorf("graph nodes %v, want %v", nodes, wantNodes)
	}

	// Golden signals: every workload has a row, orders and payments
	// served what web sent.
	rows := browser.WaitFor(b, 30*time.Second, jsRows, func(got map[string]float64) error {
		if got[ns+"/orders"] < 30 || got[ns+"/payments"] < 30 || len(got) != 3 {
			return fmt.Errorf("golden signals rows %v, want the three workloads, orders and payments with 30 requests served", got)
		}
		return nil
	})
	var cells map[string]string
	if err := b.Eval(`Object.fromEntries([...document.querySelectorAll('#workloads tr[data-workload="`+ns+`/orders"] td[data-field]')].map(e => [e.dataset.field, e.textContent]))`, &cells); err != nil {
		t.Fatal(err)
	}
	if cells["success"] != "100.0%" || cells["mtls"] != "100.0%" || cells["instances"] != "1" || !strings.HasSuffix(cells["p99"], "ms") {
		t.Errorf("orders row %v, want 100.0%% success and mTLS, 1 instance, a p99", cells)
	}
	var sparks int
	if err := b.Eval(`document.querySelectorAll('#workloads svg.spark polyline[points*=","]').length`, &sparks); err != nil {
		t.Fatal(err)
	}
	if sparks < 4 {
		t.Errorf("%d sparklines drawn, want one of rate and one of success for each of orders and payments", sparks)
	}

	// Certificates: the trust anchor, the issuer and the workloads'.
	var certs []string
	browser.WaitFor(b, 10*time.Second, `[...document.querySelectorAll('#certs tbody tr')].map(r => r.cells[0].textContent + ' ' + r.cells[1].textContent)`, func(got []string) error {
		certs = got
		joined := strings.Join(got, "\n")
		for _, w := range []string{"trust anchor (active)", "issuer", "sa/web", "sa/orders", "sa/payments"} {
			if !strings.Contains(joined, w) {
				return fmt.Errorf("certificates %v lack %q", got, w)
			}
		}
		return nil
	})
	var denialsEmpty string
	if err := b.Eval(`document.getElementById('denials-empty').hidden ? '' : document.getElementById('denials-empty').textContent`, &denialsEmpty); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(denialsEmpty, "No request was denied") {
		t.Errorf("denials %q; want the empty state", denialsEmpty)
	}
	// No detection fired and nothing is quarantined: the panels' empty
	// states, not an error.
	browser.WaitFor(b, 10*time.Second, `['events-empty', 'quarantine-empty', 'banner'].map(id => document.getElementById(id).hidden ? '' : document.getElementById(id).textContent)`, func(got []string) error {
		if got[0] != "No security event in the last hour." || got[1] != "No identity is quarantined." || got[2] != "" {
			return fmt.Errorf("security events %q, quarantine %q, banner %q; want their empty states and no banner", got[0], got[1], got[2])
		}
		return nil
	})
	b.Screenshot("1-overview")
	t.Logf("after 30 orders: rows %v, %d certificates", rows, len(certs))

	// More traffic: the numbers follow without a reload.
	send(20)
	browser.WaitFor(b, 45*time.Second, jsRows, func(got map[string]float64) error {
		if got[ns+"/orders"] < rows[ns+"/orders"]+20 || got[ns+"/payments"] < rows[ns+"/payments"]+20 {
			var updated string
			_ = b.Eval(`document.getElementById('updated').textContent`, &updated)
			var st graph.StatResponse
			api := trafficCLI(t, rampartCLI(t), m.ctrl.AdminAddr(), &st, "stat")
			return fmt.Errorf("requests served %v (%s; the API: %+v %v), want 20 more than %v", got, updated, st.Workloads, api, rows)
		}
		return nil
	})
	b.Screenshot("2-updated")

	// One workload, then one that does not exist, then a page that does
	// not exist.
	b.Do(chromedp.Navigate(base + "#/workload/" + ns + "/orders"))
	browser.WaitFor(b, 15*time.Second, `document.getElementById('detail').hidden ? '' : document.getElementById('detail').textContent`, func(got string) error {
		if !strings.Contains(got, "Workload "+ns+"/orders") || !strings.Contains(got, "spiffe://"+trustDomain+"/ns/"+ns+"/sa/orders") ||
			!strings.Contains(got, ns+"/web") || !strings.Contains(got, ns+"/payments") {
			return fmt.Errorf("detail shows %q, want orders with its identity and its edges from web and to payments", got)
		}
		return nil
	})
	b.Screenshot("3-workload")
	for _, tc := range []struct{ hash, want string }{
		{"#/workload/" + ns + "/nobody", "unknown workload " + ns + "/nobody"},
		{"#/workload/" + ns + "/Not_A_Name", "unknown workload " + ns + "/Not_A_Name"},
		{"#/nowhere", "There is no page"},
	} {
		b.Do(chromedp.Navigate(base + tc.hash))
		browser.WaitFor(b, 15*time.Second, `document.getElementById('detail').hidden ? '' : document.getElementById('detail').textContent`, func(got string) error {
			if !strings.Contains(got, tc.want) {
				return fmt.Errorf("%s shows %q, want %q", tc.hash, got, tc.want)
			}
			return nil
		})
	}
	b.Screenshot("4-unknown-page")
	b.Do(chromedp.Navigate(base + "#/workload/" + ns + "/nobody"))
	browser.WaitFor(b, 15*time.Second, `(document.getElementById('unknown-workload') || {}).textContent || ''`, func(got string) error {
		if !strings.Contains(got, "unknown workload "+ns+"/nobody") || !strings.Contains(got, "has not reported traffic in the last 10 minutes") {
			return fmt.Errorf("unknown workload shows %q", got)
		}
		return nil
	})
	b.Screenshot("5-unknown-workload")
	if p := b.TakeProblems(); len(p) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(p, "\n"))
	}

	// The controller goes away: a banner says so and the last data stays.
	b.Do(chromedp.Navigate(base))
	browser.WaitFor(b, 15*time.Second, `document.querySelectorAll('#workloads tr[data-workload]').length`, func(n int) error {
		if n != 3 {
			return fmt.Errorf("%d rows", n)
		}
		return nil
	})
	m.stopController()
	browser.WaitFor(b, 15*time.Second, `document.getElementById('banner').hidden ? '' : document.getElementById('banner').textContent`, func(got string) error {
		if !strings.Contains(got, "Cannot read the controller") {
			return fmt.Errorf("banner %q", got)
		}
		return nil
	})
	var left int
	if err := b.Eval(`document.querySelectorAll('#workloads tr[data-workload]').length`, &left); err != nil || left != 3 {
		t.Errorf("with the controller away the table holds %d rows (%v), want the last 3", left, err)
	}
	b.Screenshot("6-controller-away")
	// Only the failed fetches may be logged now.
	for _, p := range b.TakeProblems() {
		if !strings.Contains(p, "ERR_CONNECTION_REFUSED") {
			t.Errorf("with the controller away the page logged %q", p)
		}
	}
}

// TestDashboardServesFilesOnly checks the dashboard's HTTP surface on a
// running controller without a browser: the page, its policy header, and
// clear 404s for what is not a file of it.
func TestDashboardServesFilesOnly(t *testing.T) {
	m := newMesh(t, time.Hour, "", withAdmin)
	base := "http://" + m.ctrl.AdminAddr()
	for _, tc := range []struct {
		path string
		code int
		ct   string
	}{
		{"/dashboard/", 200, "text/html; charset=utf-8"},
		{"/dashboard/app.js", 200, "text/javascript; charset=utf-8"},
		{"/dashboard/static/", 404, "text/plain; charset=utf-8"},
		{"/dashboard", 200, "text/html; charset=utf-8"}, // redirected to /dashboard/
		{"/api/v1/series?namespace=" + ns + "&workload=nobody", 404, "application/json"},
	} {
		resp, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != tc.ct {
			t.Errorf("GET %s = %d %s %.100q; want %d %s", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.code, tc.ct)
		}
		if strings.HasPrefix(tc.path, "/dashboard/") && tc.code == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, resp.Header.Get("Content-Security-Policy"))
		}
	}
}

// TestDashboardShowsPlaintextAndDenials feeds the graph an edge with
// denials and a plaintext caller, over the real control plane, and checks
// their colours and the denials table in the browser.
func TestDashboardShowsPlaintextAndDenials(t *testing.T) {
	b := newBrowser(t)
	m := newMesh(t, time.Hour, "", withAdmin)
	client := m.fakeReporter("client", "client")
	server := m.fakeReporter("server", "server")
	client.send(t, "client", &meshv1.EdgeSummary{
		Direction: meshv1.Direction_DIRECTION_OUTBOUND, PeerSpiffeId: server.id.String(), PeerWorkload: "server",
		Service: ns + "/web", Mtls: true, Requests: 40, Failures: 8, Denied: 8,
	})
	server.send(t, "server",
		&meshv1.EdgeSummary{Direction: meshv1.Direction_DIRECTION_INBOUND, PeerSpiffeId: client.id.String(),
			Service: ns + "/web", Mtls: true, Requests: 40, Failures: 8, Denied: 8},
		&meshv1.EdgeSummary{Direction: meshv1.Direction_DIRECTION_INBOUND, Service: ns + "/web", Requests: 10},
	)

	b.Do(chromedp.Navigate("http://" + m.ctrl.AdminAddr() + "/dashboard/"))
	want := map[string]string{ns + "/client->" + ns + "/server": "denied", "noproxy->" + ns + "/server": "plain"}
	browser.WaitFor(b, 30*time.Second, jsEdges, func(got map[string]string) error {
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("edges %v, want %v", got, want)
			}
		}
		return nil
	})
	var colours map[string]string
	if err := b.Eval(`Object.fromEntries([...document.querySelectorAll('#graph [data-edge] line')].map(l => [l.parentNode.dataset.edge, getComputedStyle(l).stroke]))`, &colours); err != nil {
		t.Fatal(err)
	}
	if red, amber := colours[ns+"/client->"+ns+"/server"], colours["noproxy->"+ns+"/server"]; red != "rgb(197, 48, 48)" || amber != "rgb(214, 158, 46)" {
		t.Errorf("edge colours: denied %q, plaintext %q; want red and amber", red, amber)
	}
	browser.WaitFor(b, 10*time.Second, `[...document.querySelectorAll('#denials tbody tr')].map(r => [...r.cells].map(c => c.textContent).join(' | '))`, func(got []string) error {
		if len(got) != 1 || got[0] != ns+"/client | "+ns+"/server | "+ns+"/web | 8 | 80.0%" {
			return fmt.Errorf("denials %q, want client to server, 8 denied, 80%% authorized", got)
		}
		return nil
	})
	b.Screenshot("denials")

	// Quarantining the client: the quarantine panel lists it, the graph
	// marks its node, and the other node stays unmarked.
	out, err := exec.Command(rampartCLI(t), "quarantine", "add", client.id.String(), "--for", "30m", "--reason", "scanning paths",
		"--state-dir", m.stateDir).CombinedOutput()
	if err != nil {
		t.Fatalf("rampart quarantine add: %v\n%s", err, out)
	}
	browser.WaitFor(b, 15*time.Second, `[...document.querySelectorAll('#quarantine tbody tr')].map(r => [...r.querySelectorAll('td[data-field]')].map(c => c.dataset.field + '=' + c.textContent).join(' | '))`, func(got []string) error {
		if len(got) != 1 {
			return fmt.Errorf("quarantine rows %q, want the client", got)
		}
		for _, w := range []string{"identity=" + client.id.String(), "workload=" + ns + "/client", "reason=scanning paths", "by=operator"} {
			if !strings.Contains(got[0], w) {
				return fmt.Errorf("quarantine row %q lacks %q", got[0], w)
			}
		}
		if !regexp.MustCompile(`left=(2[0-9]) min`).MatchString(got[0]) {
			return fmt.Errorf("quarantine row %q: want some 20 to 29 minutes left of 30", got[0])
		}
		return nil
	})
	browser.WaitFor(b, 15*time.Second, `Object.fromEntries([...document.querySelectorAll('#graph [data-node]')].map(g => [g.dataset.node, g.dataset.quarantined || '']))`, func(got map[string]string) error {
		if got[ns+"/client"] != "true" || got[ns+"/server"] != "" {
			return fmt.Errorf("graph marks %q, want the client quarantined and the server not", got)
		}
		return nil
	})
	b.Screenshot("quarantine")
	if p := b.TakeProblems(); len(p) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(p, "\n"))
	}
}
