package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/rampart-mesh/rampart/internal/controller"
)

// adminOn gives the controller an admin listener on a free loopback port.
func adminOn(c *controller.Config) { c.AdminListen = "127.0.0.1:0" }

// TestMetricsPassPromtool scrapes every proxy's and the controller's
// /metrics after HTTP, gRPC, TCP and refused traffic, and has promtool
// check each: names, types, help, units and suffixes as Prometheus expects.
func TestMetricsPassPromtool(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	promtool := findTool(t, "promtool")
	a := startApps(t)
	m := newMesh(t, time.Hour, servicesYAML(a), adminOn)
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web", "echo", "lines", "empty"}}, true)

	// HTTP.
	eventually(t, 5*time.Second, func() error {
		code, body, err := get(client.UpstreamAddr(0), "/orders/7", nil)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("GET: %d %q %v", code, body, err)
		}
		return nil
	})
	// gRPC, to a service with endpoints and to one without.
	for i, want := range []bool{true, false} {
		conn, err := grpc.NewClient(client.UpstreamAddr([]int{1, 3}[i]), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = testgrpc.NewTestServiceClient(conn).EmptyCall(ctx, &testgrpc.Empty{})
		cancel()
		conn.Close()
		if ok := err == nil || !strings.Contains(err.Error(), "no endpoints"); ok != want {
			t.Fatalf("gRPC call %d: %v", i, err)
		}
	}
	// Opaque TCP.
	c, err := net.DialTimeout("tcp", client.UpstreamAddr(2), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	c.Close()

	for _, tc := range []struct {
		name, addr string
		// want are series that must be there, so that their names and
		// labels are checked too.
		want []string
	}{
		{"controller", m.ctrl.AdminAddr(), []string{"rampart_controller_certify_total{"}},
		{"server", server.AdminAddr(), []string{"rampart_proxy_requests_total{", "rampart_proxy_tcp_bytes_total{"}},
		{"client", client.AdminAddr(), []string{"rampart_proxy_requests_total{", "rampart_proxy_request_duration_seconds_bucket{", "rampart_proxy_tcp_connections_total{"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := scrapeAll(t, tc.addr)
			for _, w := range tc.want {
				if !bytes.Contains(body, []byte(w)) {
					t.Fatalf("%s's /metrics has no %s series", tc.name, w)
				}
			}
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = bytes.NewReader(body)
			out, err := cmd.CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Fatalf("promtool check metrics on %s's /metrics: %v\n%s", tc.name, err, out)
			}
		})
	}
}

// scrapeAll returns a /metrics page.
func scrapeAll(t *testing.T, addr string) []byte {
	t.Helper()
	if addr == "" {
		t.Fatal("no admin address")
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return b
}
