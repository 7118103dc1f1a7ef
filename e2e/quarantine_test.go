package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/identity"
)

// TestQuarantineUnderLoad is the worked example of docs/insights.md
// (Quarantine): three workloads, two pairs with requests flowing without
// pause (client to server, other to server). `rampart quarantine add` cuts
// the client off within seconds while the other pair sees no failure;
// `rampart quarantine list` and GET /api/v1/quarantine show it; `release`
// lets it through again without restarting anything; and a quarantine
// `--for 3s` ends by itself.
func TestQuarantineUnderLoad(t *testing.T) {
	cli := rampartCLI(t)
	a := startApps(t)
	m := newMesh(t, 10*time.Minute, servicesYAML(a), adminOn)
	m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
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
	clientID, err := identity.WorkloadID(m.td, ns, "client")
	if err != nil {
		t.Fatal(err)
	}
	quarantineCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"quarantine"}, append(args, "--state-dir", m.stateDir)...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("rampart quarantine %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
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
	// cutOff waits until the client's requests fail, then until n more
	// fail with none succeeding meanwhile, and returns how long the first
	// took from start.
	cutOff := func(start time.Time, n int64) time.Duration {
		t.Helper()
		var cutoff time.Time
		eventually(t, 5*time.Second, func() error {
			failed := clientLoad.failed.Load()
			for clientLoad.failed.Load() == failed {
				if time.Since(start) > 5*time.Second {
					return errors.New("the quarantined client's requests do not fail")
				}
				time.Sleep(5 * time.Millisecond)
			}
			cutoff = time.Now()
			okBefore := clientLoad.ok.Load()
			failed = clientLoad.failed.Load()
			for clientLoad.failed.Load() < failed+n {
				if time.Since(cutoff) > 5*time.Second {
					return fmt.Errorf("the quarantined client failed only %d requests in 5s", clientLoad.failed.Load()-failed)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if ok := clientLoad.ok.Load(); ok != okBefore {
				return fmt.Errorf("%d requests of the quarantined client succeeded after one failed", ok-okBefore)
			}
			return nil
		})
		return cutoff.Sub(start)
	}
	// recovers waits until a request of the client succeeds after after.
	recovers := func(what string, after time.Time, within time.Duration) time.Duration {
		t.Helper()
		eventually(t, within, func() error {
			if last := time.Unix(0, clientLoad.lastOK.Load()); !last.After(after) {
				return fmt.Errorf("no request of the client succeeded since %s", what)
			}
			return nil
		})
		return time.Unix(0, clientLoad.lastOK.Load()).Sub(after)
	}

	added := time.Now()
	out := quarantineCmd("add", clientID.String(), "--for", "30m", "--reason", "scanning paths")
	if !strings.Contains(out, "Quarantined "+clientID.String()) {
		t.Fatalf("rampart quarantine add: %s", out)
	}
	t.Logf("client cut off %v after rampart quarantine add", cutOff(added, 5).Round(time.Millisecond))

	out = quarantineCmd("list")
	if !strings.Contains(out, clientID.String()) || !strings.Contains(out, "scanning paths") || !strings.Contains(out, "operator") {
		t.Errorf("rampart quarantine list does not show the client:\n%s", out)
	}
	var listed controller.QuarantineResponse
	if err := json.Unmarshal([]byte(quarantineCmd("list", "-o", "json")), &listed); err != nil || len(listed.Identities) != 1 || listed.Identities[0].SPIFFEID != clientID.String() {
		t.Errorf("rampart quarantine list -o json: %+v %v", listed, err)
	}
	resp, err := http.Get("http://" + m.ctrl.AdminAddr() + "/api/v1/quarantine")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var served controller.QuarantineResponse
	if err := json.Unmarshal(body, &served); err != nil || len(served.Identities) != 1 || served.Identities[0].By != "operator" {
		t.Errorf("GET /api/v1/quarantine: %s %v", body, err)
	}

	released := time.Now()
	if out := quarantineCmd("release", clientID.String()); !strings.Contains(out, "Released "+clientID.String()) {
		t.Fatalf("rampart quarantine release: %s", out)
	}
	t.Logf("client through again %v after release", recovers("the release", released, 10*time.Second).Round(time.Millisecond))

	// A short quarantine ends by itself.
	added = time.Now()
	quarantineCmd("add", clientID.String(), "--for", "3s", "--reason", "short")
	t.Logf("client cut off %v after a 3s quarantine began", cutOff(added, 5).Round(time.Millisecond))
	t.Logf("client through again %v after the 3s quarantine began", recovers("the 3s quarantine began", added.Add(3*time.Second), 15*time.Second).Round(time.Millisecond))

	if n := otherLoad.failed.Load(); n != 0 {
		t.Errorf("the other pair saw %d failures: %v", n, otherLoad.firstErrors)
	}
	t.Logf("other pair: %d requests, none failed", otherLoad.ok.Load())
}
