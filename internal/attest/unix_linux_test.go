//go:build linux

package attest

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/codedigest"
	"github.com/rampart-mesh/rampart/internal/identity"
)

// The test binary doubles as the peer process of the tests that need one
// other than itself.
const helperEnv = "RAMPART_ATTEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		helper(mode, os.Getenv(helperEnv+"_SOCKET"))
		return
	}
	os.Exit(m.Run())
}

// helper connects to socket and then exits ("exit") or, once told,
// executes sleep ("exec").
func helper(mode, socket string) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		os.Exit(2)
	}
	if mode == "exit" {
		os.Exit(0)
	}
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		os.Exit(3)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		os.Exit(4)
	}
	_ = syscall.Exec(sleep, []string{"sleep", "30"}, os.Environ())
	os.Exit(5)
}

// listen returns a Unix listener at a short path (socket paths are limited
// to 107 bytes, which t.TempDir can exceed).
func listen(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "attest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis, path
}

// selfPeer connects to a fresh socket from this process and captures the
// peer of the accepted connection: this very process.
func selfPeer(t *testing.T) *UnixPeer {
	t.Helper()
	lis, path := listen(t)
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := lis.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	peer := CaptureUnixPeer(server)
	t.Cleanup(func() { peer.Close() })
	if err := peer.Err(); err != nil {
		t.Fatalf("CaptureUnixPeer: %v", err)
	}
	return peer
}

// selfDigest hashes this process's executable independently of the code
// under test.
func selfDigest(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return codedigest.Format(sum)
}

func newUnix(t *testing.T, ps ...v1alpha1.WorkloadAttestationPolicy) *Unix {
	t.Helper()
	u, err := NewUnix(UnixConfig{TrustDomain: td, Policies: setPolicies(t, ps...)})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestUnixAttestsItsPeer(t *testing.T) {
	self := selfDigest(t)
	uid, gid := int64(os.Geteuid()), int64(os.Getegid())
	web := workloadID("shop", "web")
	admitSelf := newPolicy("shop", "web", "web", &v1alpha1.CodePolicy{Digests: []string{self}}, &v1alpha1.UnixAttestation{UIDs: []int64{uid}, GIDs: []int64{gid}})

	for _, pidfd := range []bool{true, false} {
		name := "SO_PEERPIDFD"
		if !pidfd {
			name = "pidfd_open fallback"
		}
		t.Run(name, func(t *testing.T) {
			usePeerPIDFD = pidfd
			t.Cleanup(func() { usePeerPIDFD = true })
			peer := selfPeer(t)
			if peer.PID != int32(os.Getpid()) || int64(peer.UID) != uid || int64(peer.GID) != gid {
				t.Errorf("peer pid %d uid %d gid %d, want %d %d %d", peer.PID, peer.UID, peer.GID, os.Getpid(), uid, gid)
			}
			res, err := newUnix(t, admitSelf).Attest(t.Context(), Evidence{Requested: web, Unix: peer})
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if want := (Result{Attestor: AttestorUnix, ID: web, Digest: self}); res != want {
				t.Errorf("Result = %+v, want %+v", res, want)
			}
		})
	}
}

func TestUnixRefusals(t *testing.T) {
	self := selfDigest(t)
	uid := int64(os.Geteuid())
	web := workloadID("shop", "web")
	other := digestOf("another build")
	tests := []struct {
		name      string
		policies  []v1alpha1.WorkloadAttestationPolicy
		requested string
		reason    string
	}{
		{name: "another digest", reason: ReasonCodeNotAllowed, policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", &v1alpha1.CodePolicy{Digests: []string{other}}, &v1alpha1.UnixAttestation{UIDs: []int64{uid}}),
		}},
		{name: "a namespace policy on code refuses what the identity's own admits", reason: ReasonCodeNotAllowed, policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", &v1alpha1.CodePolicy{Digests: []string{self}}, &v1alpha1.UnixAttestation{UIDs: []int64{uid}}),
			newPolicy("shop", "all", "", &v1alpha1.CodePolicy{Digests: []string{other}}, nil),
		}},
		{name: "another user", reason: ReasonUserNotAllowed, policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", &v1alpha1.CodePolicy{Digests: []string{self}}, &v1alpha1.UnixAttestation{UIDs: []int64{uid + 1}}),
		}},
		{name: "no unix section", reason: ReasonNoPolicy, policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", &v1alpha1.CodePolicy{Digests: []string{self}}, nil),
		}},
		{name: "another identity", reason: ReasonNoPolicy, requested: "spiffe://example.org/ns/shop/sa/admin", policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{uid}}),
		}},
		{name: "another trust domain", reason: ReasonNoPolicy, requested: "spiffe://other.org/ns/shop/sa/web", policies: []v1alpha1.WorkloadAttestationPolicy{
			newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{uid}}),
		}},
		{name: "not a workload identity", reason: ReasonNoPolicy, requested: "spiffe://example.org/web"},
		{name: "the controller", reason: ReasonReservedIdentity, requested: identity.ControllerID(td).String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requested := web
			if tt.requested != "" {
				requested = spiffeidMust(t, tt.requested)
			}
			_, err := newUnix(t, tt.policies...).Attest(t.Context(), Evidence{Requested: requested, Unix: selfPeer(t)})
			e := wantReason(t, err, tt.reason)
			if tt.reason == ReasonCodeNotAllowed && e.Digest != self {
				t.Errorf("refusal names digest %q, want this process's %q", e.Digest, self)
			}
		})
	}
	t.Run("no peer", func(t *testing.T) {
		_, err := newUnix(t).Attest(t.Context(), Evidence{Requested: web})
		wantReason(t, err, ReasonBadEvidence)
	})
}

