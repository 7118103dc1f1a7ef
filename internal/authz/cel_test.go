package authz

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestConditions(t *testing.T) {
	a := func(expr string) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, allow("a", when(expr))) }
	d := func(expr string) *WorkloadPolicy { return wp(DefaultAllowAuthenticated, denyP("d", when(expr))) }
	hdr := func(h http.Header) *Request {
		return with(req(idWeb, "GET", "/orders"), func(r *Request) { r.Headers = HTTPHeaders(h) })
	}
	okA, okD := allowedBy("shop/a", 0), deniedBy("shop/d", 0)
	runCases(t, []decideCase{
		{"method", a(`request.method == "GET"`), req(idWeb, "GET", "/"), okA},
		{"method false", a(`request.method == "POST"`), req(idWeb, "GET", "/"), noAllow},
		{"path", a(`request.path.startsWith("/orders")`), req(idWeb, "GET", "/orders/1"), okA},
		{"host", a(`request.host == "orders.shop"`), req(idWeb, "GET", "/"), okA},
		{"host absent, allow", a(`request.host == ""`), with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = "" }), noAllow},
		{"host absent, deny", d(`request.host == "x"`), with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = "" }), okD},
		{"protocol", a(`request.protocol == "http"`), req(idWeb, "GET", "/"), okA},
		{"port", a(`destination.port == 8080`), req(idWeb, "GET", "/"), okA},
		{"principal", a(`source.principal.endsWith("/sa/web")`), req(idWeb, "GET", "/"), okA},
		{"namespace", a(`source.namespace in ["shop", "web"]`), req(idWeb, "GET", "/"), okA},
		{"authenticated", a(`source.authenticated`), req(idWeb, "GET", "/"), okA},
		{"not authenticated", a(`!source.authenticated`), req("", "GET", "/"), okA},
		{"ip", a(`source.ip.startsWith("10.")`), req(idWeb, "GET", "/"), okA},
		{"ip v4-mapped", a(`source.ip == "10.1.2.3"`), with(req(idWeb, "GET", "/"), func(r *Request) { r.SourceIP = netip.MustParseAddr("::ffff:10.1.2.3") }), okA},
		{"digest", a(`source.digest == "sha256:abc"`), with(req(idWeb, "GET", "/"), func(r *Request) { r.SourceDigest = "sha256:abc" }), okA},
		{"now in window", a(`now >= timestamp("2026-03-01T09:00:00Z") && now < timestamp("2026-03-01T17:00:00Z")`), req(idWeb, "GET", "/"), okA},
		{"now out of window", a(`now < timestamp("2026-03-01T09:00:00Z")`), req(idWeb, "GET", "/"), noAllow},
		{"hour of day", a(`now.getHours() == 12`), req(idWeb, "GET", "/"), okA},

		// Missing attributes fail closed without evaluating.
		{"principal, plaintext, allow", a(`source.principal != "x"`), req("", "GET", "/"), noAllow},
		{"principal, plaintext, deny", d(`source.principal == "x"`), req("", "GET", "/"), okD},
		{"namespace, no namespace, allow", a(`source.namespace != "x"`), req(idOddPath, "GET", "/"), noAllow},
		{"namespace, no namespace, deny", d(`source.namespace == "x"`), req(idOddPath, "GET", "/"), okD},
		{"ip unknown, allow", a(`source.ip != ""`), with(req(idWeb, "GET", "/"), func(r *Request) { r.SourceIP = netip.Addr{} }), noAllow},
		{"ip unknown, deny", d(`source.ip == "1.2.3.4"`), with(req(idWeb, "GET", "/"), func(r *Request) { r.SourceIP = netip.Addr{} }), okD},
		{"digest unknown, allow", a(`source.digest != "bad"`), req(idWeb, "GET", "/"), noAllow},
		{"digest unknown, deny", d(`source.digest == "bad"`), req(idWeb, "GET", "/"), okD},
		{"time unknown, allow", a(`now > timestamp("2000-01-01T00:00:00Z")`), with(req(idWeb, "GET", "/"), func(r *Request) { r.Time = time.Time{} }), noAllow},

		// Headers: lower-case names, value by value, trimmed.
		{"header", a(`request.headers["x-tenant"][0] == "acme"`), hdr(http.Header{"X-Tenant": {"acme"}}), okA},
		{"header name case folded", a(`"x-tenant" in request.headers`), hdr(http.Header{"X-TENANT": {"acme"}}), okA},
		{"header trimmed", a(`request.headers["x-tenant"][0] == "acme"`), hdr(http.Header{"X-Tenant": {" \tacme \t"}}), okA},
		{"repeated header, any value", d(`request.headers["x-user"].exists(v, v == "admin")`), hdr(http.Header{"X-User": {"bob", "admin"}}), okD},
		{"repeated header, not joined", d(`request.headers["x-user"].exists(v, v == "bob, admin")`), hdr(http.Header{"X-User": {"bob", "admin"}}), defaultAllow},
		{"repeated header, every value", a(`request.headers["x-user"].all(v, v != "admin")`), hdr(http.Header{"X-User": {"bob", "admin"}}), noAllow},
		{"repeated header, count", d(`size(request.headers["x-user"]) > 1`), hdr(http.Header{"X-User": {"a", "b"}}), okD},
		{"comma list is one value", a(`request.headers["accept"] == ["a, b"]`), hdr(http.Header{"Accept": {"a, b"}}), okA},
		{"header missing, presence test", a(`!("x-debug" in request.headers)`), hdr(nil), okA},
		{"header missing, has()", a(`!has(request.headers.debug)`), hdr(nil), okA},
		{"header via has()", a(`has(request.headers.debug)`), hdr(http.Header{"Debug": {"1"}}), okA},
		{"no headers", a(`size(request.headers) == 0`), req(idWeb, "GET", "/"), okA},

		// Evaluation errors fail closed.
		{"missing key, allow", a(`request.headers["x-debug"][0] == "1"`), hdr(nil), noAllow},
		{"missing key, deny", d(`request.headers["x-debug"][0] == "1"`), hdr(nil), okD},
		{"index out of range, deny", d(`request.headers["x"][1] == "1"`), hdr(http.Header{"X": {"1"}}), okD},
		{"cost limit, deny", d(`request.headers["x"].all(a, request.headers["x"].all(b, request.headers["x"].all(c, a + b + c != "")))`), hdr(http.Header{"X": manyValues(100)}), okD},
		{"cost limit, allow", a(`request.headers["x"].all(a, request.headers["x"].all(b, request.headers["x"].all(c, a + b + c != "")))`), hdr(http.Header{"X": manyValues(100)}), noAllow},

		// A condition is evaluated only when from and to match.
		{"condition with from", wp(DefaultDenyAll, allow("a", Rule{From: []Source{{Principals: []string{idAdmin}}}, When: `true`})), req(idWeb, "GET", "/"), noAllow},
		{"condition and to", wp(DefaultDenyAll, allow("a", Rule{To: []Operation{{Methods: []string{"GET"}}}, When: `request.path == "/x"`})), req(idWeb, "GET", "/x"), okA},
	})
}

