//go:build linux

package netns

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Service addresses (virtual IPs) of the test mesh. Nothing listens on
// them: the client pod's proxy recognises them.
const (
	webVIP     = "10.96.0.10"
	interopVIP = "10.96.0.20"
	redisVIP   = "10.96.0.30"
	webPort    = 8080
)

const services = `
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  addresses: [` + webVIP + `]
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: interop}
spec:
  selector: {app: interop}
  addresses: [` + interopVIP + `]
  ports:
  - port: 10000
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  addresses: [` + redisVIP + `]
  ports:
  - port: 6379
`

// webApp serves HTTP/1.1 and h2c in a pod and answers with its name, the
// protocol it was spoken to in and the caller identity its proxy vouched
// for.
func webApp(t *testing.T, p *meshPod) {
	t.Helper()
	l, err := p.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", webPort))
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: &protos,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				time.Sleep(300 * time.Millisecond)
			}
			fmt.Fprintf(w, "%s %s %s", p.Name, r.Proto, r.Header.Get("Rampart-Client-Id"))
		}),
	}
	go srv.Serve(l) //nolint:errcheck // ends at Close
	t.Cleanup(func() { srv.Close() })
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

// TestPodsTalkThroughTheMesh runs pods with interception and checks, as an
// app sees it, every way traffic crosses the mesh: HTTP/1.1 and h2c by
// service address and pod IP (detected, balanced, with the caller's
// identity), the gRPC interop suite, Redis as opaque TCP, plaintext from
// outside the mesh refused, egress passed through, a configuration change
// under open connections, and a drain under load.
func TestPodsTalkThroughTheMesh(t *testing.T) {
	c := newCluster(t, "allow-any", map[string]string{"services.yaml": services})
	client := c.addMeshPod("client", "client", "app=client")
	web1 := c.addMeshPod("web-1", "web", "app=web")
	web2 := c.addMeshPod("web-2", "web", "app=web")
	webApp(t, web1)
	webApp(t, web2)
	outsider := c.net.AddPod("outsider") // no proxy, no interception
	clientID := c.id("client").String()

	hc := client.HTTPClient()
	outer := t // owns what later subtests still use
	t.Run("http by service address is balanced and carries the caller's identity", func(t *testing.T) {
		seen := map[string]int{}
		eventually(t, 20*time.Second, func() error {
			body, err := get(hc, "http://"+webVIP+"/")
			if err != nil {
				return err
			}
			f := strings.Fields(body)
			if len(f) != 3 || f[1] != "HTTP/1.1" || f[2] != clientID {
				return fmt.Errorf("answer %q: want <pod> HTTP/1.1 %s", body, clientID)
			}
			seen[f[0]]++
			if seen["web-1"] == 0 || seen["web-2"] == 0 {
				return fmt.Errorf("answers so far by pod: %v", seen)
			}
			return nil
		})
		if got := client.metric("rampart_proxy_protocol_detections_total", `direction="outbound"`, `protocol="http/1.1"`); got == 0 {
			t.Error("no outbound HTTP/1.1 detection counted")
		}
	})

	t.Run("http by pod IP reaches that pod only", func(t *testing.T) {
		for range 5 {
			body, err := get(hc, fmt.Sprintf("http://%s:%d/", web2.IP, webPort))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(body, "web-2 ") || !strings.HasSuffix(body, clientID) {
				t.Fatalf("answer %q: want web-2 with the client's identity", body)
			}
		}
	})

	t.Run("h2c prior knowledge is detected and reaches the app as HTTP/2", func(t *testing.T) {
		h2 := &http.Client{Transport: &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return client.DialContext(ctx, network, addr)
			},
		}}
		body, err := get(h2, "http://"+webVIP+"/")
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(body); len(f) != 3 || f[1] != "HTTP/2.0" || f[2] != clientID {
			t.Fatalf("answer %q: want <pod> HTTP/2.0 %s", body, clientID)
		}
	})

	t.Run("grpc interop suite", func(t *testing.T) {
		serverBin := requireTool(t, "grpc-interop-server")
		clientBin := requireTool(t, "grpc-interop-client")
		interop := c.addMeshPod("interop", "interop", "app=interop")
		interop.Start(t, serverBin, "-port", "10000")
		cases := []string{
			"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong", "empty_stream",
			"cancel_after_begin", "cancel_after_first_response", "timeout_on_sleeping_server",
			"custom_metadata", "status_code_and_message", "special_status_message", "unimplemented_method",
		}
		// The server may still be starting.
		eventually(t, 20*time.Second, func() error {
			return runIn(client, clientBin, "-server_host", interopVIP, "-server_port", "10000", "-test_case", "empty_unary")
		})
		for _, tc := range cases {
			if err := runIn(client, clientBin, "-server_host", interopVIP, "-server_port", "10000", "-test_case", tc); err != nil {
				t.Errorf("%s: %v", tc, err)
			}
		}
	})

	t.Run("redis as opaque TCP", func(t *testing.T) {
		server := requireTool(t, "redis-server")
		cli := requireTool(t, "redis-cli")
		redis := c.addMeshPod("redis", "redis", "app=redis")
		redis.Start(outer, server, "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no")
		eventually(t, 20*time.Second, func() error {
			return runIn(client, cli, "-h", redisVIP, "-p", "6379", "SET", "rampart", "opaque")
		})
		out, err := client.Command(context.Background(), cli, "-h", redis.IP.String(), "-p", "6379", "GET", "rampart").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "opaque" {
			t.Fatalf("GET through the pod IP: %v: %q", err, out)
		}
		if got := client.metric("rampart_proxy_tcp_connections_total", `direction="outbound"`, `dst_service="redis.default"`); got < 2 {
			t.Errorf("outbound TCP connections to redis = %v, want at least 2", got)
		}
	})

	t.Run("plaintext from outside the mesh is refused", func(t *testing.T) {
		conn, err := outsider.DialContext(context.Background(), "tcp", fmt.Sprintf("%s:%d", web1.IP, webPort))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(make([]byte, 64))
		var ne net.Error
		if err == nil || n > 0 || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("plaintext request to a strict workload got %d bytes, err %v: want the connection closed", n, err)
		}
		eventually(t, 5*time.Second, func() error {
			if got := web1.metric("rampart_proxy_plaintext_connections_total", `protocol="http/1.1"`, `action="refused"`); got == 0 {
				return fmt.Errorf("refused plaintext HTTP not counted")
			}
			return nil
		})
	})

	t.Run("egress outside the mesh passes through", func(t *testing.T) {
		l, err := outsider.Listen("tcp", "0.0.0.0:9999")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "outside %s", r.Header.Get("Rampart-Client-Id"))
		})}
		go srv.Serve(l) //nolint:errcheck // ends at Close
		defer srv.Close()
		body, err := get(hc, fmt.Sprintf("http://%s:9999/", outsider.IP))
		if err != nil {
			t.Fatal(err)
		}
		if body != "outside " {
			t.Fatalf("answer %q: the destination outside the mesh must see no mesh identity", body)
		}
		if got := client.metric("rampart_proxy_egress_connections_total", `action="allowed"`); got == 0 {
			t.Error("passthrough not counted")
		}
	})

	t.Run("configuration changes keep open connections", func(t *testing.T) {
		redisConn, err := client.DialContext(context.Background(), "tcp", redisVIP+":6379")
		if err != nil {
			t.Fatal(err)
		}
		defer redisConn.Close()
		rd := bufio.NewReader(redisConn)
		ping := func() error {
			redisConn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(redisConn, "PING\r\n"); err != nil {
				return err
			}
			line, err := rd.ReadString('\n')
			if err != nil || line != "+PONG\r\n" {
				return fmt.Errorf("PING: %q, %v", line, err)
			}
			return nil
		}
		if err := ping(); err != nil {
			t.Fatal(err)
		}
		var reused atomic.Bool
		keepAlive := func() error {
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				GotConn: func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
			})
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+webVIP+"/", nil)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		if err := keepAlive(); err != nil {
			t.Fatal(err)
		}
		before := client.metric("rampart_proxy_config_updates_total")
		c.writeConfig("extra.yaml", strings.ReplaceAll(strings.ReplaceAll(services[:strings.Index(services, "---")], "name: web", "name: web-canary"), webVIP, "10.96.0.11"))
		eventually(t, 10*time.Second, func() error {
			if got := client.metric("rampart_proxy_config_updates_total"); got <= before {
				return fmt.Errorf("config updates %v, want more than %v", got, before)
			}
			return nil
		})
		if err := ping(); err != nil {
			t.Fatalf("open Redis connection after the update: %v", err)
		}
		if err := keepAlive(); err != nil {
			t.Fatalf("keep-alive request after the update: %v", err)
		}
		if !reused.Load() {
			t.Error("the keep-alive connection was not reused across the update")
		}
		// The new service works at once through its own address.
		eventually(t, 10*time.Second, func() error {
			_, err := get(hc, "http://10.96.0.11/")
			return err
		})
	})

	t.Run("draining a pod under load fails no request", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var (
			wg       sync.WaitGroup
			ok, fail atomic.Int64
			firstErr atomic.Value
		)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if _, err := get(hc, "http://"+webVIP+"/slow"); err != nil {
						if ctx.Err() == nil {
							fail.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						}
						continue
					}
					ok.Add(1)
				}
			}()
		}
		time.Sleep(time.Second)
		go web2.proxy.Stop() // SIGTERM: drain
		// Readiness turns false first, while the proxy still serves.
		sawNotReady := false
		for !sawNotReady {
			select {
			case <-web2.proxy.Done():
				t.Fatal("the draining proxy exited before reporting not ready")
			default:
			}
			_, err := web2.admin("/ready")
			sawNotReady = err != nil && strings.Contains(err.Error(), "503")
		}
		select {
		case <-web2.proxy.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("draining proxy did not exit")
		}
		time.Sleep(time.Second)
		cancel()
		wg.Wait()
		if fail.Load() > 0 {
			t.Errorf("%d of %d requests failed while web-2 drained; first: %v", fail.Load(), ok.Load()+fail.Load(), firstErr.Load())
		}
		if err := web2.proxy.Wait(); err != nil {
			t.Errorf("draining proxy exited with %v", err)
		}
		for range 5 {
			body, err := get(hc, "http://"+webVIP+"/")
			if err != nil || !strings.HasPrefix(body, "web-1 ") {
				t.Fatalf("after the drain: %q, %v: want web-1", body, err)
			}
		}
		t.Logf("%d requests while draining, none failed", ok.Load())
	})
}