// TestUnixSignature signs this test binary's digest with a generated key
// and writes the signature beside the binary, as <binary>.sig.
func TestUnixSignature(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	sigPath := exe + ".sig"
	if _, err := os.Lstat(sigPath); err == nil {
		t.Skipf("%s exists already; not overwriting it", sigPath)
	}
	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(sigPath, data, 0o644); err != nil {
			t.Skipf("cannot write a signature beside the test binary: %v", err)
		}
	}
	t.Cleanup(func() { os.Remove(sigPath) })

	self := selfDigest(t)
	release, intruder := newEd25519Signer(t), newEd25519Signer(t)
	ci := newP256Signer(t)
	web := workloadID("shop", "web")
	u := newUnix(t, newPolicy("shop", "web", "web",
		&v1alpha1.CodePolicy{Signers: []v1alpha1.CodeSigner{{Name: "release", PublicKey: release.pem}, {Name: "ci", PublicKey: ci.pem}}},
		&v1alpha1.UnixAttestation{UIDs: []int64{int64(os.Geteuid())}}))
	attest := func() error {
		t.Helper()
		res, err := u.Attest(t.Context(), Evidence{Requested: web, Unix: selfPeer(t)})
		if err == nil && res.Digest != self {
			t.Errorf("attested digest %q, want %q", res.Digest, self)
		}
		return err
	}

	write([]byte(base64.StdEncoding.EncodeToString(release.sign(self)) + "\n"))
	if err := attest(); err != nil {
		t.Errorf("base64 Ed25519 signature: %v", err)
	}
	write(ci.sign(self))
	if err := attest(); err != nil {
		t.Errorf("raw ECDSA P-256 signature: %v", err)
	}
	write(intruder.sign(self))
	wantReason(t, attest(), ReasonCodeNotAllowed)
	write(release.sign(digestOf("the build that was signed")))
	wantReason(t, attest(), ReasonCodeNotAllowed)
	if err := os.Remove(sigPath); err != nil {
		t.Fatal(err)
	}
	e := wantReason(t, attest(), ReasonCodeNotAllowed)
	if !strings.Contains(e.Error(), ".sig") {
		t.Errorf("refusal %q does not name the missing signature file", e.Error())
	}
	// A FIFO in its place does not block the controller.
	if err := syscall.Mkfifo(sigPath, 0o644); err != nil {
		t.Fatal(err)
	}
	wantReason(t, attest(), ReasonCodeNotAllowed)
}

