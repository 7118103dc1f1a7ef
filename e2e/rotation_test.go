package e2e

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controller"
)

// TestRotationUnderLoad rotates the issuer, then the root through its three
// stages, while clients send requests through the mesh without pause: not
// one request may fail. The CA is driven through the state directory, as
// `rampart identity` does, and the running controller picks the changes up.
func TestRotationUnderLoad(t *testing.T) {
	a := startApps(t)
	// Proxies renew halfway through what is left of their certificate:
	// every 3 seconds.
	m := newMesh(t, 6*time.Second, servicesYAML(a), func(c *controller.Config) {
		c.CAPollInterval = 100 * time.Millisecond
	})
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
	proxies := []*runningProxy{server, client}
	eventually(t, 10*time.Second, func() error {
		code, body, err := get(client.UpstreamAddr(0), "/", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("first request: %d %q %v", code, body, err)
		}
		return nil
	})

	// The CLI's view of the CA.
	cli, err := ca.Open(ca.Config{Dir: filepath.Join(m.stateDir, controller.CADir), TrustDomain: m.td})
	if err != nil {
		t.Fatal(err)
	}

	// Steady load: a few clients, each sending one request after another.
	var (
		sent, failed atomic.Int64
		errMu        sync.Mutex
		errs         []string
		wg           sync.WaitGroup
	)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				code, body, err := get(client.UpstreamAddr(0), "/", nil)
				sent.Add(1)
				if err != nil || code != 200 {
					failed.Add(1)
					errMu.Lock()
					if len(errs) < 10 {
						errs = append(errs, fmt.Sprintf("%s: %d %q %v", time.Now().Format("15:04:05.000"), code, body, err))
					}
					errMu.Unlock()
				}
			}
		})
	}

	issuerOf := func(p *runningProxy) *x509.Certificate { return p.SVID().Get().Certificates[1] }
	// renewedAfter waits until every proxy holds a certificate other than
	// the one it held when called.
	renewed := func(step string) {
		t.Helper()
		before := map[*runningProxy]string{}
		for _, p := range proxies {
			before[p] = ca.SerialOf(p.SVID().Get().Certificates[0])
		}
		eventually(t, 30*time.Second, func() error {
			for _, p := range proxies {
				if ca.SerialOf(p.SVID().Get().Certificates[0]) == before[p] {
					return fmt.Errorf("%s: proxy %s has not renewed", step, p.ID())
				}
			}
			return nil
		})
	}
	// applied waits until the controller runs with what the CLI wrote.
	applied := func(step string) {
		t.Helper()
		want := cli.Version()
		eventually(t, 10*time.Second, func() error {
			st := m.ctrl.IdentityStatus()
			if st.Issuer.Serial != ca.SerialOf(cli.Intermediate()) || len(st.TrustAnchors) != len(cli.Roots()) {
				return fmt.Errorf("%s: controller has not applied CA version %s", step, want)
			}
			return nil
		})
	}

	// 1. A new issuer under the same root.
	inter, err := cli.RotateIssuer()
	if err != nil {
		t.Fatalf("rotate-issuer: %v", err)
	}
	applied("rotate-issuer")
	eventually(t, 30*time.Second, func() error {
		for _, p := range proxies {
			if !issuerOf(p).Equal(inter) {
				return fmt.Errorf("rotate-issuer: proxy %s not yet issued by the new issuer", p.ID())
			}
		}
		return nil
	})
	t.Logf("rotate-issuer done; %d requests so far", sent.Load())

	// 2. Prepare: the new root reaches every proxy, issuing unchanged.
	oldRoot := cli.Roots()[0]
	newRoot, err := cli.PrepareRoot()
	if err != nil {
		t.Fatalf("rotate-root prepare: %v", err)
	}
	applied("prepare")
	renewed("prepare") // each renewal answer carries the two-root bundle
	t.Logf("prepare done; %d requests so far", sent.Load())

	// 3. Activate: issuing under the new root, both trusted.
	if _, err := cli.ActivateRoot(); err != nil {
		t.Fatalf("rotate-root activate: %v", err)
	}
	applied("activate")
	eventually(t, 30*time.Second, func() error {
		for _, p := range proxies {
			if issuerOf(p).CheckSignatureFrom(newRoot) != nil {
				return fmt.Errorf("activate: proxy %s still chains to the old root", p.ID())
			}
		}
		for _, l := range m.ctrl.IdentityStatus().Workloads {
			// The controller's own certificate stays under the old
			// root until retire, for proxies that missed prepare.
			if l.Kind == ca.KindServing {
				if l.Root != ca.SerialOf(oldRoot) {
					return fmt.Errorf("activate: the serving certificate %s left the old root before retire", l.Serial)
				}
				continue
			}
			if l.Root != ca.SerialOf(newRoot) {
				return fmt.Errorf("activate: %s (serial %s) still chains to the old root", l.SPIFFEID, l.Serial)
			}
		}
		return nil
	})
	t.Logf("activate done; %d requests so far", sent.Load())

	// 4. Retire: accepted once the controller's record shows no leaf in
	// use under the old root; until then refused, which is the point.
	var refusals int
	eventually(t, 30*time.Second, func() error {
		_, err := cli.RetireRoot(false)
		if errors.Is(err, ca.ErrLeavesInUse) {
			refusals++
			return err
		}
		if err != nil {
			t.Fatalf("rotate-root retire: %v", err)
		}
		return nil
	})
	applied("retire")
	for _, a := range m.ctrl.IdentityStatus().TrustAnchors {
		if a.Serial == ca.SerialOf(oldRoot) {
			t.Fatal("the old root is still a trust anchor after retire")
		}
	}
	eventually(t, 10*time.Second, func() error {
		for _, l := range m.ctrl.IdentityStatus().Workloads {
			if l.Kind == ca.KindServing && l.Root != ca.SerialOf(newRoot) {
				return fmt.Errorf("retire: the serving certificate %s is not under the new root yet", l.Serial)
			}
		}
		return nil
	})
	// Proxies keep renewing and serving with the one-root bundle.
	renewed("retire")
	renewed("retire, again")

	stop()
	wg.Wait()
	t.Logf("rotation under load: %d requests sent, %d failed (retire refused %d times while leaves were in use)", sent.Load(), failed.Load(), refusals)
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", n, sent.Load(), errs)
	}
	if sent.Load() == 0 {
		t.Fatal("no requests sent")
	}
}