// runIn runs a command in a pod (as the app, so its traffic is
// intercepted) and returns an error with the end of its output when it
// fails.
func runIn(p *meshPod, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := p.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// TestEgressMeshOnly checks the locked-down egress mode: a pod's
// connection to a destination outside the mesh is refused and counted,
// while the destination itself stays reachable from outside the mesh.
func TestEgressMeshOnly(t *testing.T) {
	c := newCluster(t, "mesh-only", map[string]string{"services.yaml": services})
	client := c.addMeshPod("client", "client", "app=client")
	outsider := c.net.AddPod("outsider")
	l, err := outsider.Listen("tcp", "0.0.0.0:9999")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "outside") })}
	go srv.Serve(l) //nolint:errcheck // ends at Close
	defer srv.Close()
	url := fmt.Sprintf("http://%s:9999/", outsider.IP)

	// Reachable without the mesh in the way...
	if _, err := get(c.net.AddPod("bystander").HTTPClient(), url); err != nil {
		t.Fatalf("the destination is unreachable even without the mesh: %v", err)
	}
	// ...and refused from a mesh pod.
	if body, err := get(client.HTTPClient(), url); err == nil {
		t.Fatalf("egress to %s in mesh-only mode answered %q: want it refused", url, body)
	}
	if got := client.metric("rampart_proxy_egress_connections_total", `action="refused"`); got == 0 {
		t.Error("refused egress not counted")
	}
}
