//go:build linux

// Package netns runs the mesh as it runs on Kubernetes, with pods as
// network namespaces: each pod has its own address on a bridge, its app and
// its proxy run inside it, `rampart-proxy iptables` redirects its traffic,
// and apps talk to each other by service address or pod IP, unaware of the
// mesh. The controller runs in a pod of its own.
//
// It needs root, iproute2, iptables and the real binaries
// (RAMPART_BIN_DIR, set by `make test`); tools for the external checks
// (Redis, the gRPC interop client and server) come from
// scripts/test-deps.sh.
package netns

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/podnet"
)

const (
	trustDomain = "netns.rampart.test"
	namespace   = "default"
	// proxyUID runs every proxy: iptables exempts its connections.
	proxyUID = 1337
	// Ports inside every pod.
	tunnelPort   = 15008
	adminPort    = 15000
	outboundPort = 15001
	inboundPort  = 15006
	ctlPort      = 15012
)

// requireBinaries returns the directory of the real binaries, or skips
// (fails where the netns suite is required).
func requireBinaries(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RAMPART_BIN_DIR")
	if dir == "" {
		if os.Getenv(podnet.RequireEnv) == "1" {
			t.Fatal("RAMPART_BIN_DIR is not set: run the suite through `make test`")
		}
		t.Skip("set RAMPART_BIN_DIR to a directory holding rampart-controller and rampart-proxy (make build puts them in ./bin)")
	}
	for _, b := range []string{"rampart-controller", "rampart-proxy"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("RAMPART_BIN_DIR=%s: %v; run make build", dir, err)
		}
	}
	return dir
}

// requireTool finds an external program in PATH or .cache/bin.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, ".cache", "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv(podnet.RequireEnv) == "1" {
		t.Fatalf("%s not found: run scripts/test-deps.sh (make test does)", name)
	}
	t.Skipf("%s not found: run scripts/test-deps.sh", name)
	return ""
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}

// cluster is a controller in a pod of its own and the workload pods
// added to it.
type cluster struct {
	t         *testing.T
	net       *podnet.Net
	dir       string // world-readable: the proxies run as another user
	stateDir  string
	configDir string
	proxyBin  string
	ctl       *podnet.Pod
	ctlProc   *podnet.Process
	td        spiffeid.TrustDomain
}

// newCluster starts a controller pod with the given resource files.
func newCluster(t *testing.T, egress string, config map[string]string) *cluster {
	t.Helper()
	bins := requireBinaries(t)
	n := podnet.New(t)
	dir, err := os.MkdirTemp("", "rampart-netns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &cluster{
		t: t, net: n, dir: dir,
		stateDir:  filepath.Join(dir, "state"),
		configDir: filepath.Join(dir, "config"),
		proxyBin:  filepath.Join(dir, "rampart-proxy"),
		td:        spiffeid.RequireTrustDomainFromString(trustDomain),
	}
	if err := os.MkdirAll(c.configDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range config {
		c.writeConfig(name, content)
	}
	// The proxy user must be able to execute the binary.
	copyFile(t, filepath.Join(bins, "rampart-proxy"), c.proxyBin, 0o755)

	c.ctl = n.AddPod("ctl")
	c.ctlProc = c.ctl.Start(t, filepath.Join(bins, "rampart-controller"),
		"--state-dir", c.stateDir, "--config-dir", c.configDir,
		"--listen", fmt.Sprintf("0.0.0.0:%d", ctlPort), "--admin-listen", "127.0.0.1:15014",
		"--trust-domain", trustDomain, "--egress", egress)
	bundle := filepath.Join(c.stateDir, "bundle.pem")
	eventually(t, 20*time.Second, func() error {
		if _, err := os.Stat(bundle); err != nil {
			return err
		}
		resp, err := c.ctl.HTTPClient().Get("http://127.0.0.1:15014/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("controller not ready: %s", resp.Status)
		}
		return nil
	})
	copyFile(t, bundle, filepath.Join(dir, "bundle.pem"), 0o644)
	return c
}

func (c *cluster) writeConfig(name, content string) {
	c.t.Helper()
	// Write then rename, so the controller's watcher never reads half a file.
	tmp := filepath.Join(c.configDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.configDir, name)); err != nil {
		c.t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) id(sa string) spiffeid.ID {
	id, err := identity.WorkloadID(c.td, namespace, sa)
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

func (c *cluster) token(sa string) string {
	c.t.Helper()
	store, err := identity.OpenTokenStore(filepath.Join(c.stateDir, "tokens.json"), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	tok, err := store.Create(c.id(sa), 10*time.Minute)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

// meshPod is a workload pod: traffic redirected by the real
// `rampart-proxy iptables`, and a proxy running as proxyUID.
type meshPod struct {
	*podnet.Pod
	c     *cluster
	sa    string
	proxy *podnet.Process
}

// addMeshPod adds a pod with interception and a ready proxy.
func (c *cluster) addMeshPod(name, sa string, labels string) *meshPod {
	t := c.t
	t.Helper()
	p := &meshPod{Pod: c.net.AddPod(name), c: c, sa: sa}
	out, err := p.Command(context.Background(), c.proxyBin, "iptables", "--proxy-uid", strconv.Itoa(proxyUID)).CombinedOutput()
	if err != nil {
		t.Fatalf("rampart-proxy iptables in pod %s: %v\n%s", name, err, out)
	}
	p.startProxy(labels)
	return p
}

func (p *meshPod) startProxy(labels string) {
	c, t := p.c, p.c.t
	t.Helper()
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
		"--inbound-listen", fmt.Sprintf("0.0.0.0:%d", inboundPort),
		"--drain-delay", "500ms", "--drain-timeout", "5s",
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
}

// admin GETs a path of the pod's proxy admin listener.
func (p *meshPod) admin(path string) (string, error) {
	resp, err := p.HTTPClient().Get(fmt.Sprintf("http://127.0.0.1:%d%s", adminPort, path))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", path, resp.Status, b)
	}
	return string(b), nil
}

// metric sums the samples of a series whose line contains every one of
// the given label matchers, in the pod proxy's exposition.
func (p *meshPod) metric(name string, labels ...string) float64 {
	p.c.t.Helper()
	body, err := p.admin("/metrics")
	if err != nil {
		p.c.t.Fatalf("metrics of %s: %v", p.Name, err)
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func eventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
