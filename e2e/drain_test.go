package e2e

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestDrainKeepsOutboundWhileInboundDrains: a request in flight when its
// workload's proxy starts draining may still call other services through
// that proxy, and completes.
func TestDrainKeepsOutboundWhileInboundDrains(t *testing.T) {
	// backend answers; web sleeps, then calls backend through its own
	// proxy's upstream listener, set once that proxy exists.
	backendL := listen(t)
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "from backend")
	})}
	go backend.Serve(backendL)
	t.Cleanup(func() { backend.Close() })

	var upstream atomic.Value // the web proxy's upstream address for backend
	started := make(chan struct{}, 1)
	webL := listen(t)
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		started <- struct{}{}
		time.Sleep(700 * time.Millisecond) // the proxy starts draining meanwhile
		code, body, err := get(upstream.Load().(string), "/", nil)
		if err != nil || code != http.StatusOK {
			http.Error(w, fmt.Sprintf("backend call during drain: %d %v", code, err), http.StatusBadGateway)
			return
		}
		io.WriteString(w, "web got "+body)
	})}
	go web.Serve(webL)
	t.Cleanup(func() { web.Close() })

	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: %[2]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: %[1]s}
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: %[3]d, protocol: HTTP}]
`, ns, port(webL), port(backendL)))
	m.startProxy(proxyOpts{name: "backend", labels: map[string]string{"app": "backend"}}, true)
	webProxy := m.startProxy(proxyOpts{name: "web", labels: map[string]string{"app": "web"}, upstreams: []string{"backend"}}, true)
	upstream.Store(webProxy.UpstreamAddr(0))
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
	eventually(t, 10*time.Second, func() error {
		code, _, err := get(webProxy.UpstreamAddr(0), "/", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("backend through web's proxy: %d", code)
		}
		return err
	})

	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, body, err := get(client.UpstreamAddr(0), "/", nil)
		done <- result{code, body, err}
	}()
	<-started
	webProxy.cancel() // SIGTERM: web's proxy drains
	r := <-done
	if r.err != nil || r.code != http.StatusOK || r.body != "web got from backend" {
		t.Fatalf("request in flight across the drain: %d %q %v; want 200 %q", r.code, r.body, r.err, "web got from backend")
	}
	if err := <-webProxy.done; err != nil {
		t.Errorf("drained proxy: %v", err)
	}
	webProxy.done <- nil // for the cleanup
}
