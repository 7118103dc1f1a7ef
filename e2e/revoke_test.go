package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
)

// rampartCLI returns the path of the rampart command: the one in
// RAMPART_BIN_DIR when set, else one built for the test.
func rampartCLI(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("RAMPART_BIN_DIR"); dir != "" {
		bin := filepath.Join(dir, "rampart")
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("set RAMPART_BIN_DIR to a directory holding rampart, or put the go command on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "rampart")
	build := exec.Command(goTool, "build", "-o", bin, "./cmd/rampart")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/rampart: %v\n%s", err, out)
	}
	return bin
}

// load sends requests through one outbound listener without pause and
// counts what succeeds and fails, with the time of the last success.
type load struct {
	ok, failed  atomic.Int64
	lastOK      atomic.Int64 // UnixNano
	mu          sync.Mutex
	firstErrors []string
}

func (l *load) run(ctx context.Context, wg *sync.WaitGroup, addr string, workers int) {
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				code, body, err := get(addr, "/", nil)
				if err == nil && code == 200 {
					l.ok.Add(1)
					l.lastOK.Store(time.Now().UnixNano())
					continue
				}
				l.failed.Add(1)
				l.mu.Lock()
				if len(l.firstErrors) < 5 {
					l.firstErrors = append(l.firstErrors, fmt.Sprintf("%d %q %v", code, body, err))
				}
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond) // a refused client fails fast
			}
		})
	}
}

