package authz

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

type decideCase struct {
	name string
	p    *WorkloadPolicy
	r    *Request
	want want
}

func runCases(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			check(t, mustCompile(t, c.p), c.r, c.want)
		})
	}
}

var (
	allowAll  = allow("allow-all", Rule{})
	denyAdmin = denyP("deny-admin", paths("/admin", "/admin/**"))
	allowWeb  = allow("allow-web", principals(idWeb))
	auditAll  = audit("audit-all", Rule{})
	auditPost = audit("audit-post", to(Operation{Methods: []string{"POST"}}))
)

// TestPrecedence covers every combination of DENY, ALLOW and AUDIT
// policies and the default modes.
func TestPrecedence(t *testing.T) {
	get := req(idWeb, "GET", "/orders")
	admin := req(idWeb, "GET", "/admin")
	other := req(idBatch, "GET", "/orders")
	runCases(t, []decideCase{
		// No policy: the default decides.
		{"no policy, allow-authenticated", wp(DefaultAllowAuthenticated), get, defaultAllow},
		{"no policy, allow-authenticated, other namespace", wp(DefaultAllowAuthenticated), other, defaultAllow},
		{"no policy, allow-authenticated, plaintext", wp(DefaultAllowAuthenticated), req("", "GET", "/orders"), defaultDeny},
		{"no policy, allow-same-namespace", wp(DefaultAllowSameNamespace), get, defaultAllow},
		{"no policy, allow-same-namespace, other namespace", wp(DefaultAllowSameNamespace), other, defaultDeny},
		{"no policy, allow-same-namespace, plaintext", wp(DefaultAllowSameNamespace), req("", "GET", "/"), defaultDeny},
		{"no policy, allow-same-namespace, identity without namespace", wp(DefaultAllowSameNamespace), req(idOddPath, "GET", "/"), defaultDeny},
		{"no policy, allow-authenticated, identity without namespace", wp(DefaultAllowAuthenticated), req(idOddPath, "GET", "/"), defaultAllow},
		{"no policy, deny-all", wp(DefaultDenyAll), get, defaultDeny},
		{"no policy, deny-all, plaintext", wp(DefaultDenyAll), req("", "GET", "/"), defaultDeny},
		{"no policy, tcp, allow-authenticated", wp(DefaultAllowAuthenticated), tcp(idWeb, 5432), defaultAllow},
		{"no policy, tcp, deny-all", wp(DefaultDenyAll), tcp(idWeb, 5432), defaultDeny},

		// ALLOW only.
		{"allow matches", wp(DefaultDenyAll, allowWeb), get, allowedBy("shop/allow-web", 0)},
		{"allow does not match, default allow ignored", wp(DefaultAllowAuthenticated, allowWeb), other, noAllow},
		{"allow does not match, deny-all", wp(DefaultDenyAll, allowWeb), other, noAllow},
		{"allow without rules allows nothing", wp(DefaultAllowAuthenticated, allow("nothing")), get, noAllow},
		{"allow without rules next to one that matches", wp(DefaultDenyAll, allow("a-nothing"), allowWeb), get, allowedBy("shop/allow-web", 0)},
		{"second allow policy matches", wp(DefaultDenyAll, allow("a", principals(idAdmin)), allowWeb), get, allowedBy("shop/allow-web", 0)},
		{"third rule matches", wp(DefaultDenyAll, allow("a", principals(idAdmin), principals(idBatch), principals(idWeb))), get, allowedBy("shop/a", 2)},
		{"empty rule allows all", wp(DefaultDenyAll, allowAll), req("", "DELETE", "/x"), allowedBy("shop/allow-all", 0)},

		// DENY only.
		{"deny matches, default allow", wp(DefaultAllowAuthenticated, denyAdmin), admin, deniedBy("shop/deny-admin", 0)},
		{"deny does not match, default allow", wp(DefaultAllowAuthenticated, denyAdmin), get, defaultAllow},
		{"deny does not match, deny-all", wp(DefaultDenyAll, denyAdmin), get, defaultDeny},
		{"deny does not match, same-namespace, other", wp(DefaultAllowSameNamespace, denyAdmin), other, defaultDeny},
		{"first matching deny reported", wp(DefaultAllowAuthenticated, denyP("a", paths("/x")), denyP("b", paths("/admin*")), denyP("c", Rule{})), admin, deniedBy("shop/b", 0)},
		{"deny rule index", wp(DefaultAllowAuthenticated, denyP("d", paths("/x"), paths("/y"), paths("/admin"))), admin, deniedBy("shop/d", 2)},

		// DENY and ALLOW.
		{"deny beats allow", wp(DefaultDenyAll, allowAll, denyAdmin), admin, deniedBy("shop/deny-admin", 0)},
		{"deny beats allow, listed after", wp(DefaultDenyAll, denyAdmin, allowAll), admin, deniedBy("shop/deny-admin", 0)},
		{"allow when deny does not match", wp(DefaultDenyAll, allowAll, denyAdmin), get, allowedBy("shop/allow-all", 0)},
		{"neither matches", wp(DefaultAllowAuthenticated, allowWeb, denyAdmin), other, noAllow},
		{"deny matches, allow does not", wp(DefaultAllowAuthenticated, allowWeb, denyAdmin), req(idBatch, "GET", "/admin"), deniedBy("shop/deny-admin", 0)},

		// AUDIT never changes the decision.
		{"audit only, default allow", wp(DefaultAllowAuthenticated, auditAll), get, want{allow: true, code: CodeDefaultAllow, audits: "shop/audit-all[0]"}},
		{"audit only, deny-all", wp(DefaultDenyAll, auditAll), get, want{code: CodeDefaultDeny, audits: "shop/audit-all[0]"}},
		{"audit and allow", wp(DefaultDenyAll, auditAll, allowWeb), get, want{allow: true, code: CodeAllowRule, policy: "shop/allow-web", audits: "shop/audit-all[0]"}},
		{"audit and no allow match", wp(DefaultDenyAll, auditAll, allowWeb), other, want{code: CodeNoAllowMatch, audits: "shop/audit-all[0]"}},
		{"audit and deny", wp(DefaultAllowAuthenticated, auditAll, denyAdmin), admin, want{code: CodeDenyRule, policy: "shop/deny-admin", audits: "shop/audit-all[0]"}},
		{"audit, deny and allow", wp(DefaultDenyAll, allowAll, denyAdmin, auditAll), admin, want{code: CodeDenyRule, policy: "shop/deny-admin", audits: "shop/audit-all[0]"}},
		{"audit does not match", wp(DefaultAllowAuthenticated, auditPost), get, defaultAllow},
		{"two audits match", wp(DefaultAllowAuthenticated, auditAll, auditPost), req(idWeb, "POST", "/"), want{allow: true, code: CodeDefaultAllow, audits: "shop/audit-all[0] shop/audit-post[0]"}},
		{"audit reports its rule", wp(DefaultAllowAuthenticated, audit("a", paths("/x"), paths("/orders"))), get, want{allow: true, code: CodeDefaultAllow, audits: "shop/a[1]"}},
		{"audit of plaintext", wp(DefaultDenyAll, audit("a", principals(idWeb))), req("", "GET", "/"), want{code: CodeDefaultDeny, audits: "shop/a[0]"}},
		{"audit does not make the workload allow-governed", wp(DefaultAllowAuthenticated, audit("a", principals(idAdmin))), get, defaultAllow},

		// Mesh-wide and namespace policies are all just policies here.
		{"mesh-wide deny", wp(DefaultAllowAuthenticated, Policy{Namespace: "rampart-system", Name: "no-debug", Action: ActionDeny, Rules: []Rule{paths("/debug/**")}}), req(idWeb, "GET", "/debug/pprof"), deniedBy("rampart-system/no-debug", 0)},
	})
}

