package e2e

// HTTPRoutes end to end: a client proxy calls web, whose route splits its
// requests between web-blue and web-green, each a server proxy in front
// of its own app; the test rewrites the route in the controller's config
// directory while the client sends requests.

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// blueGreenYAML is web and its two versions: each app answers its color.
func blueGreenYAML(bluePort, greenPort int) string {
	return fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: %[2]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web-blue, namespace: %[1]s}
spec:
  selector: {app: web, version: blue}
  ports: [{name: http, port: 80, targetPort: %[2]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web-green, namespace: %[1]s}
spec:
  selector: {app: web, version: green}
  ports: [{name: http, port: 80, targetPort: %[3]d, protocol: HTTP}]
`, ns, bluePort, greenPort)
}

// webRoute splits web's requests between blue and green by weight.
func webRoute(blue, green int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs:
    - {name: web-blue, port: 80, weight: %d}
    - {name: web-green, port: 80, weight: %d}
`, ns, blue, green)
}

// colorApp starts an app answering its color, and returns its port.
func colorApp(t *testing.T, color string) int {
	t.Helper()
	l := listen(t)
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, color)
	})}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return port(l)
}

// answer is one request of the load: when it was sent, and who answered.
type answer struct {
	sent  time.Time
	color string // or the error
	ok    bool
}

func TestRoutesBlueGreenFlipUnderLoad(t *testing.T) {
	bluePort, greenPort := colorApp(t, "blue"), colorApp(t, "green")
	m := newMesh(t, time.Hour, blueGreenYAML(bluePort, greenPort))
	m.writeConfig("route.yaml", webRoute(100, 0))
	m.startProxy(proxyOpts{name: "blue", labels: map[string]string{"app": "web", "version": "blue"}}, true)
	m.startProxy(proxyOpts{name: "green", labels: map[string]string{"app": "web", "version": "green"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
	addr := client.UpstreamAddr(0)
	eventually(t, 10*time.Second, func() error {
		code, body, err := get(addr, "/", nil)
		if err != nil || code != http.StatusOK || body != "blue" {
			return fmt.Errorf("%d %q %v, want blue", code, body, err)
		}
		return nil
	})

	// Steady load: 8 clients, each sending a request every 20 ms or so
	// (about 300 requests a second in all), until stopped.
	var (
		mu      sync.Mutex
		answers []answer
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
			defer c.CloseIdleConnections()
			for !stop.Load() {
				a := answer{sent: time.Now()}
				res, err := c.Get("http://" + addr + "/")
				if err != nil {
					a.color = err.Error()
				} else {
					b, err := io.ReadAll(res.Body)
					res.Body.Close()
					a.color, a.ok = string(b), err == nil && res.StatusCode == http.StatusOK
					if !a.ok {
						a.color = fmt.Sprintf("%d %q %v", res.StatusCode, b, err)
					}
				}
				mu.Lock()
				answers = append(answers, a)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	snapshot := func() []answer {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(answers)
	}

	time.Sleep(time.Second)
	flip := time.Now()
	m.writeConfig("route.yaml", webRoute(0, 100))
	// After the flip, every request is answered by green, within a few
	// seconds: until then, wait for a second's worth of requests sent
	// after the last blue answer.
	eventually(t, 15*time.Second, func() error {
		answers := snapshot()
		lastBlue := flip
		for _, a := range answers {
			if a.color == "blue" && a.sent.After(lastBlue) {
				lastBlue = a.sent
			}
		}
		after := 0
		for _, a := range answers {
			if a.sent.After(lastBlue.Add(time.Second)) {
				after++
			}
		}
		if after < 100 {
			return fmt.Errorf("%d requests sent a second after the last blue answer, want 100", after)
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()

	all := snapshot()
	var (
		failed             []answer
		blue, green        int
		firstGreen, lastBl time.Time
	)
	for _, a := range all {
		switch {
		case !a.ok:
			failed = append(failed, a)
		case a.color == "blue":
			blue++
			if a.sent.After(lastBl) {
				lastBl = a.sent
			}
		case a.color == "green":
			green++
			if firstGreen.IsZero() || a.sent.Before(firstGreen) {
				firstGreen = a.sent
			}
		}
	}
	elapsed := all[len(all)-1].sent.Sub(all[0].sent)
	t.Logf("%d requests in %v (%.0f/s): %d blue, %d green, %d failed; after the route was rewritten, the first green answer was to a request sent %v later, the last blue to one sent %v later",
		len(all), elapsed.Round(time.Millisecond), float64(len(all))/elapsed.Seconds(), blue, green, len(failed),
		firstGreen.Sub(flip).Round(time.Millisecond), lastBl.Sub(flip).Round(time.Millisecond))
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed; the first: %q", len(failed), len(all), failed[0].color)
	}
	if blue == 0 || green == 0 {
		t.Fatalf("%d blue and %d green answers: the load did not span the flip", blue, green)
	}
}
