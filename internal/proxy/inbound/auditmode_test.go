package inbound

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampart-mesh/rampart/internal/authz"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
)

// recommendedPolicy is a workload with default def, and an ALLOW policy
// in AUDIT mode that lets the caller GET /orders/**.
func recommendedPolicy(def authz.DefaultMode) *authz.WorkloadPolicy {
	return &authz.WorkloadPolicy{
		Namespace: "shop", Default: def,
		TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
		Policies: []authz.Policy{
			{Namespace: "shop", Name: "recommended", Action: authz.ActionAllow, Mode: authz.ModeAudit, Rules: []authz.Rule{
				{From: []authz.Source{{Principals: []string{caller.String()}}},
					To: []authz.Operation{{Methods: []string{"GET"}, Paths: []string{"/orders/**"}}}},
			}},
		},
	}
}

// TestInboundAuditModeWouldDeny: a policy in AUDIT mode changes no
// decision; the requests it would deny are counted and logged.
func TestInboundAuditModeWouldDeny(t *testing.T) {
	app := newApp(t, false)
	m := metrics.New()
	logs, log := newLogLines()
	h, _ := New(Config{Metrics: m, Logger: log})
	ports := []*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}}
	h.SetConfig(ports, compile(t, recommendedPolicy(authz.DefaultAllowAuthenticated), nil))

	for _, uri := range []string{"/orders/1", "/admin/users", "/orders/2", "/admin/users"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, tunnelRequest("GET", uri, "orders", app.port, false))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d, want 200: a policy in AUDIT mode must not deny", uri, rec.Code)
		}
	}
	if n := app.hits.Load(); n != 4 {
		t.Fatalf("the app got %d requests, want 4", n)
	}
	if got := testutil.ToFloat64(m.AuthzAuditMode.WithLabelValues(wouldDeny, "shop/recommended")); got != 2 {
		t.Errorf("would_deny counted %v times, want 2", got)
	}
	if got := testutil.ToFloat64(m.AuthzAuditMode.WithLabelValues(wouldAllow, "shop/recommended")); got != 0 {
		t.Errorf("would_allow counted %v times, want 0", got)
	}
	if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues("allow", "default_allow", "", "")); got != 4 {
		t.Errorf("default_allow decisions counted %v times, want 4", got)
	}
	lines := logs.lines(t, "AUDIT mode would change the decision")
	if len(lines) != 2 {
		t.Fatalf("%d lines logged, want 2: %v", len(lines), lines)
	}
	l := lines[0]
	for k, want := range map[string]any{
		"peer": caller.String(), "method": "GET", "path": "/admin/users", "decision": "allow",
		"result": wouldDeny, "policy": "shop/recommended", "reason": "no ALLOW rule matched",
	} {
		if l[k] != want {
			t.Errorf("logged %s=%v, want %v (line %v)", k, l[k], want, l)
		}
	}
	if id, _ := l["decision_id"].(string); len(id) != 12 {
		t.Errorf("logged decision_id %q, want 12 hex digits", id)
	}

	// Without the policy in AUDIT mode, its series go.
	h.SetConfig(ports, allowAuthenticated(t))
	if n := testutil.CollectAndCount(m.AuthzAuditMode); n != 0 {
		t.Errorf("%d audit-mode series after the policy went, want 0", n)
	}
}

// TestInboundAuditModeWouldAllow: a request denied now that the policy in
// AUDIT mode would allow is counted, and logged with the decision ID of
// the refusal.
func TestInboundAuditModeWouldAllow(t *testing.T) {
	app := newApp(t, false)
	m := metrics.New()
	logs, log := newLogLines()
	h, _ := New(Config{Metrics: m, Logger: log})
	ports := []*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}}
	h.SetConfig(ports, compile(t, recommendedPolicy(authz.DefaultDenyAll), nil))

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, tunnelRequest("GET", "/orders/1", "orders", app.port, false))
	id := checkRefusal(t, rec, http.StatusForbidden, "")
	if got := testutil.ToFloat64(m.AuthzAuditMode.WithLabelValues(wouldAllow, "shop/recommended")); got != 1 {
		t.Errorf("would_allow counted %v times, want 1", got)
	}
	var found bool
	for _, l := range logs.lines(t, "AUDIT mode would change the decision") {
		if l["decision_id"] == id && l["result"] == wouldAllow && l["reason"] == "ALLOW policy shop/recommended rules[0] matched" {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit-mode line with the refusal's decision ID %s", id)
	}
	// Denied either way: nothing to record.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, tunnelRequest("GET", "/admin", "orders", app.port, false))
	checkRefusal(t, rec, http.StatusForbidden, "")
	if n := testutil.CollectAndCount(m.AuthzAuditMode); n != 1 {
		t.Errorf("%d audit-mode series, want 1 (would_allow shop/recommended)", n)
	}
	if got := testutil.ToFloat64(m.AuthzAuditMode.WithLabelValues(wouldAllow, "shop/recommended")); got != 1 {
		t.Errorf("would_allow counted %v times after a request denied either way, want 1", got)
	}
}

// TestAuditModeAgreeingCheckDoesNotAllocate: with policies in AUDIT mode,
// an allowed request that they would allow too costs no allocation.
func TestAuditModeAgreeingCheckDoesNotAllocate(t *testing.T) {
	h, _ := New(Config{Metrics: metrics.New()})
	h.SetConfig([]*meshv1.InboundPort{{Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		compile(t, recommendedPolicy(authz.DefaultAllowAuthenticated), nil))
	st := h.state.Load()
	allocs := testing.AllocsPerRun(100, func() {
		r := authz.Request{
			Source: caller.String(), Authenticated: true, SourceIP: remoteIP("10.0.0.7:4000"),
			Port: 8080, Protocol: authz.ProtocolHTTP, Method: "GET", Path: "/orders/1", Host: "orders",
			Time: time.Now(),
		}
		if v := h.check(st, &r); v.status != 0 {
			t.Fatalf("refused: %s", v.message)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per allowed request", allocs)
	}
}