func TestNilEngineDenies(t *testing.T) {
	var e *Engine
	d := e.Decide(req(idWeb, "GET", "/"))
	if d.Allow || d.Code != CodeNoPolicy || d.Rule != -1 {
		t.Errorf("nil Engine: %+v", d)
	}
	if x := e.Explain(req(idWeb, "GET", "/")); x.Decision != d {
		t.Errorf("nil Engine Explain: %+v", x.Decision)
	}
	if e.TLSMode(80) != TLSStrict {
		t.Errorf("nil Engine TLS mode %v", e.TLSMode(80))
	}
}

func TestTLSMode(t *testing.T) {
	strict := func(def DefaultMode, ports []PortTLS, ps ...Policy) *WorkloadPolicy {
		p := wp(def, ps...)
		p.TLS = TLSPolicy{Mode: TLSStrict, Ports: ports, Source: "test"}
		return p
	}
	permissive := func(ports []PortTLS, ps ...Policy) *WorkloadPolicy {
		p := wp(DefaultDenyAll, ps...)
		p.TLS.Ports = ports
		return p
	}
	plain := req("", "GET", "/")
	unverified := with(req(idWeb, "GET", "/"), func(r *Request) { r.Authenticated = false })
	emptyID := with(req("", "GET", "/"), func(r *Request) { r.Authenticated = true })
	runCases(t, []decideCase{
		{"strict, mtls", strict(DefaultAllowAuthenticated, nil), req(idWeb, "GET", "/"), defaultAllow},
		{"strict, plaintext", strict(DefaultAllowAuthenticated, nil), plain, want{code: CodePlaintext}},
		{"strict, plaintext, allow-all policy", strict(DefaultAllowAuthenticated, nil, allowAll), plain, want{code: CodePlaintext}},
		{"strict, source set but not authenticated", strict(DefaultAllowAuthenticated, nil, allowAll), unverified, want{code: CodePlaintext}},
		{"strict, authenticated without source", strict(DefaultAllowAuthenticated, nil, allowAll), emptyID, want{code: CodePlaintext}},
		{"strict, tcp plaintext", strict(DefaultAllowAuthenticated, nil, allowAll), tcp("", 5432), want{code: CodePlaintext}},
		{"strict, permissive port", strict(DefaultAllowAuthenticated, []PortTLS{{Port: 8080, Mode: TLSPermissive}}, allowAll), plain, allowedBy("shop/allow-all", 0)},
		{"strict, other port permissive", strict(DefaultAllowAuthenticated, []PortTLS{{Port: 9090, Mode: TLSPermissive}}, allowAll), plain, want{code: CodePlaintext}},
		{"permissive, plaintext reaches policies", permissive(nil, allowAll), plain, allowedBy("shop/allow-all", 0)},
		{"permissive, strict port", permissive([]PortTLS{{Port: 8080, Mode: TLSStrict}}, allowAll), plain, want{code: CodePlaintext}},
		{"permissive, strict other port", permissive([]PortTLS{{Port: 9090, Mode: TLSStrict}}, allowAll), plain, allowedBy("shop/allow-all", 0)},
		{"permissive, plaintext without policy", permissive(nil), plain, defaultDeny},
	})
	e := mustCompile(t, strict(DefaultDenyAll, []PortTLS{{Port: 8080, Mode: TLSPermissive}}))
	if e.TLSMode(8080) != TLSPermissive || e.TLSMode(8081) != TLSStrict {
		t.Errorf("TLSMode: 8080 %v, 8081 %v", e.TLSMode(8080), e.TLSMode(8081))
	}
}

