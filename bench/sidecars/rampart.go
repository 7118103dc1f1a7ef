package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// The Rampart binaries the benchmark runs.
const (
	controllerBinary = "rampart-controller"
	proxyBinary      = "rampart-proxy"
	cliBinary        = "rampart"
	trustDomain      = "rampart.local"
	meshNamespace    = "bench"
)

// buildRampart builds the three binaries of the repository at root into
// dir.
func buildRampart(ctx context.Context, root, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/...")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build ./cmd/... failed: %w\n%s", err, out)
	}
	return nil
}

// controller is one rampart-controller in local mode.
type controller struct {
	bin      string // directory of the binaries
	stateDir string
	addr     string
	admin    string
	child    *child
}

func (c *controller) bundle() string { return filepath.Join(c.stateDir, "bundle.pem") }

// startController starts a controller reading configDir and waits until it
// is ready and has published its trust bundle.
func startController(ctx context.Context, sup *supervisor, bin, dir, name, configDir string, ports *portAllocator) (*controller, error) {
	c := &controller{bin: bin, stateDir: filepath.Join(dir, name+"-state")}
	for _, a := range []*string{&c.addr, &c.admin} {
		p, err := ports.take(name)
		if err != nil {
			return nil, err
		}
		*a = "127.0.0.1:" + strconv.Itoa(p)
	}
	var err error
	c.child, err = sup.start(name, []string{
		filepath.Join(bin, controllerBinary),
		"--state-dir", c.stateDir,
		"--config-dir", configDir,
		"--listen", c.addr,
		"--admin-listen", c.admin,
		"--trust-domain", trustDomain,
	}, nil, filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, 60*time.Second, name, c.child, func() error {
		if err := httpOK(ctx, "http://"+c.admin+"/ready"); err != nil {
			return err
		}
		_, err := os.Stat(c.bundle())
		return err
	})
	return c, err
}

