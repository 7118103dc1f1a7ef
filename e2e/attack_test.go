package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/insights"
)

// The attack scenario's timing: proxies report every second, the
// baseline learns for attackLearning (the engine needs six 10 s samples
// of an edge before it looks for rate spikes on it).
const (
	attackLearning  = 65 * time.Second
	attackTelemetry = time.Second
	// detectWithin is how long a detection may take once its traffic
	// has been sent: a report interval, the report's way to the
	// controller, and the detection's own window where it needs one.
	detectWithin = 20 * time.Second
)

// TestAttackScenario is the insights story end to end, with real proxies
// and a real controller:
//
//  1. frontend and worker call api with load that varies (frontend ramps
//     between about 2 and 8 requests per second) while the baseline is
//     learnt;
//  2. `rampart policy recommend` writes least-privilege policies in AUDIT
//     mode: an unexpected caller (intruder) still gets through, and api's
//     proxy counts what the policies would deny; the observed callers
//     would be denied nothing;
//  3. the same policies in ENFORCE mode deny intruder while the observed
//     traffic keeps flowing;
//  4. worker is "compromised": it calls payments, which it never called
//     (new_edge), sends a burst to api (rate_spike) and scans api's paths
//     (route_scan, whose response is quarantine). Each detection fires
//     within seconds naming worker's identity; the quarantine cuts worker
//     off;
//  5. throughout, frontend's requests never fail and no event names
//     frontend (no false positive under its varying load).
func TestAttackScenario(t *testing.T) {
	api := listen(t)
	apiSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/stock", strings.HasPrefix(r.URL.Path, "/api/orders/"):
			fmt.Fprintln(w, "ok")
		default:
			http.NotFound(w, r)
		}
	})}
	go apiSrv.Serve(api)
	t.Cleanup(func() { apiSrv.Close() })
	payments := listen(t)
	paySrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "paid")
	})}
	go paySrv.Serve(payments)
	t.Cleanup(func() { paySrv.Close() })

	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: %[1]s}
