//go:build linux

package attest

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/codedigest"
)

// startChild starts argv as a child of this test process, which is also
// the peer of selfPeer: the app a proxy runs.
func startChild(t *testing.T, argv ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Skipf("no %s: %v", argv[0], err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// exeDigest hashes a process's executable independently of the code under
// test.
func exeDigest(t *testing.T, pid int) string {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := codedigest.Sum(f, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func proxyPolicy(ns, name, sa string, code, proxyCode *v1alpha1.CodePolicy, unix *v1alpha1.UnixAttestation) v1alpha1.WorkloadAttestationPolicy {
	p := newPolicy(ns, name, sa, code, unix)
	p.Spec.ProxyCode = proxyCode
	return p
}

func captureApp(t *testing.T, peer *UnixPeer, pid int) *UnixPeer {
	t.Helper()
	app := peer.CaptureApp(uint32(pid))
	t.Cleanup(func() { app.Close() })
	return app
}

// TestUnixAttestsTheApp: with an app, the app's executable is the
// workload's code (spec.code, the certificate) and the connected process's
// is the proxy's (spec.proxyCode).
func TestUnixAttestsTheApp(t *testing.T) {
	self := selfDigest(t)
	child := startChild(t, "sleep", "60")
	appDigest := exeDigest(t, child.Process.Pid)
	if appDigest == self {
		t.Skip("sleep is this test binary")
	}
	uid := int64(os.Geteuid())
	web := workloadID("shop", "web")
	unixSec := &v1alpha1.UnixAttestation{UIDs: []int64{uid}}
	other := digestOf("another build")

	tests := []struct {
		name     string
		policy   v1alpha1.WorkloadAttestationPolicy
		reason   string
		refDigst string // the digest the refusal names
	}{
		{name: "app and proxy admitted", policy: proxyPolicy("shop", "web", "web",
			&v1alpha1.CodePolicy{Digests: []string{appDigest}}, &v1alpha1.CodePolicy{Digests: []string{self}}, unixSec)},
		{name: "proxy not pinned", policy: proxyPolicy("shop", "web", "web",
			&v1alpha1.CodePolicy{Digests: []string{appDigest}}, nil, unixSec)},
		{name: "the proxy's code is not the workload's", reason: ReasonCodeNotAllowed, refDigst: appDigest, policy: proxyPolicy("shop", "web", "web",
			&v1alpha1.CodePolicy{Digests: []string{self}}, nil, unixSec)},
		{name: "another app build", reason: ReasonCodeNotAllowed, refDigst: appDigest, policy: proxyPolicy("shop", "web", "web",
			&v1alpha1.CodePolicy{Digests: []string{other}}, &v1alpha1.CodePolicy{Digests: []string{self}}, unixSec)},
		{name: "another proxy build", reason: ReasonCodeNotAllowed, refDigst: self, policy: proxyPolicy("shop", "web", "web",
			&v1alpha1.CodePolicy{Digests: []string{appDigest}}, &v1alpha1.CodePolicy{Digests: []string{other}}, unixSec)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer := selfPeer(t)
			app := captureApp(t, peer, child.Process.Pid)
			if err := app.Err(); err != nil {
				t.Fatalf("CaptureApp: %v", err)
			}
			if int64(app.UID) != uid {
				t.Errorf("app uid %d, want %d", app.UID, uid)
			}
			res, err := newUnix(t, tt.policy).Attest(t.Context(), Evidence{Requested: web, Unix: peer, App: app})
			if tt.reason != "" {
				e := wantReason(t, err, tt.reason)
				if e.Digest != tt.refDigst {
					t.Errorf("refusal names digest %q, want %q", e.Digest, tt.refDigst)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if want := (Result{Attestor: AttestorUnix, ID: web, Digest: appDigest, ProxyDigest: self}); res != want {
				t.Errorf("Result = %+v, want %+v", res, want)
			}
		})
	}
}

func TestUnixProxyCodeWithoutApp(t *testing.T) {
	self := selfDigest(t)
	uid := int64(os.Geteuid())
	web := workloadID("shop", "web")
	u := newUnix(t, proxyPolicy("shop", "web", "web", nil, &v1alpha1.CodePolicy{Digests: []string{digestOf("x")}}, &v1alpha1.UnixAttestation{UIDs: []int64{uid}}))
	_, err := u.Attest(t.Context(), Evidence{Requested: web, Unix: selfPeer(t)})
	if e := wantReason(t, err, ReasonCodeNotAllowed); e.Digest != self || !strings.Contains(e.Msg, "proxyCode") {
		t.Errorf("refusal %+v, want one naming %s and proxyCode", e, self)
	}
}

func TestCaptureAppRefusals(t *testing.T) {
	child := startChild(t, "sleep", "60")
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Skipf("no true: %v", err)
	}
	tests := []struct {
		name   string
		pid    int
		reason string
	}{
		{"no PID", 0, ReasonBadEvidence},
		{"the connected process itself", os.Getpid(), ReasonAppNotChild},
		{"not a child", 1, ReasonAppNotChild},
		{"this process's parent", os.Getppid(), ReasonAppNotChild},
		{"an app that exited", exited.Process.Pid, ReasonAppGone},
		{"a PID out of range", 1 << 30, ReasonBadEvidence},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer := selfPeer(t)
			wantReason(t, captureApp(t, peer, tt.pid).Err(), tt.reason)
		})
	}
	t.Run("a closed connection", func(t *testing.T) {
		peer := selfPeer(t)
		peer.Close()
		wantReason(t, captureApp(t, peer, child.Process.Pid).Err(), ReasonPeerGone)
	})
}

// TestAppThatExecuted: an app that executes another program after it was
// captured is refused.
func TestAppThatExecuted(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	lis, path := listen(t)
	cmd := startHelper(t, "exec", path) // a child of this process
	server, err := lis.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	peer := selfPeer(t)
	app := captureApp(t, peer, cmd.Process.Pid)
	if err := app.Err(); err != nil {
		t.Fatalf("CaptureApp: %v", err)
	}
	if _, err := server.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	exe := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/exe"
	deadline := time.Now().Add(10 * time.Second)
	for {
		target, err := os.Readlink(exe)
		if err == nil && strings.HasSuffix(target, "/sleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper did not execute sleep: %s -> %q, %v", exe, target, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	uid := int64(os.Geteuid())
	u := newUnix(t, newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{uid}}))
	_, err = u.Attest(t.Context(), Evidence{Requested: workloadID("shop", "web"), Unix: peer, App: app})
	wantReason(t, err, ReasonAppChanged)
}

// TestAppThatExited: an app that exits after it was captured, before it
// is measured, is refused.
func TestAppThatExited(t *testing.T) {
	child := startChild(t, "sleep", "60")
	peer := selfPeer(t)
	app := captureApp(t, peer, child.Process.Pid)
	if err := app.Err(); err != nil {
		t.Fatalf("CaptureApp: %v", err)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	u := newUnix(t)
	_, err := u.MeasureWorkload(peer, app)
	wantReason(t, err, ReasonAppGone)
}

// TestAppOfAnotherUser: the app's user must be admitted too.
func TestAppOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as another user")
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a process as nobody: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	peer := selfPeer(t)
	app := captureApp(t, peer, cmd.Process.Pid)
	if err := app.Err(); err != nil {
		t.Fatalf("CaptureApp: %v", err)
	}
	if app.UID != 65534 || app.GID != 65534 {
		t.Errorf("app uid %d gid %d, want 65534", app.UID, app.GID)
	}
	u := newUnix(t, newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{0}}))
	_, err := u.Attest(t.Context(), Evidence{Requested: workloadID("shop", "web"), Unix: peer, App: app})
	wantReason(t, err, ReasonUserNotAllowed)
}

func TestParseStatusAndPPID(t *testing.T) {
	status := "Name:\tsleep\nUid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\n"
	uid, gid, err := parseEffectiveIDs([]byte(status))
	if err != nil || uid != 1001 || gid != 2001 {
		t.Errorf("parseEffectiveIDs = %d, %d, %v; want 1001, 2001", uid, gid, err)
	}
	for _, bad := range []string{"", "Uid:\t1\n", "Uid:\t1 x\nGid:\t1 1\n", "Uid:\t1\nGid:\t1 1\n"} {
		if _, _, err := parseEffectiveIDs([]byte(bad)); err == nil {
			t.Errorf("parseEffectiveIDs(%q) succeeded", bad)
		}
	}
	ppid, err := parsePPID([]byte("1234 (a) b (c) S 42 1234 1234 0\n"))
	if err != nil || ppid != 42 {
		t.Errorf("parsePPID = %d, %v; want 42", ppid, err)
	}
	for _, bad := range []string{"", "1234 (x) S", "1234 (x) S notanumber"} {
		if _, err := parsePPID([]byte(bad)); err == nil {
			t.Errorf("parsePPID(%q) succeeded", bad)
		}
	}
}