func TestInvalidRequests(t *testing.T) {
	p := wp(DefaultAllowAuthenticated, allowAll)
	invalid := want{code: CodeInvalidRequest}
	runCases(t, []decideCase{
		{"protocol unset", p, with(req(idWeb, "GET", "/"), func(r *Request) { r.Protocol = ProtocolUnset }), invalid},
		{"protocol unknown", p, with(req(idWeb, "GET", "/"), func(r *Request) { r.Protocol = 9 }), invalid},
		{"port unset", p, with(req(idWeb, "GET", "/"), func(r *Request) { r.Port = 0 }), invalid},
		{"tcp port unset", p, tcp(idWeb, 0), invalid},
		{"no method", p, req(idWeb, "", "/"), invalid},
		{"empty path", p, req(idWeb, "GET", ""), invalid},
		{"path with dot segment", p, req(idWeb, "GET", "/a/../admin"), invalid},
		{"path with double slash", p, req(idWeb, "GET", "//admin"), invalid},
		{"path with encoded slash", p, req(idWeb, "GET", "/admin%2F"), invalid},
		{"path with lower-case escape", p, req(idWeb, "GET", "/a%c3%a9"), invalid},
		{"path with encoded unreserved", p, req(idWeb, "GET", "/%61dmin"), invalid},
		{"path with query", p, req(idWeb, "GET", "/a?b"), invalid},
		{"path with semicolon", p, req(idWeb, "GET", "/a;b"), invalid},
		{"relative path", p, req(idWeb, "GET", "admin"), invalid},
		{"host upper case", p, with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = "Orders.shop" }), invalid},
		{"host trailing dot", p, with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = "orders.shop." }), invalid},
		{"host with space", p, with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = "a b" }), invalid},
		// A TCP connection's HTTP fields are ignored.
		{"tcp with junk in HTTP fields", p, with(tcp(idWeb, 5432), func(r *Request) { r.Path = "//x"; r.Host = "A" }), allowedBy("shop/allow-all", 0)},
		{"no host is fine", p, with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = "" }), allowedBy("shop/allow-all", 0)},
	})
}

