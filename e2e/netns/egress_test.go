package netns

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/podnet"
)

// partnerHost is the external name the allow-list admits; the proxy
// resolves it from its --egress-hosts-file.
const partnerHost = "api.partner.example"

// TestEgressAllowListed runs the controller with --egress allow-listed and
// a meshed client whose EgressPolicies admit one external pod by network
// (port 9999) and, by name, partnerHost on ports 9998 and 9443. The client
// reaches the admitted destinations (by address; by HTTP Host and TLS
// server name, the address pinned to the name's) and is refused the
// others: another pod's address, and a forged Host or TLS server name sent
// to that pod. Every decision is counted by destination.
func TestEgressAllowListed(t *testing.T) {
	c := newCluster(t, "allow-listed", map[string]string{"services.yaml": services})
	allowed := c.net.AddPod("partner")
	denied := c.net.AddPod("stranger")
	for _, pod := range []*podnet.Pod{allowed, denied} {
		for _, port := range []string{"9999", "9998"} {
			serveHTTP(t, pod, port)
		}
	}
	serveTLS(t, allowed, "9443")
	serveTLS(t, denied, "9443")

	c.writeConfig("egress.yaml", fmt.Sprintf(`
apiVersion: rampart.dev/v1alpha1
kind: EgressPolicy
metadata: {name: partner-network}
spec:
  selector: {matchLabels: {app: client}}
  cidrs: [%s]
  ports: [9999]
---
apiVersion: rampart.dev/v1alpha1
kind: EgressPolicy
metadata: {name: partner-api}
spec:
  selector: {matchLabels: {app: client}}
  hosts: [%s]
  ports: [9998, 9443]
`, allowed.IP, partnerHost))
	hosts := filepath.Join(c.dir, "egress-hosts")
	if err := os.WriteFile(hosts, fmt.Appendf(nil, "%s %s\n", allowed.IP, partnerHost), 0o644); err != nil {
		t.Fatal(err)
	}
	client := addEgressPod(c, "client", "client", "app=client", hosts)
	hc := client.HTTPClient()

	// The policies reach the proxy with the configuration.
	eventually(t, 20*time.Second, func() error {
		cfg, err := client.admin("/config")
		if err != nil {
			return err
		}
		if !strings.Contains(cfg, partnerHost) {
			return fmt.Errorf("egress allow-list not in the proxy's configuration yet")
		}
		return nil
	})

	allowedNet := allowed.IP.String() + "/32"
	t.Run("admitted by network", func(t *testing.T) {
		body, err := get(hc, fmt.Sprintf("http://%s:9999/", allowed.IP))
		if err != nil || body != "partner:9999" {
			t.Fatalf("answer %q, %v", body, err)
		}
		if got := client.metric("rampart_proxy_egress_connections_total", `destination="`+allowedNet+`"`, `action="allowed"`); got == 0 {
			t.Error("not counted under the network that admitted it")
		}
		// Bytes are counted when the connection ends.
		hc.CloseIdleConnections()
		eventually(t, 10*time.Second, func() error {
			if got := client.metric("rampart_proxy_egress_bytes_total", `destination="`+allowedNet+`"`, `direction="received"`); got == 0 {
				return fmt.Errorf("bytes received not counted")
			}
			return nil
		})
	})
	t.Run("another address is refused", func(t *testing.T) {
		if body, err := get(hc, fmt.Sprintf("http://%s:9999/", denied.IP)); err == nil {
			t.Fatalf("answer %q, want the connection refused", body)
		}
		if got := client.metric("rampart_proxy_egress_connections_total", `destination="`+denied.IP.String()+`"`, `action="refused"`); got == 0 {
			t.Error("refusal not counted under the address")
		}
	})
	t.Run("admitted by HTTP host", func(t *testing.T) {
		code, body := getHost(t, hc, allowed.IP.String(), partnerHost)
		if code != http.StatusOK || body != "partner:9998" {
			t.Fatalf("answer %d %q", code, body)
		}
		if got := client.metric("rampart_proxy_egress_connections_total", `destination="`+partnerHost+`"`, `action="allowed"`); got == 0 {
			t.Error("not counted under the host pattern")
		}
	})
	t.Run("a forged host is refused", func(t *testing.T) {
		// The name is admitted, but it does not resolve to this address.
		code, body := getHost(t, hc, denied.IP.String(), partnerHost)
		if code != http.StatusForbidden {
			t.Fatalf("answer %d %q, want 403", code, body)
		}
		if got := client.metric("rampart_proxy_egress_connections_total", `destination="`+partnerHost+`"`, `action="refused"`); got == 0 {
			t.Error("refusal not counted under the name")
		}
	})
	t.Run("admitted by TLS server name", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			ok   bool
		}{{partnerHost, true}, {"other.partner.example", false}} {
			body, err := getTLS(client.Pod, allowed.IP.String()+":9443", tt.name)
			if tt.ok && (err != nil || body != "tls:"+tt.name) {
				t.Errorf("%s: answer %q, %v", tt.name, body, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("%s: answered %q, want refused", tt.name, body)
			}
		}
		if got := client.metric("rampart_proxy_egress_connections_total", `destination="other.partner.example"`, `action="refused"`); got == 0 {
			t.Error("refused server name not counted")
		}
	})
	t.Run("an admitted server name sent to another address is refused", func(t *testing.T) {
		// The name is admitted, but it does not resolve to this address:
		// the handshake never reaches the other pod's server.
		before := client.metric("rampart_proxy_egress_connections_total", `destination="`+partnerHost+`"`, `action="refused"`)
		if body, err := getTLS(client.Pod, denied.IP.String()+":9443", partnerHost); err == nil {
			t.Fatalf("answered %q, want refused", body)
		}
		if got := client.metric("rampart_proxy_egress_connections_total", `destination="`+partnerHost+`"`, `action="refused"`); got < before+1 {
			t.Errorf("refusals counted under the name went %v -> %v, want one more", before, got)
		}
	})
	if got := client.metric("rampart_proxy_refusals_total", `reason="egress_denied"`); got < 4 {
		t.Errorf("egress refusals counted %v, want at least 4", got)
	}
}

