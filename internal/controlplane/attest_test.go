//go:build linux

package controlplane

import (
	"bytes"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/attest"
	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/codedigest"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// selfDigest is the digest of this test binary, the process on the other
// end of every Unix-socket connection these tests make.
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

const otherDigest = "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"

// attestationPolicy lets this process's user claim shop/<sa> over the
// socket when it runs one of digests.
func attestationPolicy(sa string, digests ...string) v1alpha1.WorkloadAttestationPolicy {
	return v1alpha1.WorkloadAttestationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: sa},
		Spec: v1alpha1.WorkloadAttestationPolicySpec{
			ServiceAccount: sa,
			Code:           &v1alpha1.CodePolicy{Digests: digests},
			Unix:           &v1alpha1.UnixAttestation{UIDs: []int64{int64(os.Geteuid())}},
		},
	}
}

func newUnixEnv(t *testing.T, ps ...v1alpha1.WorkloadAttestationPolicy) (*env, *attest.Policies, *syncBuffer) {
	t.Helper()
	policies := attest.NewPolicies(td)
	if err := policies.Set(ps); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	e := newEnvWith(t, envOpts{unix: true, policies: policies, logger: slog.New(slog.NewTextHandler(logs, nil))})
	return e, policies, logs
}

func digestOf(t *testing.T, svid *x509svid.SVID) string {
	t.Helper()
	d, ok := codedigest.FromCertificate(svid.Certificates[0])
	if !ok {
		t.Fatal("the certificate records no code digest")
	}
	return d
}

// wantRefused checks the status code of err and that the certify metric
// counted one more refusal for reason while run ran.
func wantRefused(t *testing.T, e *env, reason string, code codes.Code, run func() error) error {
	t.Helper()
	before := metricValue(t, e.reg, "rampart_controller_certify_total", refused(reason))
	err := run()
	wantCode(t, err, code)
	if got := metricValue(t, e.reg, "rampart_controller_certify_total", refused(reason)) - before; got != 1 {
		t.Errorf("refused{reason=%q} grew by %v, want 1 (%v)", reason, got, err)
	}
	return err
}

func TestCertifyOverUnixSocket(t *testing.T) {
	self := selfDigest(t)
	web := workloadID("shop", "web")
	e, policies, logs := newUnixEnv(t, attestationPolicy("web", self))

	svid, err := certify(t, e.dialUnix(t, nil), web, "")
	if err != nil {
		t.Fatalf("Certify over the Unix socket: %v", err)
	}
	if svid.ID != web {
		t.Errorf("issued %s, want %s", svid.ID, web)
	}
	if got := digestOf(t, svid); got != self {
		t.Errorf("certificate records %s, want this process's %s", got, self)
	}
	if !strings.Contains(logs.String(), "digest="+self) || !strings.Contains(logs.String(), "attestor=unix") {
		t.Errorf("issue log does not name the attestor and digest:\n%s", logs)
	}

	t.Run("renewal over the socket attests again", func(t *testing.T) {
		renewed, err := certify(t, e.dialUnix(t, svid), web, "")
		if err != nil {
			t.Fatalf("renewal: %v", err)
		}
		if got := digestOf(t, renewed); got != self {
			t.Errorf("renewed certificate records %s, want %s", got, self)
		}
	})
	t.Run("renewal over TCP carries the recorded digest", func(t *testing.T) {
		renewed, err := certify(t, e.dial(t, svid), web, "")
		if err != nil {
			t.Fatalf("renewal: %v", err)
		}
		if got := digestOf(t, renewed); got != self {
			t.Errorf("renewed certificate records %s, want %s", got, self)
		}
	})
	t.Run("once the code is no longer admitted, renewal is refused", func(t *testing.T) {
		if err := policies.Set([]v1alpha1.WorkloadAttestationPolicy{attestationPolicy("web", otherDigest)}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := policies.Set([]v1alpha1.WorkloadAttestationPolicy{attestationPolicy("web", self)}); err != nil {
				t.Fatal(err)
			}
		}()
		wantRefused(t, e, attest.ReasonCodeNotAllowed, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dialUnix(t, svid), web, "")
			return err
		})
		wantRefused(t, e, attest.ReasonCodeNotAllowed, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dial(t, svid), web, "")
			return err
		})
	})
	t.Run("a certificate for other code is not renewed for this code", func(t *testing.T) {
		key, csr := newCSR(t, web)
		chain, err := e.ca.SignCSRWith(csr, web, time.Hour, ca.Attested{CodeDigest: otherDigest})
		if err != nil {
			t.Fatal(err)
		}
		other := &x509svid.SVID{ID: web, Certificates: chain, PrivateKey: key}
		wantRefused(t, e, attest.ReasonCodeChanged, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dialUnix(t, other), web, "")
			return err
		})
	})
}

