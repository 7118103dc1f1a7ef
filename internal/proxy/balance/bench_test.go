package balance

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPick measures a pick and its release without an answer (the
// cost of picking); BenchmarkPickDone a pick and its answer (a request's
// whole cost to the balancer: the estimate and outlier detection
// updated). Both run in parallel on the real clock; compare -cpu 1,2.
func BenchmarkPick(b *testing.B)     { benchmarkPick(b, Abandoned) }
func BenchmarkPickDone(b *testing.B) { benchmarkPick(b, Success) }

func benchmarkPick(b *testing.B, o Outcome) {
	for _, mode := range []Mode{PeakEWMA, RoundRobin} {
		for _, n := range []int{3, 100} {
			b.Run(fmt.Sprintf("%v/%d", mode, n), func(b *testing.B) {
				bal, err := New[string](Config{Mode: mode})
				if err != nil {
					b.Fatal(err)
				}
				keys := make([]string, n)
				for i := range keys {
					keys[i] = fmt.Sprintf("10.0.0.%d:15008", i)
				}
				bal.Update(keys)
				// Every endpoint measured, as in steady state.
				for _, ep := range bal.view.Load().ready {
					ep.inflight.Add(1)
					Handle[string]{b: bal, ep: ep, start: bal.nanotime()}.Done(time.Millisecond, Success)
				}
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						h, ok := bal.Pick()
						if !ok {
							b.Fatal("no endpoint")
						}
						h.Done(time.Millisecond, o)
					}
				})
			})
		}
	}
}