// TestIdentity covers principals and namespaces, and requests with no
// verified identity: identity fields fail closed (they match in DENY and
// AUDIT, and do not in ALLOW).
func TestIdentity(t *testing.T) {
	plain := req("", "GET", "/")
	unverified := with(req(idAdmin, "GET", "/"), func(r *Request) { r.Authenticated = false })
	p := func(pol Policy) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, pol) }
	a := func(s Source) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, allow("a", from(s))) }
	d := func(s Source) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, denyP("d", from(s))) }
	okA, okD := allowedBy("shop/a", 0), deniedBy("shop/d", 0)
	runCases(t, []decideCase{
		// Exact, prefix, suffix and any.
		{"exact", a(Source{Principals: []string{idWeb}}), req(idWeb, "GET", "/"), okA},
		{"exact, other", a(Source{Principals: []string{idWeb}}), req(idAdmin, "GET", "/"), noAllow},
		{"exact is not a prefix", a(Source{Principals: []string{idWeb}}), req(idWeb+"x", "GET", "/"), noAllow},
		{"exact is not a suffix", a(Source{Principals: []string{td + "/ns/shop/sa/web"}}), req("spiffe://evil.test/x/rampart.test/ns/shop/sa/web", "GET", "/"), noAllow},
		{"other trust domain", a(Source{Principals: []string{idWeb}}), req("spiffe://other.test/ns/shop/sa/web", "GET", "/"), noAllow},
		{"prefix", a(Source{Principals: []string{td + "/ns/shop/*"}}), req(idAdmin, "GET", "/"), okA},
		{"prefix, other namespace", a(Source{Principals: []string{td + "/ns/shop/*"}}), req(td+"/ns/shopping/sa/web", "GET", "/"), noAllow},
		{"prefix, other trust domain", a(Source{Principals: []string{td + "/ns/shop/*"}}), req("spiffe://other.test/ns/shop/sa/web", "GET", "/"), noAllow},
		{"suffix", a(Source{Principals: []string{"*/sa/admin"}}), req(idAdmin, "GET", "/"), okA},
		{"suffix, longer name", a(Source{Principals: []string{"*/sa/admin"}}), req(td+"/ns/shop/sa/superadmin", "GET", "/"), noAllow},
		{"any", a(Source{Principals: []string{"*"}}), req(idBatch, "GET", "/"), okA},
		{"one of several", a(Source{Principals: []string{idAdmin, idBatch, idWeb}}), req(idWeb, "GET", "/"), okA},
		{"many exact (map)", a(Source{Principals: manyIDs(50, idWeb)}), req(idWeb, "GET", "/"), okA},
		{"many exact (map), other", a(Source{Principals: manyIDs(50, idAdmin)}), req(idWeb, "GET", "/"), noAllow},
		{"not principals", a(Source{NotPrincipals: []string{idAdmin}}), req(idWeb, "GET", "/"), okA},
		{"not principals, listed", a(Source{NotPrincipals: []string{idAdmin}}), req(idAdmin, "GET", "/"), noAllow},
		{"not principals prefix", a(Source{NotPrincipals: []string{td + "/ns/batch/*"}}), req(idBatch, "GET", "/"), noAllow},
		{"namespaces", a(Source{Namespaces: []string{"shop"}}), req(idWeb, "GET", "/"), okA},
		{"namespaces, other", a(Source{Namespaces: []string{"shop"}}), req(idBatch, "GET", "/"), noAllow},
		{"namespaces prefix", a(Source{Namespaces: []string{"sh*"}}), req(idWeb, "GET", "/"), okA},
		{"namespaces suffix", a(Source{Namespaces: []string{"*atch"}}), req(idBatch, "GET", "/"), okA},
		{"not namespaces", a(Source{NotNamespaces: []string{"batch"}}), req(idWeb, "GET", "/"), okA},
		{"not namespaces, listed", a(Source{NotNamespaces: []string{"batch"}}), req(idBatch, "GET", "/"), noAllow},
		{"principal and namespace", a(Source{Principals: []string{"*/sa/web"}, Namespaces: []string{"shop"}}), req(idWeb, "GET", "/"), okA},
		{"principal and wrong namespace", a(Source{Principals: []string{"*/sa/cron"}, Namespaces: []string{"shop"}}), req(idBatch, "GET", "/"), noAllow},
		{"second from entry", wp(DefaultDenyAll, allow("a", from(Source{Principals: []string{idAdmin}}, Source{Namespaces: []string{"batch"}}))), req(idBatch, "GET", "/"), okA},

		// No verified identity: ALLOW does not match.
		{"allow principals, plaintext", a(Source{Principals: []string{"*"}}), plain, noAllow},
		{"allow not principals, plaintext", a(Source{NotPrincipals: []string{idAdmin}}), plain, noAllow},
		{"allow namespaces, plaintext", a(Source{Namespaces: []string{"*"}}), plain, noAllow},
		{"allow not namespaces, plaintext", a(Source{NotNamespaces: []string{"batch"}}), plain, noAllow},
		{"allow principals, unverified source", a(Source{Principals: []string{idAdmin}}), unverified, noAllow},
		{"allow namespaces, identity without namespace", a(Source{Namespaces: []string{"*"}}), req(idOddPath, "GET", "/"), noAllow},
		{"allow not namespaces, identity without namespace", a(Source{NotNamespaces: []string{"batch"}}), req(idOddPath, "GET", "/"), noAllow},
		{"allow principals, identity without namespace", a(Source{Principals: []string{idOddPath}}), req(idOddPath, "GET", "/"), okA},

		// No verified identity: DENY matches.
		{"deny principals, match", d(Source{Principals: []string{idAdmin}}), req(idAdmin, "GET", "/"), okD},
		{"deny principals, other", d(Source{Principals: []string{idAdmin}}), req(idWeb, "GET", "/"), defaultAllow},
		{"deny principals, plaintext", d(Source{Principals: []string{idAdmin}}), plain, okD},
		{"deny principals, unverified source", d(Source{Principals: []string{idAdmin}}), unverified, okD},
		{"deny not principals, plaintext", d(Source{NotPrincipals: []string{idAdmin}}), plain, okD},
		{"deny not principals, listed", d(Source{NotPrincipals: []string{idAdmin}}), req(idAdmin, "GET", "/"), defaultAllow},
		{"deny namespaces, plaintext", d(Source{Namespaces: []string{"batch"}}), plain, okD},
		{"deny not namespaces, plaintext", d(Source{NotNamespaces: []string{"shop"}}), plain, okD},
		{"deny not namespaces, same", d(Source{NotNamespaces: []string{"shop"}}), req(idWeb, "GET", "/"), defaultAllow},
		{"deny not namespaces, other", d(Source{NotNamespaces: []string{"shop"}}), req(idBatch, "GET", "/"), okD},
		{"deny namespaces, identity without namespace", d(Source{Namespaces: []string{"batch"}}), req(idOddPath, "GET", "/"), okD},
		{"deny not namespaces, identity without namespace", d(Source{NotNamespaces: []string{"shop"}}), req(idOddPath, "GET", "/"), okD},
		{"deny principals and ip, plaintext from elsewhere", d(Source{Principals: []string{idAdmin}, IPBlocks: []string{"192.168.0.0/16"}}), plain, defaultDeny},
		{"deny principals and ip, plaintext from there", d(Source{Principals: []string{idAdmin}, IPBlocks: []string{"10.0.0.0/8"}}), plain, okD},
		{"audit principals, plaintext", p(audit("au", principals(idAdmin))), plain, want{code: CodeDefaultDeny, audits: "shop/au[0]"}},
	})
}

func manyIDs(n int, extra string) []string {
	ids := []string{extra}
	for i := range n {
		ids = append(ids, td+"/ns/n"+itoa(i)+"/sa/x")
	}
	return ids
}

