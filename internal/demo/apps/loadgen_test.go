package apps

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoadgen(t *testing.T) {
	tests := []struct {
		name        string
		handler     http.HandlerFunc // nil: nothing listens
		maxInFlight int
		check       func(t *testing.T, s LoadgenStats, served int64)
	}{
		{
			name:    "all answered",
			handler: func(http.ResponseWriter, *http.Request) {},
			check: func(t *testing.T, s LoadgenStats, served int64) {
				if s.OK < 6 || s.Failed != 0 || int64(s.OK) > served {
					t.Errorf("stats %+v with %d served: want OK ≥ 6, no failure", s, served)
				}
			},
		},
		{
			name: "errors counted",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "no", http.StatusBadGateway)
			},
			check: func(t *testing.T, s LoadgenStats, _ int64) {
				if s.OK != 0 || s.Failed < 6 {
					t.Errorf("stats %+v: want only failures", s)
				}
			},
		},
		{
			name: "target down",
			check: func(t *testing.T, s LoadgenStats, _ int64) {
				if s.OK != 0 || s.Failed < 6 {
					t.Errorf("stats %+v: want only failures", s)
				}
			},
		},
		{
			name: "slow target: ticks skipped, not piled up",
			handler: func(_ http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			},
			maxInFlight: 1,
			check: func(t *testing.T, s LoadgenStats, _ int64) {
				if s.Sent != 1 || s.Skipped < 6 {
					t.Errorf("stats %+v: want 1 sent, ticks skipped", s)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var served atomic.Int64
			var url string
			if tt.handler != nil {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					served.Add(1)
					tt.handler(w, r)
				}))
				defer srv.Close()
				url = srv.URL
			} else {
				srv := httptest.NewServer(http.NotFoundHandler())
				url = srv.URL
				srv.Close()
			}
			g := NewLoadgen(LoadgenConfig{Target: url, Rate: 100, MaxInFlight: tt.maxInFlight, ReportEvery: 50 * time.Millisecond})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- g.Run(ctx) }()
			// Wait for enough ticks rather than for a fixed time: the
			// machine may be busy.
			deadline := time.Now().Add(20 * time.Second)
			for s := g.Stats(); s.OK+s.Failed < 6 && s.Skipped < 6 && time.Now().Before(deadline); s = g.Stats() {
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5s of cancellation")
			}
			tt.check(t, g.Stats(), served.Load())
		})
	}
}
