package authz

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func auditMode(p Policy) Policy { p.Mode = ModeAudit; return p }

func strictWP(p *WorkloadPolicy) *WorkloadPolicy { p.TLS.Mode = TLSStrict; return p }

// TestAuditMode covers the decision with and without the policies in
// AUDIT mode: they never change Decide, and DecideAuditMode decides as if
// they were enforced, either way.
func TestAuditMode(t *testing.T) {
	get := req(idWeb, "GET", "/orders")
	admin := req(idWeb, "GET", "/admin")
	other := req(idBatch, "GET", "/orders")
	type result struct {
		allow  bool
		code   Code
		policy string // AuditModePolicy of the audit-mode decision
	}
	cases := []struct {
		name      string
		p         *WorkloadPolicy
		r         *Request
		enforced  result // Decide
		auditMode result // DecideAuditMode
	}{
		{
			"ALLOW in audit mode would deny a caller the default allows",
			wp(DefaultAllowAuthenticated, auditMode(allowWeb)), other,
			result{true, CodeDefaultAllow, ""}, result{false, CodeNoAllowMatch, "shop/allow-web"},
		},
		{
			"ALLOW in audit mode matches: same decision",
			wp(DefaultAllowAuthenticated, auditMode(allowWeb)), get,
			result{true, CodeDefaultAllow, ""}, result{true, CodeAllowRule, "shop/allow-web"},
		},
		{
			"ALLOW in audit mode would allow what deny-all denies",
			wp(DefaultDenyAll, auditMode(allowWeb)), get,
			result{false, CodeDefaultDeny, ""}, result{true, CodeAllowRule, "shop/allow-web"},
		},
		{
			"ALLOW in audit mode would allow what no enforced ALLOW rule does",
			wp(DefaultDenyAll, allow("allow-batch", principals(idBatch)), auditMode(allowWeb)), get,
			result{false, CodeNoAllowMatch, ""}, result{true, CodeAllowRule, "shop/allow-web"},
		},
		{
			"DENY in audit mode would deny what an enforced ALLOW allows",
			wp(DefaultDenyAll, allowAll, auditMode(denyAdmin)), admin,
			result{true, CodeAllowRule, "shop/allow-all"}, result{false, CodeDenyRule, "shop/deny-admin"},
		},
		{
			"DENY in audit mode does not match",
			wp(DefaultDenyAll, allowAll, auditMode(denyAdmin)), get,
			result{true, CodeAllowRule, "shop/allow-all"}, result{true, CodeAllowRule, "shop/allow-all"},
		},
		{
			"enforced DENY still decides",
			wp(DefaultAllowAuthenticated, denyAdmin, auditMode(allowAll)), admin,
			result{false, CodeDenyRule, "shop/deny-admin"}, result{false, CodeDenyRule, "shop/deny-admin"},
		},
		{
			"several ALLOW policies in audit mode, none matches",
			wp(DefaultAllowAuthenticated, auditMode(allowWeb), auditMode(denyAdmin), auditMode(allow("allow-admin", principals(idAdmin)))), other,
			result{true, CodeDefaultAllow, ""}, result{false, CodeNoAllowMatch, "shop/allow-web,shop/allow-admin"},
		},
		{
			"plaintext on a STRICT port is denied either way",
			strictWP(wp(DefaultAllowAuthenticated, auditMode(allowAll))), req("", "GET", "/orders"),
			result{false, CodePlaintext, ""}, result{false, CodePlaintext, "shop/allow-all"},
		},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := mustCompile(t, c.p)
			if !e.HasAuditMode() {
				t.Fatal("HasAuditMode() = false, want true")
			}
			d := e.Decide(c.r)
			if d.Allow != c.enforced.allow || d.Code != c.enforced.code || d.Policy != c.enforced.policy {
				t.Errorf("Decide = %v %v %q, want %v %v %q", d.Allow, d.Code, d.Policy, c.enforced.allow, c.enforced.code, c.enforced.policy)
			}
			a := e.DecideAuditMode(c.r)
			if got := e.AuditModePolicy(&a); a.Allow != c.auditMode.allow || a.Code != c.auditMode.code || got != c.auditMode.policy {
				t.Errorf("DecideAuditMode = %v %v %q, want %v %v %q", a.Allow, a.Code, got, c.auditMode.allow, c.auditMode.code, c.auditMode.policy)
			}
			if a.Allow != d.Allow && !slices.Contains(e.AuditModeLabels(), e.AuditModePolicy(&a)) {
				t.Errorf("AuditModePolicy = %q, not among AuditModeLabels %q", e.AuditModePolicy(&a), e.AuditModeLabels())
			}
			x := e.Explain(c.r)
			if x.Decision.Allow != d.Allow || x.Decision.Code != d.Code {
				t.Errorf("Explain decided %v, Decide %v", x.Decision, d)
			}
			switch differ := a.Allow != d.Allow; {
			case differ && x.AuditMode == nil:
				t.Error("Explain: AuditMode is nil, but the decisions differ")
			case differ && (x.AuditMode.Decision.Allow != a.Allow || x.AuditMode.Policy != c.auditMode.policy):
				t.Errorf("Explain: AuditMode = %v (%s), want allow=%v (%s)", x.AuditMode.Decision, x.AuditMode.Policy, a.Allow, c.auditMode.policy)
			case !differ && x.AuditMode != nil:
				t.Errorf("Explain: AuditMode = %v, but the decisions agree", x.AuditMode.Decision)
			}
		})
	}
}

