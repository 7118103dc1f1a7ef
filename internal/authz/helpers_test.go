package authz

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

const (
	td        = "spiffe://rampart.test"
	idWeb     = td + "/ns/shop/sa/web"
	idAdmin   = td + "/ns/shop/sa/admin"
	idBatch   = td + "/ns/batch/sa/cron"
	idOddPath = td + "/workload/legacy" // verified, but no namespace
)

var (
	ipClient = netip.MustParseAddr("10.1.2.3")
	t0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// req is an HTTP request from id (mTLS; "" means plaintext).
func req(id, method, path string) *Request {
	return &Request{
		Source:        id,
		Authenticated: id != "",
		SourceIP:      ipClient,
		Port:          8080,
		Protocol:      ProtocolHTTP,
		Method:        method,
		Path:          path,
		Host:          "orders.shop",
		Time:          t0,
	}
}

// tcp is an opaque TCP connection from id to port.
func tcp(id string, port uint16) *Request {
	return &Request{Source: id, Authenticated: id != "", SourceIP: ipClient, Port: port, Protocol: ProtocolTCP, Time: t0}
}

func with(r *Request, f func(*Request)) *Request { f(r); return r }

// wp is a workload policy for namespace shop with the given default,
// PERMISSIVE unless a test says otherwise (so that plaintext reaches the
// policies), and these policies.
func wp(def DefaultMode, policies ...Policy) *WorkloadPolicy {
	return &WorkloadPolicy{
		Namespace:     "shop",
		Default:       def,
		DefaultSource: "test",
		TLS:           TLSPolicy{Mode: TLSPermissive, Source: "test"},
		Policies:      policies,
	}
}

func allow(name string, rules ...Rule) Policy {
	return Policy{Namespace: "shop", Name: name, Action: ActionAllow, Rules: rules}
}

func denyP(name string, rules ...Rule) Policy {
	return Policy{Namespace: "shop", Name: name, Action: ActionDeny, Rules: rules}
}

func audit(name string, rules ...Rule) Policy {
	return Policy{Namespace: "shop", Name: name, Action: ActionAudit, Rules: rules}
}

func from(s ...Source) Rule       { return Rule{From: s} }
func to(o ...Operation) Rule      { return Rule{To: o} }
func when(expr string) Rule       { return Rule{When: expr} }
func paths(p ...string) Rule      { return to(Operation{Paths: p}) }
func principals(p ...string) Rule { return from(Source{Principals: p}) }

func mustCompile(t testing.TB, p *WorkloadPolicy) *Engine {
	t.Helper()
	e, err := Compile(p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return e
}

// want is the expected outcome of a decision.
type want struct {
	allow  bool
	code   Code
	policy string // "" for none
	rule   int    // ignored when policy is ""
	audits string // "shop/a[0] shop/b[1]"
}

func check(t *testing.T, e *Engine, r *Request, w want) {
	t.Helper()
	d := e.Decide(r)
	if d.Allow != w.allow || d.Code != w.code || d.Policy != w.policy || (w.policy != "" && d.Rule != w.rule) {
		t.Errorf("Decide = {allow %v, %v, %q rules[%d]: %s}; want {allow %v, %v, %q rules[%d]}",
			d.Allow, d.Code, d.Policy, d.Rule, d.Reason, w.allow, w.code, w.policy, w.rule)
	}
	if w.policy == "" && d.Rule != -1 {
		t.Errorf("Decide: Rule = %d without a policy, want -1", d.Rule)
	}
	var audits []string
	for _, a := range d.Audits() {
		audits = append(audits, a.Policy+"["+itoa(a.Rule)+"]")
	}
	if got := strings.Join(audits, " "); got != w.audits {
		t.Errorf("Decide: audits %q, want %q", got, w.audits)
	}
	if d.Reason == "" {
		t.Errorf("Decide: empty reason")
	}
	// Explain must reach the same decision.
	x := e.Explain(r)
	if x.Decision != d {
		t.Errorf("Explain decided %+v, Decide %+v", x.Decision, d)
	}
	if len(x.Steps) == 0 {
		t.Errorf("Explain: no steps")
	}
}

func itoa(i int) string {
	if i < 0 {
		return "-" + itoa(-i)
	}
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// Outcomes used again and again.
var (
	defaultAllow = want{allow: true, code: CodeDefaultAllow}
	defaultDeny  = want{code: CodeDefaultDeny}
	noAllow      = want{code: CodeNoAllowMatch}
)

func allowedBy(policy string, rule int) want {
	return want{allow: true, code: CodeAllowRule, policy: policy, rule: rule}
}

func deniedBy(policy string, rule int) want {
	return want{code: CodeDenyRule, policy: policy, rule: rule}
}