// addEgressPod is addMeshPod with the proxy's --egress-hosts-file.
func addEgressPod(c *cluster, name, sa, labels, hostsFile string) *meshPod {
	t := c.t
	t.Helper()
	p := &meshPod{Pod: c.net.AddPod(name), c: c, sa: sa}
	out, err := p.Command(context.Background(), c.proxyBin, "iptables", "--proxy-uid", strconv.Itoa(proxyUID)).CombinedOutput()
	if err != nil {
		t.Fatalf("rampart-proxy iptables in pod %s: %v\n%s", name, err, out)
	}
	cred := &syscall.Credential{Uid: proxyUID, Gid: proxyUID}
	p.proxy = p.StartAs(t, cred, c.proxyBin,
		"--controller", fmt.Sprintf("%s:%d", c.ctl.IP, ctlPort),
		"--trust-bundle", filepath.Join(c.dir, "bundle.pem"),
		"--join-token", c.token(p.sa),
		"--namespace", namespace, "--service-account", p.sa, "--workload", p.Name, "--labels", labels,
		"--tunnel-listen", fmt.Sprintf("0.0.0.0:%d", tunnelPort),
		"--advertise", fmt.Sprintf("%s:%d", p.IP, tunnelPort),
		"--admin-listen", fmt.Sprintf("127.0.0.1:%d", adminPort),
		"--outbound-listen", fmt.Sprintf("127.0.0.1:%d", outboundPort),
		"--egress-hosts-file", hostsFile,
		"--drain-timeout", "2s",
		"--log-level", "debug")
	eventually(t, 20*time.Second, func() error {
		select {
		case <-p.proxy.Done():
			t.Fatalf("proxy of pod %s exited: %v", p.Name, p.proxy.Wait())
		default:
		}
		body, err := p.admin("/ready")
		if err != nil {
			return err
		}
		if !strings.Contains(body, "ready") {
			return fmt.Errorf("proxy of %s not ready: %q", p.Name, body)
		}
		return nil
	})
	return p
}

// serveHTTP answers "<pod>:<port>" on the port of a pod.
func serveHTTP(t *testing.T, pod *podnet.Pod, port string) {
	t.Helper()
	l, err := pod.Listen("tcp", "0.0.0.0:"+port)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, pod.Name+":"+port)
	})}
	go srv.Serve(l) //nolint:errcheck // ends at Close
	t.Cleanup(func() { srv.Close() })
}

// serveTLS answers "tls:<server name>" over TLS on the port of a pod.
func serveTLS(t *testing.T, pod *podnet.Pod, port string) {
	t.Helper()
	l, err := pod.Listen("tcp", "0.0.0.0:"+port)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tls:"+r.TLS.ServerName)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.StartTLS()
	t.Cleanup(srv.Close)
}

// getHost sends a GET to addr:9998 with the given Host header.
func getHost(t *testing.T, hc *http.Client, addr, host string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+":9998/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// getTLS sends a GET over TLS with the given server name from the pod.
func getTLS(pod *podnet.Pod, addr, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &http.Transport{
		DialContext:     pod.DialContext,
		TLSClientConfig: &tls.Config{ServerName: name, InsecureSkipVerify: true}, //nolint:gosec // a test server's certificate
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