// TestAuditModeAbsent: a workload without policies in AUDIT mode has one
// engine, and DecideAuditMode is Decide.
func TestAuditModeAbsent(t *testing.T) {
	e := mustCompile(t, wp(DefaultAllowAuthenticated, allowWeb, denyAdmin))
	if e.HasAuditMode() || e.AuditModePolicies() != nil {
		t.Fatalf("HasAuditMode() = true, policies %v; want none", e.AuditModePolicies())
	}
	for _, r := range []*Request{req(idWeb, "GET", "/orders"), req(idBatch, "GET", "/orders"), req(idWeb, "GET", "/admin")} {
		if d, a := e.Decide(r), e.DecideAuditMode(r); d != a {
			t.Errorf("%s %s: DecideAuditMode = %v, Decide = %v", r.Source, r.Path, a, d)
		}
		if x := e.Explain(r); x.AuditMode != nil {
			t.Errorf("Explain: AuditMode = %v, want nil", x.AuditMode.Decision)
		}
	}
	var nilEngine *Engine
	if nilEngine.HasAuditMode() || nilEngine.DecideAuditMode(req(idWeb, "GET", "/")).Allow {
		t.Error("a nil Engine has no audit mode and denies")
	}
}

// TestAuditModeChecked: a policy in AUDIT mode is checked as one enforced,
// and an unknown mode is refused.
func TestAuditModeChecked(t *testing.T) {
	bad := auditMode(allow("bad", paths("/a//b")))
	_, err := Compile(wp(DefaultDenyAll, allowWeb, bad))
	var fe FieldErrors
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "policies[1].rules[0].to[0].paths[0]") {
		t.Errorf("Compile with an invalid policy in AUDIT mode: %v, want an error naming policies[1].rules[0].to[0].paths[0]", err)
	}
	unknown := allowWeb
	unknown.Mode = 7
	if _, err := Compile(wp(DefaultDenyAll, unknown)); err == nil || !strings.Contains(err.Error(), "policies[0].mode: must be ENFORCE or AUDIT") {
		t.Errorf("Compile with mode 7: %v, want policies[0].mode refused", err)
	}
	dup := auditMode(allowWeb)
	if _, err := Compile(wp(DefaultDenyAll, allowWeb, dup)); err == nil || !strings.Contains(err.Error(), "duplicate policy shop/allow-web") {
		t.Errorf("Compile with a policy enforced and in AUDIT mode under one name: %v, want duplicate", err)
	}
	for _, s := range []string{"", "ENFORCE", "AUDIT"} {
		if m, ok := ParseMode(s); !ok || (s != "" && m.String() != s) {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, ok)
		}
	}
	if _, ok := ParseMode("audit"); ok {
		t.Error(`ParseMode("audit") ok, want refused: modes are upper case`)
	}
}

// TestAuditModeExplainText: Explain prints the decision with the policies
// in AUDIT mode in force after the one made, with the checks they add.
func TestAuditModeExplainText(t *testing.T) {
	e := mustCompile(t, wp(DefaultAllowAuthenticated, auditMode(allowWeb)))
	got := e.Explain(req(idBatch, "GET", "/orders")).String()
	want := "allow: allowed by the default allow-authenticated (test)\n" +
		"  + request: HTTP GET /orders host \"orders.shop\" port 8080 from " + idBatch + " (10.1.2.3)\n" +
		"  + tls: port 8080 is PERMISSIVE (test)\n" +
		"  + default: allowed by the default allow-authenticated (test)\n" +
		"in AUDIT mode, shop/allow-web would make it deny: no ALLOW rule matched\n" +
		"  - allow shop/allow-web rules[0]: from[0].principals: " + idBatch + " is not listed\n" +
		"  - allow: no ALLOW rule matched\n"
	if got != want {
		t.Errorf("Explain:\n%s\nwant:\n%s", got, want)
	}
}

// TestAuditModeNoAllocs: DecideAuditMode allocates no more than Decide.
func TestAuditModeNoAllocs(t *testing.T) {
	e := mustCompile(t, wp(DefaultAllowAuthenticated, allowAll, auditMode(denyAdmin), auditMode(allowWeb)))
	r := req(idBatch, "GET", "/admin")
	if n := testing.AllocsPerRun(100, func() { _ = e.DecideAuditMode(r) }); n != 0 {
		t.Errorf("DecideAuditMode allocates %v times, want 0", n)
	}
}