func TestCertifyOverUnixSocketRefusals(t *testing.T) {
	self := selfDigest(t)
	web := workloadID("shop", "web")
	e, _, logs := newUnixEnv(t, attestationPolicy("web", otherDigest), attestationPolicy("api", self))

	t.Run("code not admitted", func(t *testing.T) {
		err := wantRefused(t, e, attest.ReasonCodeNotAllowed, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dialUnix(t, nil), web, "")
			return err
		})
		if msg := status.Convert(err).Message(); !strings.Contains(msg, self) {
			t.Errorf("message %q does not name the refused digest", msg)
		}
		var line string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "certify refused") && strings.Contains(l, "reason=code_not_allowed") {
				line = l
			}
		}
		for _, want := range []string{"digest=" + self, "spiffe_id=" + web.String(), "attestor=unix", "pid="} {
			if !strings.Contains(line, want) {
				t.Errorf("refusal log line %q lacks %q", line, want)
			}
		}
	})
	t.Run("no policy for the identity", func(t *testing.T) {
		wantRefused(t, e, attest.ReasonNoPolicy, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dialUnix(t, nil), workloadID("shop", "admin"), "")
			return err
		})
	})
	t.Run("the controller's identity", func(t *testing.T) {
		wantRefused(t, e, attest.ReasonReservedIdentity, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dialUnix(t, nil), identity.ControllerID(td), "")
			return err
		})
	})
	t.Run("no token over TCP", func(t *testing.T) {
		wantRefused(t, e, CertifyNoToken, codes.Unauthenticated, func() error {
			_, err := certify(t, e.dial(t, nil), workloadID("shop", "api"), "")
			return err
		})
	})
	t.Run("a join token over TCP attests no code", func(t *testing.T) {
		api := workloadID("shop", "api")
		wantRefused(t, e, attest.ReasonCodeNotAttested, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dial(t, nil), api, e.token(t, api))
			return err
		})
	})
	t.Run("a join token over the socket: the code is measured", func(t *testing.T) {
		api := workloadID("shop", "api")
		svid, err := certify(t, e.dialUnix(t, nil), api, e.token(t, api))
		if err != nil {
			t.Fatal(err)
		}
		if got := digestOf(t, svid); got != self {
			t.Errorf("certificate records %s, want %s", got, self)
		}
		wantRefused(t, e, attest.ReasonCodeNotAllowed, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dialUnix(t, nil), web, e.token(t, web))
			return err
		})
	})
	t.Run("a join token for the controller's identity", func(t *testing.T) {
		ctrl := identity.ControllerID(td)
		wantRefused(t, e, attest.ReasonReservedIdentity, codes.PermissionDenied, func() error {
			_, err := certify(t, e.dial(t, nil), ctrl, e.token(t, ctrl))
			return err
		})
	})
}

func TestWatchOverUnixSocket(t *testing.T) {
	self := selfDigest(t)
	web := workloadID("shop", "web")
	e, _, _ := newUnixEnv(t, attestationPolicy("web", self))
	svid, err := certify(t, e.dialUnix(t, nil), web, "")
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := watch(t, e.dialUnix(t, svid), &meshv1.WatchRequest{Workload: &meshv1.Workload{Name: "web-1", TunnelAddress: "127.0.0.1:15008"}})
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Watch over the Unix socket: %v", err)
	}
}

// TestAttestReasonsHaveCodes: every reason attest may give maps to a
// status and is a declared metric label.
func TestAttestReasonsHaveCodes(t *testing.T) {
	for _, r := range attest.Reasons() {
		if _, ok := attestCodes[r]; !ok {
			t.Errorf("attest reason %s has no gRPC code", r)
		}
		found := false
		for _, known := range certifyReasons {
			found = found || known == r
		}
		if !found {
			t.Errorf("attest reason %s is not a certify metric reason", r)
		}
	}
}