func TestIPBlocks(t *testing.T) {
	a := func(s Source) *WorkloadPolicy { return wp(DefaultDenyAll, allow("a", from(s))) }
	d := func(s Source) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, denyP("d", from(s))) }
	at := func(ip string) *Request {
		return with(req(idWeb, "GET", "/"), func(r *Request) { r.SourceIP = netip.MustParseAddr(ip) })
	}
	unknown := with(req(idWeb, "GET", "/"), func(r *Request) { r.SourceIP = netip.Addr{} })
	okA, okD := allowedBy("shop/a", 0), deniedBy("shop/d", 0)
	runCases(t, []decideCase{
		{"in block", a(Source{IPBlocks: []string{"10.0.0.0/8"}}), at("10.9.9.9"), okA},
		{"not in block", a(Source{IPBlocks: []string{"10.0.0.0/8"}}), at("11.0.0.1"), noAllow},
		{"single address", a(Source{IPBlocks: []string{"10.1.2.3"}}), at("10.1.2.3"), okA},
		{"single address, other", a(Source{IPBlocks: []string{"10.1.2.3"}}), at("10.1.2.4"), noAllow},
		{"v4-mapped source", a(Source{IPBlocks: []string{"10.0.0.0/8"}}), at("::ffff:10.1.2.3"), okA},
		{"v6 block", a(Source{IPBlocks: []string{"fd00::/8"}}), at("fd12::1"), okA},
		{"v6 block, v4 source", a(Source{IPBlocks: []string{"fd00::/8"}}), at("10.1.2.3"), noAllow},
		{"not block", a(Source{NotIPBlocks: []string{"10.0.0.0/8"}}), at("10.1.2.3"), noAllow},
		{"not block, outside", a(Source{NotIPBlocks: []string{"10.0.0.0/8"}}), at("192.168.1.1"), okA},
		{"block minus hole", a(Source{IPBlocks: []string{"10.0.0.0/8"}, NotIPBlocks: []string{"10.1.0.0/16"}}), at("10.1.2.3"), noAllow},
		{"block minus hole, outside hole", a(Source{IPBlocks: []string{"10.0.0.0/8"}, NotIPBlocks: []string{"10.1.0.0/16"}}), at("10.2.0.1"), okA},
		{"allow, unknown address", a(Source{IPBlocks: []string{"0.0.0.0/0"}}), unknown, noAllow},
		{"allow not, unknown address", a(Source{NotIPBlocks: []string{"10.0.0.0/8"}}), unknown, noAllow},
		{"deny, in block", d(Source{IPBlocks: []string{"10.0.0.0/8"}}), at("10.1.2.3"), okD},
		{"deny, outside", d(Source{IPBlocks: []string{"10.0.0.0/8"}}), at("11.1.2.3"), defaultAllow},
		{"deny, unknown address", d(Source{IPBlocks: []string{"10.0.0.0/8"}}), unknown, okD},
		{"deny not, unknown address", d(Source{NotIPBlocks: []string{"10.0.0.0/8"}}), unknown, okD},
	})
}

