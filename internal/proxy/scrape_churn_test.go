package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampart-mesh/rampart/internal/authz"
)

// TestScrapeDuringConfigChurn: scrapes while configurations are applied
// and requests flow answer every time, with metrics that lint clean and a
// request count that never goes down.
func TestScrapeDuringConfigChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	// The bench path serves no admin endpoint; this test scrapes one.
	adminDone := make(chan error, 1)
	go func() { adminDone <- p.server.admin.Run(t.Context()) }()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var applied atomic.Int64
	wg.Add(2)
	go func() { // churn: the policy flips between two shapes
		defer wg.Done()
		for i := 0; i < 400; i++ {
			select {
			case <-stop:
				return
			default:
			}
			policy := &authz.WorkloadPolicy{Namespace: benchNS, Default: authz.DefaultAllowAuthenticated, TLS: authz.TLSPolicy{Mode: authz.TLSStrict}}
			if i%2 == 1 {
				policy.Policies = []authz.Policy{{Namespace: benchNS, Name: fmt.Sprintf("deny-%d", i%4), Action: authz.ActionDeny, Rules: []authz.Rule{
					{To: []authz.Operation{{Ports: []uint32{p.h1Port}, Paths: []string{"/admin/**"}}}},
				}}}
			}
			if err := p.server.apply(p.withPolicy(fmt.Sprint("churn-", i), policy)); err != nil {
				t.Errorf("apply: %v", err)
				return
			}
			applied.Add(1)
		}
	}()
	go func() { // traffic
		defer wg.Done()
		client := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if res, err := client.Get("http://" + p.httpAddr + "/uri/x"); err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	last := 0.0
	scraper := &http.Client{Timeout: 10 * time.Second}
	for i := range 50 {
		res, err := scraper.Get("http://" + p.server.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatalf("scrape %d: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "rampart_proxy_config_updates_total") {
			t.Fatalf("scrape %d: %s, %d bytes", i, res.Status, len(body))
		}
		problems, err := testutil.GatherAndLint(p.server.metrics.Registry)
		if err != nil {
			t.Fatalf("gather %d: %v", i, err)
		}
		for _, pr := range problems {
			t.Errorf("lint: %s: %s", pr.Metric, pr.Text)
		}
		n := testutil.ToFloat64(p.server.metrics.ConfigUpdates)
		if n < last {
			t.Fatalf("config updates went from %v down to %v", last, n)
		}
		last = n
	}
	if applied.Load() == 0 {
		t.Fatal("no configuration was applied while scraping")
	}
}
