package authz

import (
	"strings"
	"testing"

	"github.com/rampart-mesh/rampart/internal/authz/normalize"
)

// TestPathBypasses replays path tricks from the advisories of other
// meshes and proxies (Istio, Envoy, and the servers behind them) against
// a DENY /admin rule, going through normalize.Path as the proxy does:
// each attempt must be rejected by normalization or denied.
func TestPathBypasses(t *testing.T) {
	e := mustCompile(t, wp(DefaultAllowAuthenticated,
		denyP("deny-admin", paths("/admin*", "/api/admin/**")),
	))
	attempts := []struct{ target, source string }{
		{"/admin", "baseline"},
		{"/admin/users", "baseline"},
		{"/admin%2F..", "Istio ISTIO-SECURITY-2021-008 (CVE-2021-31920): encoded slash"},
		{"/admin%2f", "encoded slash, lower case"},
		{"/public%2F..%2Fadmin", "encoded slash and dots"},
		{"/public/..%2Fadmin", "encoded slash after dot-dot"},
		{"/public%5C..%5Cadmin", "CVE-2021-31920: encoded backslash"},
		{`\admin`, "backslash as separator (IIS, some Windows servers)"},
		{`/public\..\admin`, "backslash traversal"},
		{"//admin", "repeated slash (Envoy merge_slashes)"},
		{"///admin", "repeated slashes"},
		{"/./admin", "dot segment"},
		{"/admin/.", "trailing dot segment"},
		{"/admin/../admin", "dot-dot back to the same path"},
		{"/public/../admin", "CVE-2019-9901 (Envoy): dot-dot traversal"},
		{"/public/./../admin", "mixed dot segments"},
		{"/%2e%2e/admin", "encoded dot-dot"},
		{"/public/%2e%2e/admin", "encoded dot-dot traversal"},
		{"/public/.%2e/admin", "half-encoded dot-dot"},
		{"/public/%2E%2E/admin", "encoded dot-dot, upper case"},
		{"/admin%2e%2e", "encoded dots at the end"},
		{"/admin;foo", "path parameter (Tomcat, Spring strip it)"},
		{"/admin;", "empty path parameter"},
		{"/public/..;/admin", "Tomcat ..; traversal"},
		{"/admin;jsessionid=x/users", "path parameter in a segment"},
		{"/admin#", "CVE-2021-39156 (Istio): fragment"},
		{"/admin#/public", "fragment hiding the path"},
		{"/public#/../admin", "fragment with traversal"},
		{"/%61dmin", "encoded unreserved letter"},
		{"/%61%64%6d%69%6e", "fully encoded"},
		{"/ad%6Din", "encoded letter in the middle"},
		{"/%2561dmin", "double encoding"},
		{"/%252e%252e/admin", "double-encoded dot-dot"},
		{"/public/%252F../admin", "double-encoded slash"},
		{"/admin%00", "encoded NUL"},
		{"/admin%00.html", "NUL truncation"},
		{"/admin%0d%0a", "encoded CRLF"},
		{"/admin\x00", "raw NUL"},
		{"/admin\t", "raw tab"},
		{"/admin /x", "raw space"},
		{"/ａdmin", "full-width letter, raw UTF-8"},
		{"admin", "no leading slash (HTTP/2 :path)"},
		{"*", "asterisk form"},
		{"http://orders.shop/admin", "absolute form left unparsed"},
		{"/public/../../admin", "traversal above the root"},
		{"/api/v1/../admin/x", "traversal into a rest template"},
		{"/api/admin", "rest template base"},
		{"/api//admin/x", "repeated slash before a rest template"},
		{"/api/./admin", "dot segment before a rest template"},
		{"/api/%61dmin/x", "encoded letter in a rest template"},
	}
	for _, a := range attempts {
		path, _, _ := strings.Cut(a.target, "?")
		n, err := normalize.Path(path)
		if err != nil {
			continue // rejected: the proxy answers 400
		}
		d := e.Decide(req(idWeb, "GET", n))
		if d.Allow {
			t.Errorf("%q (%s) normalized to %q is allowed: %s", a.target, a.source, n, d.Reason)
		}
	}
	// The query is split off before normalization.
	n, err := normalize.Path("/admin")
	if err != nil || e.Decide(req(idWeb, "GET", n)).Allow {
		t.Errorf("/admin?x=1 allowed")
	}
}

// TestPathsAreCaseSensitive documents a non-bypass: paths are matched
// case-sensitively, as HTTP defines them. An app that folds case needs rules
// that list the cases it accepts (or a CEL condition).
func TestPathsAreCaseSensitive(t *testing.T) {
	e := mustCompile(t, wp(DefaultAllowAuthenticated, denyP("deny-admin", paths("/admin*"))))
	if !e.Decide(req(idWeb, "GET", "/ADMIN")).Allow {
		t.Errorf("/ADMIN denied by a rule on /admin*: paths are meant to be case-sensitive")
	}
	// For such an app, a condition can fold case.
	e = mustCompile(t, wp(DefaultAllowAuthenticated, denyP("deny-admin", when(`request.path.lowerAscii().startsWith("/admin")`))))
	if e.Decide(req(idWeb, "GET", "/ADMIN")).Allow {
		t.Errorf("/ADMIN allowed past a case-folding condition")
	}
}

// TestHostBypasses: a DENY on a host catches every spelling of it.
func TestHostBypasses(t *testing.T) {
	e := mustCompile(t, wp(DefaultAllowAuthenticated, denyP("deny-admin-host", to(Operation{Hosts: []string{"admin.shop"}}))))
	for _, h := range []string{"admin.shop", "ADMIN.shop", "Admin.Shop", "admin.shop.", "admin.shop:8080", "admin.shop.:8080", "ADMIN.SHOP.:443"} {
		n, err := normalize.RequestHost(h, "")
		if err != nil {
			continue
		}
		r := with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = n })
		if d := e.Decide(r); d.Allow {
			t.Errorf("host %q normalized to %q is allowed", h, n)
		}
	}
	// A request naming two hosts is rejected.
	if _, err := normalize.RequestHost("orders.shop", "admin.shop"); err == nil {
		t.Errorf("RequestHost accepted two different hosts")
	}
	// No host at all matches a DENY on hosts.
	if d := e.Decide(with(req(idWeb, "GET", "/"), func(r *Request) { r.Host = "" })); d.Allow {
		t.Errorf("request without a host allowed past a DENY on hosts")
	}
}
