// Package bypasstable is the table of path tricks drawn from other
// meshes' and proxies' security advisories (Istio, Envoy and the servers
// behind them), each an attempt at reaching a path under /admin* or
// /api/admin/**. The library's tests replay it against the evaluator, the
// proxy's tests through its real servers: one table, so that every layer
// keeps up with it. It is test data; no binary links it.
package bypasstable

// Attempt is one path trick.
type Attempt struct {
	// Target is the request target as a client sends it.
	Target string
	// Source names the advisory or the trick.
	Source string
}

// Attempts are the tricks, each of which must be refused (by
// normalization) or denied by a DENY rule on /admin* and /api/admin/**.
var Attempts = []Attempt{
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

// Targets returns the request targets of Attempts.
func Targets() []string {
	out := make([]string, len(Attempts))
	for i, a := range Attempts {
		out[i] = a.Target
	}
	return out
}