// TestOperations covers ports, methods, paths and hosts on HTTP requests.
func TestOperations(t *testing.T) {
	a := func(o ...Operation) *WorkloadPolicy { return wp(DefaultDenyAll, allow("a", to(o...))) }
	d := func(o ...Operation) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, denyP("d", to(o...))) }
	r := func(method, path string) *Request { return req(idWeb, method, path) }
	host := func(h string) *Request { return with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = h }) }
	okA, okD := allowedBy("shop/a", 0), deniedBy("shop/d", 0)
	runCases(t, []decideCase{
		// Ports.
		{"port", a(Operation{Ports: []uint32{8080}}), r("GET", "/"), okA},
		{"port, other", a(Operation{Ports: []uint32{9090}}), r("GET", "/"), noAllow},
		{"not port", a(Operation{NotPorts: []uint32{9090}}), r("GET", "/"), okA},
		{"not port, listed", a(Operation{NotPorts: []uint32{8080}}), r("GET", "/"), noAllow},

		// Methods: case-sensitive.
		{"method", a(Operation{Methods: []string{"GET", "HEAD"}}), r("HEAD", "/"), okA},
		{"method, other", a(Operation{Methods: []string{"GET"}}), r("POST", "/"), noAllow},
		{"method, lower case request", a(Operation{Methods: []string{"GET"}}), r("get", "/"), noAllow},
		{"not method", a(Operation{NotMethods: []string{"DELETE"}}), r("GET", "/"), okA},
		{"not method, listed", a(Operation{NotMethods: []string{"DELETE"}}), r("DELETE", "/"), noAllow},
		{"deny method", d(Operation{Methods: []string{"DELETE"}}), r("DELETE", "/x"), okD},
		{"deny not method", d(Operation{NotMethods: []string{"GET", "HEAD"}}), r("PUT", "/x"), okD},
		{"custom method", a(Operation{Methods: []string{"PROPFIND"}}), r("PROPFIND", "/"), okA},

		// Paths: exact, prefix, suffix, any, templates; case-sensitive.
		{"exact path", a(Operation{Paths: []string{"/orders"}}), r("GET", "/orders"), okA},
		{"exact path, trailing slash", a(Operation{Paths: []string{"/orders"}}), r("GET", "/orders/"), noAllow},
		{"exact path, case", a(Operation{Paths: []string{"/orders"}}), r("GET", "/Orders"), noAllow},
		{"prefix", a(Operation{Paths: []string{"/api/*"}}), r("GET", "/api/v1/x"), okA},
		{"prefix, base", a(Operation{Paths: []string{"/api/*"}}), r("GET", "/api"), noAllow},
		{"prefix without slash", a(Operation{Paths: []string{"/api*"}}), r("GET", "/apiary"), okA},
		{"suffix", a(Operation{Paths: []string{"*.css"}}), r("GET", "/static/site.css"), okA},
		{"suffix, other", a(Operation{Paths: []string{"*.css"}}), r("GET", "/static/site.js"), noAllow},
		{"any path", a(Operation{Paths: []string{"*"}}), r("GET", "/whatever"), okA},
		{"template", a(Operation{Paths: []string{"/users/{id}/orders"}}), r("GET", "/users/42/orders"), okA},
		{"template, two segments", a(Operation{Paths: []string{"/users/{id}/orders"}}), r("GET", "/users/4/2/orders"), noAllow},
		{"template, empty segment", a(Operation{Paths: []string{"/users/{id}/orders"}}), r("GET", "/users/orders"), noAllow},
		{"template, trailing slash", a(Operation{Paths: []string{"/users/{id}"}}), r("GET", "/users/42/"), noAllow},
		{"template, longer", a(Operation{Paths: []string{"/users/{id}"}}), r("GET", "/users/42/x"), noAllow},
		{"template, literal differs", a(Operation{Paths: []string{"/users/{id}/orders"}}), r("GET", "/users/42/order"), noAllow},
		{"template, encoded", a(Operation{Paths: []string{"/files/{name}"}}), r("GET", "/files/a%20b"), okA},
		{"rest", a(Operation{Paths: []string{"/static/**"}}), r("GET", "/static/a/b/c.png"), okA},
		{"rest, base", a(Operation{Paths: []string{"/static/**"}}), r("GET", "/static"), okA},
		{"rest, base slash", a(Operation{Paths: []string{"/static/**"}}), r("GET", "/static/"), okA},
		{"rest, sibling", a(Operation{Paths: []string{"/static/**"}}), r("GET", "/staticfiles"), noAllow},
		{"rest after param", a(Operation{Paths: []string{"/u/{id}/**"}}), r("GET", "/u/1/a/b"), okA},
		{"root rest", a(Operation{Paths: []string{"/**"}}), r("GET", "/x"), okA},
		{"not paths", a(Operation{NotPaths: []string{"/admin/**"}}), r("GET", "/orders"), okA},
		{"not paths, listed", a(Operation{NotPaths: []string{"/admin/**"}}), r("GET", "/admin/x"), noAllow},
		{"paths minus not paths", a(Operation{Paths: []string{"/api/*"}, NotPaths: []string{"/api/internal/*"}}), r("GET", "/api/internal/x"), noAllow},
		{"paths minus not paths, outside", a(Operation{Paths: []string{"/api/*"}, NotPaths: []string{"/api/internal/*"}}), r("GET", "/api/public/x"), okA},
		{"many exact paths", a(Operation{Paths: manyPaths(40, "/orders")}), r("GET", "/orders"), okA},
		{"deny path", d(Operation{Paths: []string{"/admin/**"}}), r("GET", "/admin"), okD},
		{"deny not paths", d(Operation{NotPaths: []string{"/public/**"}}), r("GET", "/private"), okD},

		// Hosts: case-insensitive, with or without port.
		{"host", a(Operation{Hosts: []string{"orders.shop"}}), host("orders.shop"), okA},
		{"host, pattern in upper case", a(Operation{Hosts: []string{"Orders.SHOP."}}), host("orders.shop"), okA},
		{"host without port matches any port", a(Operation{Hosts: []string{"orders.shop"}}), host("orders.shop:8080"), okA},
		{"host with port", a(Operation{Hosts: []string{"orders.shop:8080"}}), host("orders.shop:8080"), okA},
		{"host with port, other port", a(Operation{Hosts: []string{"orders.shop:8080"}}), host("orders.shop:9090"), noAllow},
		{"host with port, no port", a(Operation{Hosts: []string{"orders.shop:8080"}}), host("orders.shop"), noAllow},
		{"host suffix", a(Operation{Hosts: []string{"*.example.com"}}), host("api.example.com"), okA},
		{"host suffix, port", a(Operation{Hosts: []string{"*.example.com"}}), host("api.example.com:443"), okA},
		{"host suffix, apex", a(Operation{Hosts: []string{"*.example.com"}}), host("example.com"), noAllow},
		{"host suffix, lookalike", a(Operation{Hosts: []string{"*.example.com"}}), host("evilexample.com"), noAllow},
		{"host prefix", a(Operation{Hosts: []string{"orders.*"}}), host("orders.shop:80"), okA},
		{"host any", a(Operation{Hosts: []string{"*"}}), host("x"), okA},
		{"host ipv6", a(Operation{Hosts: []string{"[fd00::1]"}}), host("[fd00::1]:8080"), okA},
		{"not hosts", a(Operation{NotHosts: []string{"admin.shop"}}), host("orders.shop"), okA},
		{"not hosts, listed with port", a(Operation{NotHosts: []string{"admin.shop"}}), host("admin.shop:8080"), noAllow},
		{"allow hosts, no host", a(Operation{Hosts: []string{"*"}}), host(""), noAllow},
		{"deny hosts", d(Operation{Hosts: []string{"ADMIN.shop"}}), host("admin.shop:443"), okD},
		{"deny hosts, no host", d(Operation{Hosts: []string{"admin.shop"}}), host(""), okD},
		{"deny not hosts, no host", d(Operation{NotHosts: []string{"orders.shop"}}), host(""), okD},

		// Fields combine with AND, entries with OR.
		{"method and path", a(Operation{Methods: []string{"GET"}, Paths: []string{"/orders"}}), r("GET", "/orders"), okA},
		{"method and path, wrong method", a(Operation{Methods: []string{"GET"}, Paths: []string{"/orders"}}), r("POST", "/orders"), noAllow},
		{"second to entry", a(Operation{Methods: []string{"POST"}}, Operation{Paths: []string{"/orders"}}), r("GET", "/orders"), okA},
		{"from and to", wp(DefaultDenyAll, allow("a", Rule{From: []Source{{Principals: []string{idWeb}}}, To: []Operation{{Methods: []string{"GET"}}}})), r("GET", "/"), okA},
		{"from and to, wrong source", wp(DefaultDenyAll, allow("a", Rule{From: []Source{{Principals: []string{idWeb}}}, To: []Operation{{Methods: []string{"GET"}}}})), req(idAdmin, "GET", "/"), noAllow},
	})
}