// startHelper runs this test binary as a peer in the given mode.
func startHelper(t *testing.T, mode, socket string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperEnv+"_SOCKET="+socket)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func TestUnixPeerThatExited(t *testing.T) {
	lis, path := listen(t)
	cmd := startHelper(t, "exit", path)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	server, err := lis.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	peer := CaptureUnixPeer(server)
	defer peer.Close()
	u := newUnix(t, newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{int64(os.Geteuid())}}))
	_, err = u.Attest(t.Context(), Evidence{Requested: workloadID("shop", "web"), Unix: peer})
	wantReason(t, err, ReasonPeerGone)
}

// TestUnixPeerThatExecuted: a process that connects and then executes
// another program is refused, whatever that program is.
func TestUnixPeerThatExecuted(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	lis, path := listen(t)
	cmd := startHelper(t, "exec", path)
	server, err := lis.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	peer := CaptureUnixPeer(server)
	defer peer.Close()
	if err := peer.Err(); err != nil {
		t.Fatalf("CaptureUnixPeer: %v", err)
	}
	if peer.PID != int32(cmd.Process.Pid) {
		t.Fatalf("peer PID %d, want the helper's %d", peer.PID, cmd.Process.Pid)
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
	// Any code at all would be admitted: the refusal is for the exec.
	u := newUnix(t, newPolicy("shop", "web", "web", nil, &v1alpha1.UnixAttestation{UIDs: []int64{int64(os.Geteuid())}}))
	_, err = u.Attest(t.Context(), Evidence{Requested: workloadID("shop", "web"), Unix: peer})
	wantReason(t, err, ReasonPeerChanged)
}

func TestUnixPeerClose(t *testing.T) {
	peer := selfPeer(t)
	u := newUnix(t)
	if _, err := u.Measure(peer); err != nil {
		t.Fatalf("Measure: %v", err)
	}
	if err := peer.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := peer.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := u.Measure(peer)
	wantReason(t, err, ReasonPeerGone)
}

func TestUnixMaxExecutableSize(t *testing.T) {
	u, err := NewUnix(UnixConfig{TrustDomain: td, Policies: NewPolicies(td), MaxExecutableSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	_, err = u.Measure(selfPeer(t))
	wantReason(t, err, ReasonPeerUnreadable)
}

func TestParseStartTime(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 50\n"
	got, err := parseStartTime([]byte(stat))
	if err != nil || got != "987654" {
		t.Fatalf("parseStartTime = %q, %v; want 987654", got, err)
	}
	for _, bad := range []string{"", "1234 no parens", "1234 (x) S 1 2"} {
		if _, err := parseStartTime([]byte(bad)); err == nil {
			t.Errorf("parseStartTime(%q) succeeded", bad)
		}
	}
}

func TestUnixConfigValidate(t *testing.T) {
	if _, err := NewUnix(UnixConfig{}); err == nil {
		t.Error("NewUnix with no trust domain or policies succeeded")
	}
	if _, err := NewUnix(UnixConfig{TrustDomain: td, Policies: NewPolicies(td), MaxExecutableSize: -1}); err == nil {
		t.Error("NewUnix with a negative size bound succeeded")
	}
}

// TestPidfdExitedRetriesEINTR: a poll that a signal interrupts says nothing
// about the process; the Go runtime's own preemption signals cause it.
func TestPidfdExitedRetriesEINTR(t *testing.T) {
	defer func(p func([]unix.PollFd, int) (int, error)) { pollPidfd = p }(pollPidfd)
	calls := 0
	pollPidfd = func(fds []unix.PollFd, timeout int) (int, error) {
		calls++
		if calls < 3 {
			return -1, unix.EINTR
		}
		return 0, nil
	}
	if exited, err := pidfdExited(3); exited || err != nil || calls != 3 {
		t.Fatalf("pidfdExited = %v, %v after %d polls; want a live process after retrying EINTR", exited, err, calls)
	}
	pollPidfd = func(fds []unix.PollFd, timeout int) (int, error) {
		fds[0].Revents = unix.POLLIN
		return 1, nil
	}
	if exited, err := pidfdExited(3); !exited || err != nil {
		t.Fatalf("pidfdExited = %v, %v; want exited for a readable pidfd", exited, err)
	}
	pollPidfd = func(fds []unix.PollFd, timeout int) (int, error) { return -1, unix.EBADF }
	if _, err := pidfdExited(3); err == nil {
		t.Fatal("pidfdExited hid a poll error")
	}
}
