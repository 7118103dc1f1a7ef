package graph

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestSeries(t *testing.T) {
	g, clk := newGraph(t, Config{})
	// Three intervals of web calling api, 5 s apart, growing.
	for i, n := range []uint64{10, 20, 40} {
		if i > 0 {
			clk.advance(5 * time.Second)
		}
		out, in := webToAPI(n, n/10, 0)
		for _, r := range []Report{out, in} {
			if err := g.Add(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := g.Series(Filter{Window: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "api" || got[1].Name != "web" {
		t.Fatalf("workloads %+v, want api and web", got)
	}
	api, web := got[0], got[1]
	if len(api.Points) != 6 {
		t.Fatalf("%d points over 30s, want 6", len(api.Points))
	}
	for i := 1; i < len(api.Points); i++ {
		if d := api.Points[i].Start.Sub(api.Points[i-1].Start); d != BucketWidth {
			t.Errorf("points %d and %d are %v apart, want %v", i-1, i, d, BucketWidth)
		}
	}
	var served, sent []uint64
	for i := range api.Points {
		served = append(served, api.Points[i].Inbound.Requests)
		sent = append(sent, web.Points[i].Outbound.Requests)
		if api.Points[i].Outbound.Requests != 0 || web.Points[i].Inbound.Requests != 0 {
			t.Errorf("point %d: api sent %d, web served %d; want none", i, api.Points[i].Outbound.Requests, web.Points[i].Inbound.Requests)
		}
	}
	// Each report lands in the bucket of its interval's middle, 2.5 s
	// before it arrived: the three intervals fill the three newest
	// buckets, which the last report completed.
	want := []uint64{0, 0, 0, 10, 20, 40}
	for i := range want {
		if served[i] != want[i] || sent[i] != want[i] {
			t.Fatalf("served %v and sent %v per point, want %v", served, sent, want)
		}
	}
	p := api.Points[5].Inbound
	if p.SuccessRate == nil || *p.SuccessRate != 0.95 || p.MTLSShare == nil || *p.MTLSShare != 1 || p.LatencyMs == nil {
		t.Errorf("newest point: %+v", p)
	}
	if p.RequestsPerSecond != 8 {
		t.Errorf("newest point: %v requests per second, want 40 over 5s", p.RequestsPerSecond)
	}
	if e := api.Points[0].Inbound; e.SuccessRate != nil || e.LatencyMs != nil || e.RequestsPerSecond != 0 {
		t.Errorf("empty point: %+v, want nulls and zeros", e)
	}

	// Above a minute the points are the coarse buckets.
	long, err := g.Series(Filter{Namespace: "shop", Workload: "api", Window: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(long) != 1 || len(long[0].Points) != 10 {
		t.Fatalf("10m series %+v, want api with 10 points", long)
	}
	total := func() (n uint64) {
		long, err := g.Series(Filter{Namespace: "shop", Workload: "api", Window: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range long[0].Points {
			n += p.Inbound.Requests
		}
		return n
	}
	// The minute in progress is not shown until it is complete.
	if n := total(); n != 10 {
		t.Errorf("10m series holds %d requests, want the 10 of the complete minute", n)
	}
	clk.advance(time.Minute)
	if n := total(); n != 70 {
		t.Errorf("a minute later the 10m series holds %d requests, want 70", n)
	}

	// The window moves on: ten minutes later nothing is left.
	clk.advance(MaxWindow)
	if got, _ := g.Series(Filter{}); len(got) != 0 {
		t.Errorf("after %v: %+v, want no workloads", MaxWindow, got)
	}
	if _, err := g.Series(Filter{Window: 7 * time.Second}); !errors.Is(err, ErrInvalid) {
		t.Errorf("window 7s: %v, want ErrInvalid", err)
	}
}

// TestSeriesPerIdentity: as in Workloads, two identities that report the
// same workload name have a series each.
func TestSeriesPerIdentity(t *testing.T) {
	g, c := newGraph(t, Config{})
	c.advance(5 * time.Second)
	for _, r := range []struct {
		inst, sa string
		n        uint64
	}{{"web-1", "web", 100}, {"web-2", "web", 100}, {"fake", "intruder", 7}} {
		mustAdd(t, g, Report{Instance: r.inst, ID: id("shop", r.sa), Namespace: "shop", Workload: "web", Interval: 5 * time.Second,
			Edges: []EdgeReport{{Direction: Inbound, Counts: Counts{Requests: r.n}}}})
	}
	c.advance(5 * time.Second)
	ws, err := g.Series(Filter{Namespace: "shop", Workload: "web", Window: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range ws {
		var n uint64
		for _, p := range w.Points {
			n += p.Inbound.Requests
		}
		got = append(got, fmt.Sprintf("%s/%s %s %d", w.Namespace, w.Name, w.Identity, n))
	}
	want := []string{
		"shop/web spiffe://example.org/ns/shop/sa/intruder 7",
		"shop/web spiffe://example.org/ns/shop/sa/web 200",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
