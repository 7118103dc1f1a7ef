package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/controller"
)

// tapWhileSending runs `rampart tap <args> -o json` and sends requests
// through upstream until it ends, starting it again while the workload's
// proxies have not opened their tap stream yet. It returns the lines.
func tapWhileSending(t *testing.T, cli, upstream string, hdr map[string]string, args ...string) []controller.TapLine {
	t.Helper()
	var lines []controller.TapLine
	eventually(t, 30*time.Second, func() error {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(cli, append(append([]string{"tap"}, args...), "-o", "json")...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		for i := 0; ; i++ {
			select {
			case err := <-done:
				if err != nil {
					return fmt.Errorf("rampart tap: %v: %s", err, stderr.String())
				}
				lines = nil
				sc := bufio.NewScanner(&stdout)
				for sc.Scan() {
					var l controller.TapLine
					if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
						t.Fatalf("rampart tap printed %q: %v", sc.Bytes(), err)
					}
					lines = append(lines, l)
				}
				return nil
			default:
			}
			if i == 1000 {
				cmd.Process.Kill()
				<-done
				t.Fatalf("rampart tap did not end after 1000 requests: %s", stdout.String())
			}
			if code, body, err := get(upstream, fmt.Sprintf("/tapped/%d?card=4111", i), hdr); err != nil || code != http.StatusOK {
				return fmt.Errorf("request %d: %d %q %v", i, code, body, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return lines
}

func TestTapShowsRequestHeadsToTokenHoldersOnly(t *testing.T) {
	a := startApps(t)
	m := newMesh(t, time.Hour, servicesYAML(a), withAdmin)
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
	cli := rampartCLI(t)
	admin := m.ctrl.AdminAddr()
	serverID, clientID := server.ID().String(), client.ID().String()
	const secret = "Bearer s3cr3t-e2e"
	hdr := map[string]string{"Authorization": secret, "User-Agent": "tap-e2e/1"}

	t.Run("inbound", func(t *testing.T) {
		lines := tapWhileSending(t, cli, client.UpstreamAddr(0), hdr, ns+"/server",
			"--controller-admin", admin, "--state-dir", m.stateDir, "--max", "3", "--path", "/tapped/", "--from", clientID)
		if len(lines) != 5 || lines[0].Type != "start" || lines[4].Type != "end" || lines[4].Events != 3 || lines[4].Reason != "max events" {
			t.Fatalf("lines %+v: want start, 3 requests, end after max events", lines)
		}
		for _, l := range lines[1:4] {
			if l.Type != "request" || l.Direction != "inbound" || l.Method != http.MethodGet || !strings.HasPrefix(l.Path, "/tapped/") ||
				l.Source != clientID || l.Destination != serverID || l.Status != http.StatusOK || l.Time == nil {
				t.Errorf("request %+v", l)
			}
			if strings.Contains(l.Path, "card") {
				t.Errorf("path %q carries its query", l.Path)
			}
			got := map[string]string{}
			for _, h := range l.RequestHeaders {
				got[h.Name] = h.Value
			}
			if v, ok := got["Authorization"]; !ok || v != "" {
				t.Errorf("Authorization: present %v, value %q: want the name without its value", ok, v)
			}
			if got["User-Agent"] != "tap-e2e/1" {
				t.Errorf("User-Agent %q: want its value (allow-listed)", got["User-Agent"])
			}
			b, _ := json.Marshal(l)
			if strings.Contains(string(b), "s3cr3t") {
				t.Errorf("a secret header value reached the tap: %s", b)
			}
		}
	})

	t.Run("outbound", func(t *testing.T) {
		lines := tapWhileSending(t, cli, client.UpstreamAddr(0), hdr, ns+"/client",
			"--controller-admin", admin, "--state-dir", m.stateDir, "--max", "2", "--method", "GET", "--status", "2xx")
		if len(lines) != 4 || lines[3].Events != 2 {
			t.Fatalf("lines %+v: want start, 2 requests, end", lines)
		}
		for _, l := range lines[1:3] {
			if l.Direction != "outbound" || l.Source != clientID || l.Destination != serverID {
				t.Errorf("request %+v: want outbound from %s to %s", l, clientID, serverID)
			}
		}
	})

	t.Run("refused without the token", func(t *testing.T) {
		url := "http://" + admin + "/api/v1/tap?namespace=" + ns + "&workload=server"
		for _, tc := range []struct {
			auth string
			want int
		}{
			{"", http.StatusUnauthorized},
			{"Basic dXNlcjpwYXNz", http.StatusUnauthorized},
			{"Bearer " + strings.Repeat("0", 64), http.StatusForbidden},
		} {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("Authorization %q: %s, want %d", tc.auth, resp.Status, tc.want)
			}
		}
		// The CLI, pointed at a state directory without the token.
		out, err := exec.Command(cli, "tap", ns+"/server", "--controller-admin", admin, "--state-dir", t.TempDir()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no tap token") {
			t.Errorf("rampart tap without a token: %v: %s", err, out)
		}
	})

	t.Run("invalid filters", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--path", "tapped"}, "--path"},
			{[]string{"--from", "client"}, "--from"},
			{[]string{"--method", "get"}, "--method"},
			{[]string{"--status", "7"}, "--status"},
			{[]string{"--max", "0"}, "--max"},
			{[]string{"--duration", "1h"}, "--duration"},
		} {
			args := append([]string{"tap", ns + "/server", "--controller-admin", admin, "--state-dir", m.stateDir}, tc.args...)
			out, err := exec.Command(cli, args...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), tc.want) {
				t.Errorf("rampart %s: %v: %s: want exit 1 naming %s", strings.Join(tc.args, " "), err, out, tc.want)
			}
		}
		// The controller refuses the same on its own.
		b, err := os.ReadFile(filepath.Join(m.stateDir, controller.TapTokenFile))
		if err != nil {
			t.Fatal(err)
		}
		tok := strings.TrimSpace(string(b))
		req, _ := http.NewRequest(http.MethodGet, "http://"+admin+"/api/v1/tap?namespace="+ns+"&workload=server&path=nope", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error, "path") {
			t.Errorf("bad path: %s %q, want 400 naming path", resp.Status, e.Error)
		}
	})
}
