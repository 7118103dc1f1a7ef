package logsample

import (
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	var b Bucket
	now := time.Unix(1000, 0)
	for i := range Burst {
		if ok, s := b.Allow(now); !ok || s != 0 {
			t.Fatalf("event %d of the burst: %v, %d", i, ok, s)
		}
	}
	for range 7 {
		if ok, _ := b.Allow(now); ok {
			t.Fatal("let an event through beyond the burst")
		}
	}
	// A tenth of a second refills one token.
	now = now.Add(time.Second / Rate)
	if ok, s := b.Allow(now); !ok || s != 7 {
		t.Fatalf("after a refill: %v, suppressed %d, want true, 7", ok, s)
	}
	if ok, _ := b.Allow(now); ok {
		t.Fatal("two events through on one token")
	}
	// A long pause refills the burst, no more.
	now = now.Add(time.Hour)
	n := 0
	for {
		ok, _ := b.Allow(now)
		if !ok {
			break
		}
		n++
	}
	if n != Burst {
		t.Fatalf("%d events through after a pause, want %d", n, Burst)
	}
	// A clock that goes back refills nothing.
	if ok, _ := b.Allow(now.Add(-time.Minute)); ok {
		t.Fatal("a clock going back refilled the bucket")
	}
}

func TestBucketConcurrent(t *testing.T) {
	var b Bucket
	now := time.Unix(1000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	through := 0
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if ok, _ := b.Allow(now); ok {
					mu.Lock()
					through++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if through != Burst {
		t.Fatalf("%d events through, want %d", through, Burst)
	}
}

// TestDependencies keeps the package on the standard library.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/rampart-mesh/rampart/internal/proxy/logsample" {
			t.Errorf("depends on %s", dep)
		}
	}
}