// token mints a join token for spiffe://rampart.local/ns/bench/sa/<sa>
// with the CLI, as an operator would.
func (c *controller) token(ctx context.Context, sa string) (string, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(c.bin, cliBinary), "token", "create",
		"--state-dir", c.stateDir, "--trust-domain", trustDomain,
		"--namespace", meshNamespace, "--service-account", sa, "--ttl", "1h").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("rampart token create: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// proxySpec is one rampart-proxy to start.
type proxySpec struct {
	name      string // workload name, also its service account
	labels    string
	upstreams []string // --upstream values
	extra     []string // more flags
	env       []string // GOMAXPROCS=1, say
}

// rampartProxy is a running rampart-proxy.
type rampartProxy struct {
	child  *child
	admin  string
	tunnel string
}

func (c *controller) startProxy(ctx context.Context, sup *supervisor, dir string, s proxySpec, ports *portAllocator) (*rampartProxy, error) {
	tok, err := c.token(ctx, s.name)
	if err != nil {
		return nil, err
	}
	p := &rampartProxy{}
	for _, a := range []*string{&p.tunnel, &p.admin} {
		port, err := ports.take(s.name + " proxy")
		if err != nil {
			return nil, err
		}
		*a = "127.0.0.1:" + strconv.Itoa(port)
	}
	tokFile := filepath.Join(dir, s.name+".token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		return nil, err
	}
	argv := []string{
		filepath.Join(c.bin, proxyBinary),
		"--controller", c.addr,
		"--trust-bundle", c.bundle(),
		"--join-token-file", tokFile,
		"--namespace", meshNamespace,
		"--workload", s.name,
		"--tunnel-listen", p.tunnel,
		"--admin-listen", p.admin,
	}
	if s.labels != "" {
		argv = append(argv, "--labels", s.labels)
	}
	for _, u := range s.upstreams {
		argv = append(argv, "--upstream", u)
	}
	argv = append(argv, s.extra...)
	name := "rampart-proxy " + s.name
	if p.child, err = sup.start(name, argv, s.env, filepath.Join(dir, "proxy-"+s.name+".log")); err != nil {
		return nil, err
	}
	err = waitFor(ctx, 60*time.Second, name, p.child, func() error {
		return httpOK(ctx, "http://"+p.admin+"/ready")
	})
	return p, err
}

// configCounts returns how many services and endpoints the proxy's
// configuration in force holds, from its /config admin endpoint.
func (p *rampartProxy) configCounts(ctx context.Context) (services, endpoints int, err error) {
	b, err := httpGet(ctx, "http://"+p.admin+"/config")
	if err != nil {
		return 0, 0, err
	}
	return parseConfigCounts(b)
}

func parseConfigCounts(b []byte) (services, endpoints int, err error) {
	var dump struct {
		Config struct {
			Services []struct {
				Endpoints []json.RawMessage `json:"endpoints"`
			} `json:"services"`
		} `json:"config"`
	}
	if err := json.Unmarshal(b, &dump); err != nil {
		return 0, 0, fmt.Errorf("proxy /config: %w", err)
	}
	for _, s := range dump.Config.Services {
		endpoints += len(s.Endpoints)
	}
	return len(dump.Config.Services), endpoints, nil
}

// serviceTemplate declares the benchmark's backend as one mesh service with
// an HTTP port and a gRPC port.
var serviceTemplate = template.Must(template.New("service").Parse(`# Written by bench/sidecars: the backend, behind the {{.Name}} proxy.
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata:
  name: {{.Name}}
  namespace: {{.Namespace}}
spec:
  selector:
    app: {{.Name}}
  serviceAccounts: [{{.Name}}]
  ports:
  - name: http
    port: 80
    targetPort: {{.HTTPPort}}
    protocol: HTTP
  - name: grpc
    port: 9090
    targetPort: {{.GRPCPort}}
    protocol: GRPC
`))

func renderService(name string, httpPort, grpcPort int) ([]byte, error) {
	var b bytes.Buffer
	err := serviceTemplate.Execute(&b, map[string]any{"Name": name, "Namespace": meshNamespace, "HTTPPort": httpPort, "GRPCPort": grpcPort})
	return b.Bytes(), err
}

// writeDiscoveryConfig writes services Services in namespace bench, each
// selecting endpointsPer static Workloads, into dir, split into files well
// under the 4 MiB a config file may hold. The workloads' tunnel addresses
// are on loopback and nothing ever dials them.
func writeDiscoveryConfig(dir string, services, endpointsPer int) error {
	const perFile = 100 // services (and their workloads) per file
	for first := 0; first < services; first += perFile {
		var b bytes.Buffer
		for i := first; i < min(first+perFile, services); i++ {
			name := discoveryService(i)
			fmt.Fprintf(&b, `---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata:
  name: %s
  namespace: %s
spec:
  selector:
    app: %s
  serviceAccounts: [%s]
  ports:
  - port: 80
    targetPort: 8080
    protocol: HTTP
`, name, meshNamespace, name, name)
			for j := range endpointsPer {
				n := i*endpointsPer + j
				fmt.Fprintf(&b, `---
apiVersion: rampart.dev/v1alpha1
kind: Workload
metadata:
  name: %s-%d
  namespace: %s
  labels:
    app: %s
spec:
  serviceAccount: %s
  tunnelAddress: 127.%d.%d.%d:15008
`, name, j, meshNamespace, name, name, 1+n/65536, n/256%256, n%256)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("services-%04d.yaml", first)), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func discoveryService(i int) string { return fmt.Sprintf("svc-%04d", i) }

// waitFor polls check until it succeeds, c exits, ctx ends or timeout
// passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, c *child, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if c != nil && c.exited() {
			return c.exitErr()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("%s not ready after %v: %v", what, timeout, err)
			if c != nil {
				msg += fmt.Sprintf("; the end of its log %s:\n%s", c.logPath, tailFile(c.logPath, 15))
			}
			return fmt.Errorf("%s", msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var plainClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}, Timeout: 5 * time.Second}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("%s: %s: %s", url, resp.Status, truncate(strings.TrimSpace(string(b)), 200))
	}
	return b, nil
}

func httpOK(ctx context.Context, url string) error {
	_, err := httpGet(ctx, url)
	return err
}

// dialable reports whether something accepts on addr.
func dialable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}
