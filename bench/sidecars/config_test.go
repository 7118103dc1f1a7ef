package main

import (
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/internal/localconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenPeer is the configuration the golden files are rendered from.
var goldenPeer = peerConfig{
	Dir: "/run/bench", Listen: 17010, Peer: 17011, Backend: 17000, Workers: 1,
	Certs: certFiles{
		CA:         "/run/bench/ca.crt",
		ServerCert: "/run/bench/server.crt", ServerKey: "/run/bench/server.key", ServerPEM: "/run/bench/server.pem",
		ClientCert: "/run/bench/client.crt", ClientKey: "/run/bench/client.key", ClientPEM: "/run/bench/client.pem",
	},
	ServerName: serverName, Body: backendBody,
}

func TestPeerConfigsGolden(t *testing.T) {
	tests := []struct {
		kind, role string
		render     func(string, peerConfig) ([]byte, error)
	}{
		{"nginx", "backend", renderNginx},
		{"nginx", "client", renderNginx},
		{"nginx", "server", renderNginx},
		{"haproxy", "client", renderHAProxy},
		{"haproxy", "server", renderHAProxy},
	}
	for _, tt := range tests {
		name := tt.kind + "-" + tt.role
		t.Run(name, func(t *testing.T) {
			c := goldenPeer
			c.Name = name
			got, err := tt.render(tt.role, c)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".conf")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./bench/sidecars -run Golden -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s (-want +got; -update rewrites it):\n%s", golden, diff)
			}
		})
	}
}

func TestRenderRefuses(t *testing.T) {
	if _, err := renderHAProxy("backend", goldenPeer); err == nil {
		t.Error("rendered an HAProxy backend, which the benchmark does not have")
	}
	c := goldenPeer
	c.Workers = 0
	if _, err := renderNginx("client", c); err == nil {
		t.Error("rendered nginx with 0 workers")
	}
}

// TestPeerConfigsAccepted has the installed nginx and HAProxy check the
// rendered configurations with real certificates, so that a directive one
// of them does not know is found here rather than in a benchmark run.
func TestPeerConfigsAccepted(t *testing.T) {
	dir := t.TempDir()
	certs, err := writeCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"nginx", "haproxy"} {
		path, err := exec.LookPath(kind)
		if err != nil {
			if path, err = exec.LookPath(filepath.Join("/usr/sbin", kind)); err != nil {
				t.Logf("%s not installed (bash bench/setup.sh installs it): not checked", kind)
				continue
			}
		}
		roles := []string{"client", "server"}
		if kind == "nginx" {
			roles = append(roles, "backend")
		}
		for _, role := range roles {
			t.Run(kind+"-"+role, func(t *testing.T) {
				c := goldenPeer
				c.Dir, c.Name, c.Certs = dir, kind+"-"+role, certs
				conf, err := map[string]func(string, peerConfig) ([]byte, error){"nginx": renderNginx, "haproxy": renderHAProxy}[kind](role, c)
				if err != nil {
					t.Fatal(err)
				}
				cfg := filepath.Join(dir, c.Name+".conf")
				if err := os.WriteFile(cfg, conf, 0o644); err != nil {
					t.Fatal(err)
				}
				var cmd *exec.Cmd
				if kind == "nginx" {
					for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
						if err := os.MkdirAll(filepath.Join(dir, c.Name+"-tmp", d), 0o755); err != nil {
							t.Fatal(err)
						}
					}
					cmd = exec.Command(path, "-t", "-q", "-p", dir, "-e", filepath.Join(dir, c.Name+".error.log"), "-c", cfg)
				} else {
					cmd = exec.Command(path, "-c", "-q", "-f", cfg)
				}
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s rejects the %s configuration: %v\n%s", kind, role, err, out)
				}
			})
		}
	}
}

// TestMeshConfigLoads loads the Service and Workload documents the
// benchmark writes with the controller's own loader.
func TestMeshConfigLoads(t *testing.T) {
	dir := t.TempDir()
	svc, err := renderService("bench", 17000, 17001)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), svc, 0o644); err != nil {
		t.Fatal(err)
	}
	const services, per = 150, 10 // two files, the second partly filled
	if err := writeDiscoveryConfig(dir, services, per); err != nil {
		t.Fatal(err)
	}
	res, err := localconfig.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Services) != services+1 || len(res.Workloads) != services*per {
		t.Fatalf("loaded %d services and %d workloads, want %d and %d", len(res.Services), len(res.Workloads), services+1, services*per)
	}
	var bench int
	for i, s := range res.Services {
		if s.Name == "bench" {
			bench = i
		}
	}
	ports := res.Services[bench].Spec.Ports
	if len(ports) != 2 || ports[0].Protocol != "HTTP" || ports[0].TargetPort != 17000 || ports[1].Protocol != "GRPC" || ports[1].TargetPort != 17001 {
		t.Errorf("bench service ports = %+v, want HTTP to 17000 and GRPC to 17001", ports)
	}
	seen := make(map[string]bool)
	for _, w := range res.Workloads {
		if seen[w.Spec.TunnelAddress] {
			t.Errorf("tunnel address %s given twice", w.Spec.TunnelAddress)
		}
		seen[w.Spec.TunnelAddress] = true
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-targets", "nginx,direct,nginx", "-endpoints", "1005", "-services", "10"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 3*time.Second || o.warmup != time.Second || o.rounds != 1 {
		t.Errorf("-quick: duration %v, warm-up %v, rounds %d", o.duration, o.warmup, o.rounds)
	}
	if diff := cmp.Diff([]string{"nginx", "direct"}, o.targets); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	if o.endpoints != 1000 {
		t.Errorf("endpoints = %d, want 1000 (evenly spread over 10 services)", o.endpoints)
	}
	for _, bad := range [][]string{{"-targets", "envoy"}, {"-backend", "caddy"}, {"-duration", "10ms"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", bad)
		}
	}
}

func TestMedianAndFormatting(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v", got)
	}
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 23812.4: "23,812", 1234567: "1,234,567"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
	if got := per1k(0.5, 10000); got != 0.05 {
		t.Errorf("per1k = %v, want 0.05", got)
	}
}

func TestPortAllocatorRefusesTakenPort(t *testing.T) {
	a := &portAllocator{}
	p, err := a.take("a test")
	if err != nil {
		t.Fatal(err)
	}
	if err := portFree(p); err != nil {
		t.Fatalf("port %d handed out but not free: %v", p, err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a = &portAllocator{next: p}
	if _, err := a.take("a test"); err == nil {
		t.Errorf("port %d is taken, but take handed it out", p)
	}
}

func TestFindToolsPointsAtSetup(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = findTools(t.TempDir(), o)
	if err == nil {
		t.Skip("every tool found outside PATH (in /usr/sbin?)")
	}
	for _, want := range []string{"wrk", "fortio", "bash bench/setup.sh"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
