package insights

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzLoadState feeds arbitrary saved states to the decoder of
// FileStore.Load and the engine: nothing panics, and what is restored keeps the bounds.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"baseline":{"version":1,"learningStarted":"2026-03-02T09:00:00Z","learningEnds":"2026-03-02T10:00:00Z","workloads":[{"spiffeId":"spiffe://mesh.test/ns/shop/sa/api","namespace":"shop","workload":"api","digests":["sha256:aa"],"callers":[{"spiffeId":"spiffe://mesh.test/ns/shop/sa/frontend","mtls":true,"requests":5,"rate":{"samples":3,"mean":1,"stdDev":0.5,"max":2},"routes":[{"method":"GET","path":"/a","requests":5}]}]}]},"ledger":[{"hour":"2026-03-02T09:00:00Z","source":{"spiffeId":"x"},"destination":{"workload":"api"},"requests":5}]}`))
	f.Add([]byte(`{"baseline":{"version":1,"learningStarted":"2026-03-02T09:00:00Z","learningEnds":"2026-03-01T10:00:00Z"}}`))
	f.Add([]byte(`{"baseline":{"version":2}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState("state.json", data)
		if err != nil || st == nil {
			return
		}
		clk := newClock()
		e, err := New(Config{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.restore(st); err != nil {
			return
		}
		e.ObserveReport(inbound(api, "api", edge(frontend, "frontend", 10, 1)))
		snap := e.Snapshot()
		if len(snap.Workloads) > MaxWorkloads {
			t.Fatalf("%d workloads", len(snap.Workloads))
		}
		for _, w := range snap.Workloads {
			if len(w.Callers) > MaxCallersPerWorkload || len(w.Digests) > MaxDigests {
				t.Fatalf("bounds exceeded: %d callers, %d digests", len(w.Callers), len(w.Digests))
			}
			for _, c := range w.Callers {
				if len(c.Routes) > MaxRoutesPerCaller {
					t.Fatalf("%d routes", len(c.Routes))
				}
			}
		}
		if _, err := json.Marshal(e.stateLocked(clk.Now())); err != nil {
			t.Fatal(err)
		}
		_ = e.Totals(time.Time{})
	})
}