// TestRevocationUnderLoad revokes the client workload's current
// certificate with `rampart identity revoke` while two workloads send
// requests without pause: within seconds the revoked client's requests
// fail (its peer refuses the handshake), its tunnel connection already
// open is closed (a TCP stream on it ends), and the other workload does
// not see a single failure. The client attests again with a new join token
// and works; then its identity is revoked, which refuses the new
// certificate too and any further attestation, until --release.
func TestRevocationUnderLoad(t *testing.T) {
	cli := rampartCLI(t)
	a := startApps(t)
	m := newMesh(t, 10*time.Minute, servicesYAML(a))
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web", "lines"}}, true)
	other := m.startProxy(proxyOpts{name: "other", upstreams: []string{"web"}}, true)
	for _, p := range []*runningProxy{client, other} {
		eventually(t, 10*time.Second, func() error {
			code, body, err := get(p.UpstreamAddr(0), "/", nil)
			if err != nil || code != 200 {
				return fmt.Errorf("first request through %s: %d %q %v", p.ID(), code, body, err)
			}
			return nil
		})
	}
	revokeCmd := func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"identity"}, append(args, "--state-dir", m.stateDir)...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// An opaque TCP stream through the client's pooled tunnel connection,
	// open before the revocation.
	stream, err := net.Dial("tcp", client.UpstreamAddr(1))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	lines := bufio.NewReader(stream)
	if l, err := lines.ReadString('\n'); err != nil || l != "hello\n" {
		t.Fatalf("TCP stream greeting: %q %v", l, err)
	}

	var (
		wg                    sync.WaitGroup
		clientLoad, otherLoad load
		ctx, stop             = context.WithCancel(context.Background())
	)
	defer func() {
		stop()
		wg.Wait()
	}()
	clientLoad.run(ctx, &wg, client.UpstreamAddr(0), 2)
	otherLoad.run(ctx, &wg, other.UpstreamAddr(0), 2)
	eventually(t, 5*time.Second, func() error {
		if clientLoad.ok.Load() < 20 || otherLoad.ok.Load() < 20 {
			return errors.New("load has not started")
		}
		return nil
	})

	// Revoke the client's certificate in use.
	serial := ca.SerialOf(client.SVID().Get().Certificates[0])
	revokedAt := time.Now()
	out, err := revokeCmd("revoke", serial, "--reason", "key leaked")
	if err != nil || !strings.Contains(out, "Revoked certificate "+serial) {
		t.Fatalf("rampart identity revoke %s: %v\n%s", serial, err, out)
	}

	// New requests from the client fail: the server refuses its
	// handshakes, for the revocation.
	eventually(t, 5*time.Second, func() error {
		if n := testutil.ToFloat64(server.Metrics().TLSRefusals.WithLabelValues(metrics.Inbound, "revoked")); n == 0 {
			return errors.New("the server has refused no handshake as revoked")
		}
		return nil
	})
	// The stream opened before is gone with the connection that carried
	// it, which the server closed when the list reached it (before any
	// refusal): what the app sends on it now is never echoed, and the
	// stream ends.
	if _, err := stream.Write([]byte("after\n")); err != nil {
		t.Logf("write on the revoked stream: %v", err)
	}
	stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := lines.ReadString('\n')
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("the stream opened before the revocation still echoes: %q", l)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatal("the stream opened before the revocation is still open after 10s")
	}
	t.Logf("stream opened before the revocation ended %v after it: %v", time.Since(revokedAt).Round(time.Millisecond), err)
	cutoff := time.Now()
	okBefore := clientLoad.ok.Load()
	failedBefore := clientLoad.failed.Load()
	eventually(t, 5*time.Second, func() error {
		if clientLoad.failed.Load() < failedBefore+20 {
			return errors.New("the revoked client has not failed 20 more requests")
		}
		return nil
	})
	if ok := clientLoad.ok.Load(); ok != okBefore {
		t.Errorf("the revoked client had %d requests succeed after the server refused it", ok-okBefore)
	}
	if last := time.Unix(0, clientLoad.lastOK.Load()); last.After(cutoff) {
		t.Errorf("a request of the revoked client succeeded at %v, after the refusal", last)
	}
	t.Logf("client refused %v after the revocation; %d requests before, %d refused", cutoff.Sub(revokedAt).Round(time.Millisecond), okBefore, clientLoad.failed.Load())

	// The revoked proxy keeps running; a new proxy of the same workload
	// attests again with a new join token and works.
	again := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
	eventually(t, 10*time.Second, func() error {
		code, body, err := get(again.UpstreamAddr(0), "/", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("request after attesting again: %d %q %v", code, body, err)
		}
		return nil
	})

	// Revoking the identity refuses the new certificate too, and any new
	// attestation of the identity until --release.
	clientID, err := identity.WorkloadID(m.td, ns, "client")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := revokeCmd("revoke", clientID.String(), "--reason", "compromised host"); err != nil {
		t.Fatalf("rampart identity revoke %s: %v\n%s", clientID, err, out)
	}
	eventually(t, 5*time.Second, func() error {
		code, _, err := get(again.UpstreamAddr(0), "/", nil)
		if err == nil && code == 200 {
			return errors.New("the re-attested client still reaches its peer after its identity was revoked")
		}
		return nil
	})
	attestErr := func() error {
		p := m.startProxy(proxyOpts{name: "client-3", sa: "client", upstreams: []string{"web"}}, false)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case err := <-p.done:
				p.done <- err // for the cleanup
				return err
			case <-time.After(20 * time.Millisecond):
			}
			if p.Ready() {
				return nil
			}
		}
		t.Fatal("a proxy of a revoked identity neither started nor stopped in 10s")
		return nil
	}
	if err := attestErr(); err == nil || !strings.Contains(err.Error(), "--release") {
		t.Fatalf("attesting a revoked identity: %v; want a refusal naming --release", err)
	}
	if out, err := revokeCmd("revoke", "--release", clientID.String()); err != nil || !strings.Contains(out, "Released") {
		t.Fatalf("rampart identity revoke --release: %v\n%s", err, out)
	}
	out, err = revokeCmd("revocations")
	if err != nil || !strings.Contains(out, serial) || !strings.Contains(out, "released") {
		t.Fatalf("rampart identity revocations: %v\n%s", err, out)
	}
	// Released: issuance resumes once a new certificate can no longer
	// predate the revocation (its NotBefore is backdated by ca.ClockSkew);
	// the refusal says when.
	if err := attestErr(); err != nil && !strings.Contains(err.Error(), "may be issued again from") {
		t.Fatalf("attesting a released identity: %v", err)
	}

	stop()
	wg.Wait()
	t.Logf("other workload: %d requests, %d failed", otherLoad.ok.Load(), otherLoad.failed.Load())
	if n := otherLoad.failed.Load(); n != 0 {
		t.Fatalf("%d requests of the other workload failed; first: %v", n, otherLoad.firstErrors)
	}
}
