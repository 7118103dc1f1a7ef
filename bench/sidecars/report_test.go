package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummarizeAndRatios(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	res := newResults(o)
	res.Machine = machine{CPUs: 2, GoVersion: "go1.26", Kernel: "6.1"}
	round := func(rps, p50, p99, clientCPU, serverCPU float64, clientRSS, serverRSS uint64) roundResult {
		return roundResult{
			Saturation: wrkResult{Requests: int64(rps * 10), RPS: rps},
			FixedRate:  fortioResult{Requests: 9990, Warmup: 10, P50Ms: p50, P99Ms: p99},
			Proxies: []proxyRound{
				{Role: "client", CPUSeconds: clientCPU, SaturationCPUSeconds: clientCPU * 10, RSSBytes: clientRSS},
				{Role: "server", CPUSeconds: serverCPU, SaturationCPUSeconds: serverCPU * 10, RSSBytes: serverRSS},
			},
		}
	}
	pair := []side{{role: "client"}, {role: "server"}}
	direct := summarize(&target{name: targetDirect}, []roundResult{{Saturation: wrkResult{RPS: 80000}, FixedRate: fortioResult{Requests: 10000, P50Ms: 0.1, P99Ms: 0.4}}})
	nginx := summarize(&target{name: targetNginx, sides: pair}, []roundResult{
		round(20000, 0.4, 2.0, 0.5, 0.5, 17<<20, 16<<20),
		round(22000, 0.5, 2.2, 0.6, 0.4, 18<<20, 16<<20),
		round(24000, 0.3, 1.8, 0.4, 0.6, 17<<20, 15<<20),
	})
	rampart := summarize(&target{name: targetRampart, sides: pair}, []roundResult{
		round(5000, 2.0, 8.0, 2.0, 2.0, 22<<20, 24<<20),
		round(4000, 2.0, 8.0, 2.0, 2.0, 22<<20, 24<<20),
		round(6000, 2.0, 8.0, 2.0, 2.0, 22<<20, 24<<20),
	})
	if nginx.RPS != 22000 || nginx.P50Ms != 0.4 || nginx.P99Ms != 2.0 {
		t.Errorf("nginx medians: rps %v p50 %v p99 %v, want 22000 0.4 2.0", nginx.RPS, nginx.P50Ms, nginx.P99Ms)
	}
	// Medians per side: client 0.5 s, server 0.5 s over 10000 requests.
	if *nginx.CPUSPer1k != 0.1 || *nginx.RSSMB != 17 {
		t.Errorf("nginx cpu %v s/1k, rss %v MB, want 0.1 and 17 (the larger side)", *nginx.CPUSPer1k, *nginx.RSSMB)
	}
	if direct.CPUSPer1k != nil || direct.RSSMB != nil {
		t.Error("direct has proxy CPU or memory")
	}
	res.Targets = []targetResult{direct, rampart, nginx}
	res.finish()
	want := ratios{RPS: 0.23, P50: 5, P99: 4, CPUPer1k: ptr(4.0), RSS: ptr(1.41)}
	if diff := cmp.Diff(want, res.RatiosToNginx[targetRampart]); diff != "" {
		t.Errorf("rampart vs nginx (-want +got):\n%s", diff)
	}
	if r := res.RatiosToNginx[targetDirect]; r.CPUPer1k != nil || r.RPS != 3.64 {
		t.Errorf("direct vs nginx = %+v, want rps 3.64 and no CPU ratio", r)
	}
	md := res.markdown()
	for _, row := range []string{
		"| direct | 80,000 | 0.100 | 0.400 | – | – | 3.64x | 0.20x | – | – |",
		"| rampart | 5,000 | 2.000 | 8.000 | 0.4000 | 24.0 | 0.23x | 4.00x | 4.00x | 1.41x |",
		"| nginx | 22,000 | 0.400 | 2.000 | 0.1000 | 17.0 | 1.00x | 1.00x | 1.00x | 1.00x |",
	} {
		if !strings.Contains(md, row) {
			t.Errorf("markdown lacks %q:\n%s", row, md)
		}
	}
	if len(res.Notes) == 0 || res.Settings.Duration != (10*time.Second).String() {
		t.Errorf("notes %d, settings %+v", len(res.Notes), res.Settings)
	}
}

func ptr(v float64) *float64 { return &v }