func manyPaths(n int, extra string) []string {
	ps := []string{extra}
	for i := range n {
		ps = append(ps, "/p"+itoa(i))
	}
	return ps
}

// TestTCP covers rules with HTTP fields on opaque TCP connections: they
// fail closed, so a DENY denies and an ALLOW does not allow.
func TestTCP(t *testing.T) {
	a := func(r Rule) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, allow("a", r)) }
	d := func(r Rule) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, denyP("d", r)) }
	c := tcp(idWeb, 5432)
	okA, okD := allowedBy("shop/a", 0), deniedBy("shop/d", 0)
	runCases(t, []decideCase{
		{"allow port", a(to(Operation{Ports: []uint32{5432}})), c, okA},
		{"allow other port", a(to(Operation{Ports: []uint32{3306}})), c, noAllow},
		{"allow principal", a(principals(idWeb)), c, okA},
		{"allow empty rule", a(Rule{}), c, okA},
		{"allow methods", a(to(Operation{Methods: []string{"GET"}})), c, noAllow},
		{"allow paths", a(paths("/*")), c, noAllow},
		{"allow any path", a(paths("*")), c, noAllow},
		{"allow not paths", a(to(Operation{NotPaths: []string{"/admin"}})), c, noAllow},
		{"allow hosts", a(to(Operation{Hosts: []string{"*"}})), c, noAllow},
		{"allow port and path", a(to(Operation{Ports: []uint32{5432}, Paths: []string{"/x"}})), c, noAllow},
		{"allow second entry without HTTP", a(to(Operation{Paths: []string{"/x"}}, Operation{Ports: []uint32{5432}})), c, okA},
		{"allow when on path", a(when(`request.path.startsWith("/")`)), c, noAllow},
		{"allow when on headers", a(when(`"x" in request.headers`)), c, noAllow},
		{"allow when on port", a(when(`destination.port == 5432`)), c, okA},
		{"allow when on protocol", a(when(`request.protocol == "tcp"`)), c, okA},
		{"deny methods", d(to(Operation{Methods: []string{"DELETE"}})), c, okD},
		{"deny paths", d(paths("/admin/**")), c, okD},
		{"deny not paths", d(to(Operation{NotPaths: []string{"/public/**"}})), c, okD},
		{"deny hosts", d(to(Operation{Hosts: []string{"admin.shop"}})), c, okD},
		{"deny port and path, same port", d(to(Operation{Ports: []uint32{5432}, Paths: []string{"/admin"}})), c, okD},
		{"deny port and path, other port", d(to(Operation{Ports: []uint32{8080}, Paths: []string{"/admin"}})), c, defaultAllow},
		{"deny principal and path", d(Rule{From: []Source{{Principals: []string{idWeb}}}, To: []Operation{{Paths: []string{"/admin"}}}}), c, okD},
		{"deny principal and path, other principal", d(Rule{From: []Source{{Principals: []string{idAdmin}}}, To: []Operation{{Paths: []string{"/admin"}}}}), c, defaultAllow},
		{"deny when on method", d(when(`request.method == "DELETE"`)), c, okD},
		{"deny when on host", d(when(`request.host == "admin"`)), c, okD},
		{"audit paths", wp(DefaultAllowAuthenticated, audit("au", paths("/admin"))), c, want{allow: true, code: CodeDefaultAllow, audits: "shop/au[0]"}},
	})
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		p    *WorkloadPolicy
		want []string // "field: message substring"
	}{
		{"namespace", &WorkloadPolicy{Default: DefaultAllowSameNamespace, TLS: TLSPolicy{Mode: TLSStrict}}, []string{"namespace: is required with allow-same-namespace"}},
		{"default", &WorkloadPolicy{Namespace: "a", TLS: TLSPolicy{Mode: TLSStrict}}, []string{"default: must be"}},
		{"tls", &WorkloadPolicy{Namespace: "a", Default: DefaultDenyAll, TLS: TLSPolicy{Ports: []PortTLS{{Port: 0, Mode: TLSStrict}, {Port: 80}, {Port: 80, Mode: TLSStrict}}}},
			[]string{"tls.mode: must be", "tls.ports[0].port: must be", "tls.ports[1].mode: must be", "tls.ports[2].port: duplicate port 80"}},
		{"policy identity", wp(DefaultDenyAll, Policy{Action: ActionAllow}), []string{"policies[0].namespace: is required", "policies[0].name: is required"}},
		{"action", wp(DefaultDenyAll, Policy{Namespace: "a", Name: "b"}), []string{"policies[0].action: must be ALLOW, DENY or AUDIT"}},
		{"deny without rules", wp(DefaultDenyAll, denyP("d")), []string{"policies[0].rules: a DENY policy without rules matches nothing"}},
		{"audit without rules", wp(DefaultDenyAll, audit("a")), []string{"policies[0].rules: a AUDIT policy without rules"}},
		{"duplicate policy", wp(DefaultDenyAll, allow("a"), allow("a")), []string{"policies[1]: duplicate policy shop/a"}},
		{"rule errors carry the path", wp(DefaultDenyAll, allow("a", Rule{}, Rule{From: []Source{{}, {Principals: []string{"web"}}}})),
			[]string{"policies[0].rules[1].from[0]: is empty", `policies[0].rules[1].from[1].principals[0]: "web" is matched against the whole SPIFFE ID`}},
		{"rate limit errors carry the path", &WorkloadPolicy{Namespace: "a", Default: DefaultDenyAll, TLS: TLSPolicy{Mode: TLSStrict}, RateLimits: []RateLimit{{Policy: "a/b", Name: "c", Per: PerOverall, Burst: 1}}},
			[]string{"rateLimits[0].requestsPerSecond: must be between"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.p)
			var fes FieldErrors
			if !errors.As(err, &fes) {
				t.Fatalf("Compile: %v, want FieldErrors", err)
			}
			if !strings.HasPrefix(err.Error(), "authz: invalid policy: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if len(fes) != len(tt.want) {
				t.Errorf("got %d errors, want %d: %v", len(fes), len(tt.want), err)
			}
			for i, w := range tt.want {
				if i < len(fes) && !strings.HasPrefix(fes[i].Error(), w) {
					t.Errorf("error %d = %q, want prefix %q", i, fes[i].Error(), w)
				}
			}
		})
	}
}