spec:
  selector: {app: api}
  serviceAccounts: [api]
  ports: [{name: http, port: 80, targetPort: %[2]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: payments, namespace: %[1]s}
spec:
  selector: {app: payments}
  serviceAccounts: [payments]
  ports: [{name: http, port: 80, targetPort: %[3]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: DetectionPolicy
metadata: {name: mesh, namespace: rampart-system}
spec:
  learningPeriod: %[4]s
  quarantineDuration: 10m
  detections:
    routeScan: {action: Quarantine, window: 30s}
    rateSpike: {window: 20s}
`, ns, port(api), port(payments), attackLearning), withAdmin)
	admin := m.ctrl.AdminAddr()
	cli := rampartCLI(t)

	start := func(name string, upstreams ...string) *runningProxy {
		return m.startProxy(proxyOpts{
			name: name, labels: map[string]string{"app": name}, upstreams: upstreams,
			telemetryInterval: attackTelemetry,
		}, true)
	}
	apiProxy := start("api")
	start("payments")
	frontend := start("frontend", "api")
	worker := start("worker", "api", "payments")
	intruder := start("intruder", "api")

	// Normal traffic: frontend reads orders at a rate that ramps up and
	// down (a period of 40 s between about 2 and 8 requests per second),
	// worker polls stock at about 4 per second. Both run until the end.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var frontendOK, frontendFailed, workerOK atomic.Int64
	began := time.Now()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			code, body, err := get(frontend.UpstreamAddr(0), fmt.Sprintf("/api/orders/%d", i%50), nil)
			if err != nil || code != http.StatusOK {
				frontendFailed.Add(1)
				t.Errorf("frontend: %d %q %v", code, body, err)
			} else {
				frontendOK.Add(1)
			}
			phase := 2 * math.Pi * time.Since(began).Seconds() / 40
			rate := 5 + 3*math.Sin(phase)
			sleepCtx(ctx, time.Duration(float64(time.Second)/rate))
		}
	}()
	var workerQuarantined atomic.Bool
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			code, body, err := get(worker.UpstreamAddr(0), "/api/stock", nil)
			switch {
			case err == nil && code == http.StatusOK:
				workerOK.Add(1)
			case !workerQuarantined.Load():
				t.Errorf("worker before its quarantine: %d %q %v", code, body, err)
			}
			sleepCtx(ctx, 250*time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		stop()
		wg.Wait()
	})

	// 1. Learning.
	t.Logf("learning the baseline for %v", attackLearning)
	eventually(t, attackLearning+30*time.Second, func() error {
		var snap insights.Snapshot
		if err := getJSON("http://"+admin+"/api/v1/baseline", &snap); err != nil {
			return err
		}
		if snap.Learning || snap.LearningEnds.IsZero() {
			return fmt.Errorf("still learning until %v", snap.LearningEnds)
		}
		for _, w := range snap.Workloads {
			if w.Workload == "api" && len(w.Callers) == 2 {
				return nil
			}
		}
		return fmt.Errorf("api's callers not learnt yet: %+v", snap.Workloads)
	})
	if evs := events(t, admin); len(evs) != 0 {
		t.Errorf("events while learning normal traffic: %+v", evs)
	}

	// 2. Recommended policies in AUDIT mode: nothing changes for anyone;
	// api's proxy counts intruder's requests as would_deny.
	policies := t.TempDir()
	out, err := exec.Command(cli, "policy", "recommend", "--controller-admin", admin, "-o", policies).CombinedOutput()
	if err != nil {
		t.Fatalf("rampart policy recommend: %v\n%s", err, out)
	}
	t.Logf("rampart policy recommend:\n%s", out)
	apiPolicy := readPolicy(t, policies, "api")
	for _, want := range []string{"mode: AUDIT", frontend.ID().String(), worker.ID().String(), "/api/stock"} {
		if !strings.Contains(apiPolicy, want) {
			t.Fatalf("recommended policy for api lacks %q:\n%s", want, apiPolicy)
		}
	}
	if strings.Contains(apiPolicy, intruder.ID().String()) {
		t.Fatalf("recommended policy admits intruder, which never called:\n%s", apiPolicy)
	}
	installPolicies(t, m, policies)
	eventually(t, 10*time.Second, func() error {
		code, _, err := get(intruder.UpstreamAddr(0), "/api/stock", nil)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("intruder in AUDIT mode: %d %v", code, err)
		}
		if n := counterSum(scrape(t, apiProxy, "rampart_proxy_authz_audit_mode_total"), `result="would_deny"`); n == 0 {
			return fmt.Errorf("api's proxy counts no would_deny yet")
		}
		return nil
	})
	wouldDeny := counterSum(scrape(t, apiProxy, "rampart_proxy_authz_audit_mode_total"), `result="would_deny"`)
	for range 5 {
		if code, _, err := get(frontend.UpstreamAddr(0), "/api/orders/1", nil); err != nil || code != http.StatusOK {
			t.Fatalf("frontend under AUDIT mode: %d %v", code, err)
		}
	}
	if n := counterSum(scrape(t, apiProxy, "rampart_proxy_authz_audit_mode_total"), `result="would_deny"`); n != wouldDeny {
		t.Errorf("observed traffic counted as would_deny: %v then %v", wouldDeny, n)
	}

	// 3. The same policies enforced: intruder denied, the rest flows.
	if out, err := exec.Command(cli, "policy", "recommend", "--controller-admin", admin, "--enforce", "-o", policies).CombinedOutput(); err != nil {
		t.Fatalf("rampart policy recommend --enforce: %v\n%s", err, out)
	}
	installPolicies(t, m, policies)
	eventually(t, 10*time.Second, func() error {
		if code, _, err := get(intruder.UpstreamAddr(0), "/api/stock", nil); err != nil || code != http.StatusForbidden {
			return fmt.Errorf("intruder under the enforced policy: %d %v, want 403", code, err)
		}
		return nil
	})
	okBefore := frontendOK.Load()
	eventually(t, 10*time.Second, func() error {
		if frontendOK.Load() < okBefore+10 {
			return fmt.Errorf("frontend made %d requests since the policy", frontendOK.Load()-okBefore)
		}
		return nil
	})

	// 4. The attack.
	workerID := worker.ID().String()
	detected := func(d insights.Detection, dst string, since time.Time) insights.Event {
		t.Helper()
		var ev insights.Event
		eventually(t, detectWithin, func() error {
			for _, e := range events(t, admin) {
				if e.Detection == d && e.Source.SPIFFEID == workerID && e.Destination != nil && e.Destination.Workload == dst {
					ev = e
					return nil
				}
			}
			return fmt.Errorf("no %s event from %s to %s yet", d, workerID, dst)
		})
		t.Logf("%s fired %v after its traffic began: %s", d, time.Since(since).Round(100*time.Millisecond), ev.Summary)
		return ev
	}

	// A new edge: worker calls payments.
	attack := time.Now()
	for range 5 {
		if code, _, err := get(worker.UpstreamAddr(1), "/charge", nil); err != nil || code != http.StatusOK {
			t.Fatalf("worker to payments: %d %v", code, err)
		}
	}
	if ev := detected(insights.NewEdge, "payments", attack); ev.Severity != insights.SeverityMedium || ev.Action != insights.ActionAlert {
		t.Errorf("new_edge event: %+v", ev)
	}

	// A burst: worker sends to api at about 25 times its rate.
	attack = time.Now()
	burst, stopBurst := context.WithCancel(ctx)
	var bwg sync.WaitGroup
	for range 8 {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			for burst.Err() == nil {
				get(worker.UpstreamAddr(0), "/api/stock", nil)
				sleepCtx(burst, 80*time.Millisecond)
			}
		}()
	}
	ev := detected(insights.RateSpike, "api", attack)
	stopBurst()
	bwg.Wait()
	if ev.Evidence.Rate <= ev.Evidence.BandHigh || ev.Evidence.BandHigh <= 0 {
		t.Errorf("rate_spike evidence: %+v", ev.Evidence)
	}

	// A scan: worker tries 30 paths of api it never used, which the
	// enforced policy refuses. The response is quarantine.
	attack = time.Now()
	workerQuarantined.Store(true) // from here on, worker's failures are expected
	for i := range 30 {
		get(worker.UpstreamAddr(0), fmt.Sprintf("/admin/%d", i), nil)
	}
	ev = detected(insights.RouteScan, "api", attack)
	if ev.Action != insights.ActionQuarantine || ev.QuarantinedUntil == nil || ev.Evidence.DistinctPaths < 30 {
		t.Errorf("route_scan event: %+v", ev)
	}
	eventually(t, 10*time.Second, func() error {
		if code, _, err := get(worker.UpstreamAddr(0), "/api/stock", nil); err == nil && code == http.StatusOK {
			return fmt.Errorf("worker still reaches api")
		}
		return nil
	})
	t.Logf("worker cut off %v after its scan began", time.Since(attack).Round(100*time.Millisecond))
	out, err = exec.Command(cli, "quarantine", "list", "--state-dir", m.stateDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), workerID) {
		t.Errorf("rampart quarantine list: %v\n%s", err, out)
	}

	// 5. Nothing else was disturbed: frontend keeps going, and no event
	// names it.
	okBefore = frontendOK.Load()
	eventually(t, 10*time.Second, func() error {
		if frontendOK.Load() < okBefore+10 {
			return fmt.Errorf("frontend made %d requests since the quarantine", frontendOK.Load()-okBefore)
		}
		return nil
	})
	stop()
	wg.Wait()
	all := events(t, admin)
	for _, e := range all {
		if e.Source.SPIFFEID == frontend.ID().String() {
			t.Errorf("false positive on frontend's varying load: %+v", e)
		}
	}
	t.Logf("frontend: %d requests, %d failed; worker: %d answered; %d events in all",
		frontendOK.Load(), frontendFailed.Load(), workerOK.Load(), len(all))
	if frontendFailed.Load() != 0 {
		t.Errorf("%d of frontend's requests failed", frontendFailed.Load())
	}
}

// events lists the controller's events of the last hour, newest first.
func events(t *testing.T, admin string) []insights.Event {
	t.Helper()
	var resp struct {
		Events []insights.Event `json:"events"`
	}
	if err := getJSON("http://"+admin+"/api/v1/events?since=1h&limit=1000", &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Events
}

// readPolicy returns the recommended policy file written for a workload.
func readPolicy(t *testing.T, dir, workload string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ns+"."+workload+"-recommended.yaml"))
	if err != nil {
		t.Fatalf("recommended policy for %s: %v", workload, err)
	}
	return string(b)
}

// installPolicies copies the recommended policies into the mesh's config
// directory, as a reviewer who accepts them would.
func installPolicies(t *testing.T, m *mesh, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recommended policies in %s: %v", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m.writeConfig("recommended-"+filepath.Base(f), string(b))
	}
}

// counterSum adds up the values of the metric lines that contain match.
func counterSum(lines []string, match string) float64 {
	var sum float64
	for _, l := range lines {
		if !strings.Contains(l, match) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
