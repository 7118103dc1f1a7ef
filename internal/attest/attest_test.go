package attest

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/identity"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func workloadID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ns, "sa", sa)
}

// wantReason fails unless err is an *Error with the given reason.
func wantReason(t *testing.T, err error, reason string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want an *attest.Error with reason %s", err, reason)
	}
	if e.Reason != reason {
		t.Fatalf("reason %s (%v), want %s", e.Reason, err, reason)
	}
	if Reason(err) != reason {
		t.Fatalf("Reason(err) = %s, want %s", Reason(err), reason)
	}
	return e
}

func newPolicy(ns, name, sa string, code *v1alpha1.CodePolicy, unix *v1alpha1.UnixAttestation) v1alpha1.WorkloadAttestationPolicy {
	return v1alpha1.WorkloadAttestationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.WorkloadAttestationPolicySpec{ServiceAccount: sa, Code: code, Unix: unix},
	}
}

func setPolicies(t *testing.T, ps ...v1alpha1.WorkloadAttestationPolicy) *Policies {
	t.Helper()
	p := NewPolicies(td)
	if err := p.Set(ps); err != nil {
		t.Fatalf("Set: %v", err)
	}
	return p
}

func TestReasonsAreClosed(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("reason %s listed twice", r)
		}
		seen[r] = true
	}
	if got := Reason(errors.New("plain")); got != ReasonInternal {
		t.Errorf("Reason(plain error) = %s, want internal", got)
	}
	if got := Reason(&Error{Reason: "made_up"}); got != ReasonInternal {
		t.Errorf("Reason(unknown reason) = %s, want internal", got)
	}
}

func TestCheckIdentity(t *testing.T) {
	wantReason(t, CheckIdentity(td, identity.ControllerID(td)), ReasonReservedIdentity)
	if err := CheckIdentity(td, workloadID("shop", "web")); err != nil {
		t.Errorf("CheckIdentity(workload) = %v", err)
	}
}

// clock is a settable clock for the token store.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func TestJoinToken(t *testing.T) {
	clk := &clock{t: time.Now()}
	store, err := identity.OpenTokenStore(filepath.Join(t.TempDir(), "tokens.json"), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	id := workloadID("shop", "web")
	tok, err := store.Create(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expiring, err := store.Create(id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a := JoinToken{Tokens: store}

	// The requested identity is not the token's business: the CA compares.
	res, err := a.Attest(t.Context(), Evidence{JoinToken: tok, Requested: workloadID("shop", "admin")})
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if res != (Result{Attestor: AttestorJoinToken, ID: id}) {
		t.Errorf("Result = %+v", res)
	}

	tests := []struct {
		name, token, reason string
		before              func()
	}{
		{name: "none", token: "", reason: ReasonNoToken},
		{name: "used", token: tok, reason: ReasonUsedToken},
		{name: "malformed", token: "rjt.nope", reason: ReasonBadToken},
		{name: "unknown", token: "rjt.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", reason: ReasonUnknownToken},
		{name: "expired", token: expiring, reason: ReasonExpiredToken, before: func() { clk.t = clk.t.Add(2 * time.Minute) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			_, err := a.Attest(t.Context(), Evidence{JoinToken: tt.token})
			wantReason(t, err, tt.reason)
		})
	}
}

func spiffeidMust(t *testing.T, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