func TestCompileDoesNotKeepInput(t *testing.T) {
	p := wp(DefaultDenyAll, allow("a", principals(idWeb)))
	p.TLS.Ports = []PortTLS{{Port: 8080, Mode: TLSPermissive}}
	e := mustCompile(t, p)
	p.Policies[0].Rules[0].From[0].Principals[0] = idAdmin
	p.TLS.Ports[0].Mode = TLSStrict
	check(t, e, req(idWeb, "GET", "/"), allowedBy("shop/a", 0))
	check(t, e, req("", "GET", "/"), noAllow)
}

func TestAuditOverflow(t *testing.T) {
	var ps []Policy
	for i := range MaxAudits + 3 {
		ps = append(ps, audit("a"+itoa(10+i), Rule{}))
	}
	e := mustCompile(t, wp(DefaultAllowAuthenticated, ps...))
	d := e.Decide(req(idWeb, "GET", "/"))
	if len(d.Audits()) != MaxAudits || d.AuditsOmitted() != 3 {
		t.Errorf("audits %d, omitted %d; want %d, 3", len(d.Audits()), d.AuditsOmitted(), MaxAudits)
	}
	if !d.Allow || d.Audits()[0].Policy != "shop/a10" {
		t.Errorf("decision %+v", d)
	}
}

func TestExplain(t *testing.T) {
	e := mustCompile(t, wp(DefaultDenyAll,
		audit("audit-posts", to(Operation{Methods: []string{"POST"}})),
		denyP("deny-admin", paths("/admin/**")),
		allow("allow-web", principals(idAdmin), Rule{From: []Source{{Principals: []string{idWeb}}}, To: []Operation{{Methods: []string{"GET"}}}}),
	))
	x := e.Explain(req(idWeb, "GET", "/orders"))
	got := x.String()
	for _, w := range []string{
		"allow: ALLOW policy shop/allow-web rules[1] matched",
		"+ request: HTTP GET /orders",
		"+ tls",
		"- audit shop/audit-posts rules[0]: to[0].methods: GET is not listed",
		"- deny shop/deny-admin rules[0]: to[0].paths: /orders does not match",
		"- allow shop/allow-web rules[0]: from[0].principals: " + idWeb + " is not listed",
		"+ allow shop/allow-web rules[1]: every field matched",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("Explain output lacks %q:\n%s", w, got)
		}
	}

	x = e.Explain(req("", "POST", "/admin/x"))
	got = x.String()
	for _, w := range []string{
		"deny: ",
		"from no verified identity",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("Explain output lacks %q:\n%s", w, got)
		}
	}

	// Plaintext on a PERMISSIVE workload, no ALLOW matching.
	x = e.Explain(req("", "GET", "/orders"))
	got = x.String()
	for _, w := range []string{
		"deny: no ALLOW rule matched",
		"from[0]: the request has no verified identity",
		"- allow: no ALLOW rule matched",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("Explain output lacks %q:\n%s", w, got)
		}
	}
}

func TestNamespaceOf(t *testing.T) {
	for _, tt := range []struct{ id, ns string }{
		{idWeb, "shop"},
		{"spiffe://td/ns/a/sa/b", "a"},
		{"spiffe://td/ns//sa/b", ""},
		{"spiffe://td/ns/a/sa/", ""},
		{"spiffe://td/ns/a/sa/b/c", ""},
		{"spiffe://td/ns/a/b/sa/c", ""},
		{"spiffe://td/x/ns/a/sa/b", ""},
		{"spiffe:///ns/a/sa/b", ""},
		{"http://td/ns/a/sa/b", ""},
		{"", ""},
	} {
		if got := NamespaceOf(tt.id); got != tt.ns {
			t.Errorf("NamespaceOf(%q) = %q, want %q", tt.id, got, tt.ns)
		}
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	e := benchEngine(t, 100)
	reqs := []*Request{
		req(idWeb, "GET", "/api/v1/orders/42"),
		req(idWeb, "GET", "/admin/x"),
		req("", "GET", "/x"),
		req(idBatch, "POST", "/api/v1/orders"),
		tcp(idWeb, 5432),
		with(req(idWeb, "GET", "/"), func(r *Request) { r.SourceIP = netip.Addr{} }),
	}
	for _, r := range reqs {
		if n := testing.AllocsPerRun(200, func() { _ = e.Decide(r) }); n != 0 {
			t.Errorf("Decide(%s %s) allocates %v times", r.Method, r.Path, n)
		}
	}
}

func TestNilRequestDenied(t *testing.T) {
	e := mustCompile(t, wp(DefaultAllowAuthenticated, allowAll))
	if d := e.Decide(nil); d.Allow || d.Code != CodeInvalidRequest {
		t.Errorf("Decide(nil) = %+v", d)
	}
}