func manyValues(n int) []string {
	v := make([]string, n)
	for i := range v {
		v[i] = strings.Repeat("v", 20)
	}
	return v
}

func TestConditionErrors(t *testing.T) {
	tests := []struct{ expr, want string }{
		{``, "must not be blank"},
		{`  `, "must not be blank"},
		{`request.foo == "x"`, "undeclared reference to 'request.foo'"},
		{`headers["x"] == "y"`, "undeclared reference to 'headers'"},
		{`source.principal`, "must be a bool expression, not string"},
		{`request.method == `, "invalid CEL"},
		{`request.method == 1`, "found no matching overload"},
		{`request.headers["X-Tenant"][0] == "a"`, `header names are matched in lower case: write "x-tenant"`},
		{`"X-Tenant" in request.headers`, `write "x-tenant"`},
		{`has(request.headers.Debug)`, `write "debug"`},
		{strings.Repeat("true && ", 600) + "true", "longer than 4096 bytes"},
		{strings.Repeat("(", 120) + "true" + strings.Repeat(")", 120), "invalid CEL"},
	}
	for _, tt := range tests {
		c, msg := compileCondition(tt.expr)
		if c != nil || !strings.Contains(msg, tt.want) {
			t.Errorf("compileCondition(%.40q) = %v, %q; want an error with %q", tt.expr, c != nil, msg, tt.want)
		}
	}
}

func TestConditionErrorInExplain(t *testing.T) {
	e := mustCompile(t, wp(DefaultAllowAuthenticated, denyP("d", when(`request.headers["x-debug"][0] == "1"`))))
	x := e.Explain(req(idWeb, "GET", "/"))
	if x.Decision.Allow || !strings.Contains(x.String(), "when: no such key: x-debug") {
		t.Errorf("Explain:\n%s", x)
	}
}
