package insights_test

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// The worked example of docs/insights.md ("Learning the baseline"): the
// engine learns for ten minutes that the frontend calls the api, then
// sees an identity it never saw call the api, and deny it 25 times.
func Example() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e, err := insights.New(insights.Config{
		Now:     func() time.Time { return now },
		Policy:  insights.Policy{LearningPeriod: 10 * time.Minute},
		OnEvent: func(ev insights.Event) { fmt.Printf("%s %s: %s\n", ev.Severity, ev.Detection, ev.Summary) },
	})
	if err != nil {
		panic(err)
	}
	api := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/api")
	frontend := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/frontend")
	intruder := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/intruder")
	report := func(from spiffeid.ID, name string, requests, denied uint64) graph.Report {
		return graph.Report{Instance: "api-0", ID: api, Namespace: "shop", Workload: "api", Interval: 5 * time.Second,
			Edges: []graph.EdgeReport{{Direction: graph.Inbound, PeerID: from, PeerWorkload: name, MTLS: true, Service: "shop/api",
				Counts: graph.Counts{Requests: requests, Denied: denied},
				Routes: []graph.RouteCount{{Method: "GET", Path: "/items", StatusClass: 2, Count: requests - denied}, {Method: "GET", Path: "/items", StatusClass: 4, Count: denied}}}}}
	}
	for i := 0; i < 12*10; i++ { // ten minutes of reports, every 5 s
		e.ObserveReport(report(frontend, "frontend", 50, 0))
		now = now.Add(5 * time.Second)
	}
	e.ObserveReport(report(intruder, "intruder", 25, 25))

	c := e.Snapshot().Workloads[0].Callers[0]
	fmt.Printf("learnt: %s calls shop/api at %.1f req/s (max %.1f), routes %s %s\n", c.SPIFFEID, c.Rate.Mean, c.Rate.Max, c.Routes[0].Method, c.Routes[0].Path)
	// Output:
	// high denial_burst: denial burst: 25 requests of spiffe://example.org/ns/shop/sa/intruder denied within 30s (threshold 20)
	// medium new_edge: new edge: spiffe://example.org/ns/shop/sa/intruder called shop/api, not seen while learning (25 requests, 25 denied)
	// learnt: spiffe://example.org/ns/shop/sa/frontend calls shop/api at 10.0 req/s (max 10.0), routes GET /items
}
