package authz

import (
	"strings"
	"testing"
)

// TestCheckRule covers the load-time checks of rules: every bad entry is
// reported with its field path.
func TestCheckRule(t *testing.T) {
	src := func(s Source) *Rule { return &Rule{From: []Source{s}} }
	op := func(o Operation) *Rule { return &Rule{To: []Operation{o}} }
	tests := []struct {
		name string
		r    *Rule
		want []string // "field: message substring", in order
	}{
		{"empty rule", &Rule{}, nil},
		{"valid", &Rule{
			From: []Source{{Principals: []string{idWeb, td + "/ns/shop/*", "*/sa/admin", "*"}, Namespaces: []string{"shop", "team-*", "*-prod"}, IPBlocks: []string{"10.0.0.0/8", "fd00::/8", "192.168.1.1"}}},
			To:   []Operation{{Ports: []uint32{80, 65535}, Methods: []string{"GET", "PROPFIND"}, Paths: []string{"/", "/a/*", "*.css", "*", "/users/{id}/orders", "/static/**", "/**", "/a/.x*"}, Hosts: []string{"Example.COM.", "*.example.com", "api.*", "x:8080", "[::1]:80", "10.0.0.1"}}},
			When: `request.method == "GET"`,
		}, nil},

		// Empty entries.
		{"empty from entry", &Rule{From: []Source{{}}}, []string{"from[0]: is empty"}},
		{"empty to entry", &Rule{To: []Operation{{}}}, []string{"to[0]: is empty"}},

		// Principals: full SPIFFE IDs, * only at the ends.
		{"short principal", src(Source{Principals: []string{"ns/shop/sa/web"}}), []string{`from[0].principals[0]: "ns/shop/sa/web" is matched against the whole SPIFFE ID`}},
		{"short prefix principal", src(Source{Principals: []string{"ns/shop/*"}}), []string{"from[0].principals[0]: \"ns/shop/*\" is matched against the whole SPIFFE ID: a prefix must start with spiffe://"}},
		{"bare prefix principal", src(Source{Principals: []string{"spiffe://*"}}), []string{"a prefix must start with spiffe://<trust-domain>"}},
		{"star in the middle", src(Source{Principals: []string{"spiffe://td/ns/*/sa/web"}}), []string{"'*' may only be the first or the last character"}},
		{"two stars", src(Source{Principals: []string{"*/ns/*"}}), []string{"'*' may only be"}},
		{"principal bad trust domain", src(Source{Principals: []string{"spiffe://TD/ns/a/sa/b"}}), []string{"trust domain that is not lower-case"}},
		{"principal empty segment", src(Source{Principals: []string{"spiffe://td/ns//sa/b"}}), []string{"empty, '.' or '..' path segment"}},
		{"principal dot segment", src(Source{Principals: []string{"spiffe://td/ns/../sa/b"}}), []string{"empty, '.' or '..' path segment"}},
		{"principal character", src(Source{Principals: []string{"spiffe://td/ns/a b"}}), []string{"a character that a SPIFFE ID cannot have"}},
		{"principal empty", src(Source{Principals: []string{""}}), []string{"from[0].principals[0]: \"\" must not be empty"}},
		{"principal duplicate", src(Source{Principals: []string{idWeb, idWeb}}), []string{"from[0].principals[1]: duplicate entry"}},
		{"principal in both", src(Source{Principals: []string{idWeb}, NotPrincipals: []string{idWeb}}), []string{"from[0].principals[0]: can never match: notPrincipals excludes"}},
		{"principal excluded by prefix", src(Source{Principals: []string{idWeb}, NotPrincipals: []string{td + "/ns/shop/*"}}), []string{"from[0].principals[0]: can never match"}},
		{"prefix inside not prefix", src(Source{Principals: []string{td + "/ns/shop/sa/*"}, NotPrincipals: []string{td + "/ns/shop/*"}}), []string{"from[0].principals[0]: can never match"}},
		{"principal against not any", src(Source{Principals: []string{idWeb}, NotPrincipals: []string{"*"}}), []string{"from[0].principals[0]: can never match"}},
		{"principal outside namespaces", src(Source{Principals: []string{idWeb}, Namespaces: []string{"batch"}}), []string{`from[0].principals[0]: can never match: its namespace "shop"`}},
		{"principal in not namespaces", src(Source{Principals: []string{idWeb}, NotNamespaces: []string{"shop"}}), []string{"from[0].principals[0]: can never match"}},

		// Namespaces.
		{"namespace upper case", src(Source{Namespaces: []string{"Shop"}}), []string{"namespaces are lower-case"}},
		{"namespace too long", src(Source{Namespaces: []string{strings.Repeat("a", 64)}}), []string{"is not a namespace name"}},
		{"namespace dash", src(Source{Namespaces: []string{"-a"}}), []string{"is not a namespace name"}},
		{"namespace in both", src(Source{Namespaces: []string{"a"}, NotNamespaces: []string{"a"}}), []string{"from[0].namespaces[0]: can never match"}},
		{"namespace star in the middle", src(Source{Namespaces: []string{"a*b"}}), []string{"'*' may only be"}},

		// IP blocks.
		{"bad cidr", src(Source{IPBlocks: []string{"10.0.0.0/33"}}), []string{`from[0].ipBlocks[0]: "10.0.0.0/33" is not an IP address or CIDR block`}},
		{"not an ip", src(Source{NotIPBlocks: []string{"orders"}}), []string{"from[0].notIpBlocks[0]: \"orders\" is not an IP address"}},
		{"host bits", src(Source{IPBlocks: []string{"10.1.2.3/8"}}), []string{"did you mean 10.0.0.0/8?"}},
		{"zone", src(Source{IPBlocks: []string{"fe80::1%eth0"}}), []string{"is not an IP address"}},
		{"mapped", src(Source{IPBlocks: []string{"::ffff:10.0.0.1"}}), []string{"write the IPv4 address 10.0.0.1"}},
		{"mapped block", src(Source{IPBlocks: []string{"::ffff:10.0.0.0/104"}}), []string{"write it in IPv4 form"}},
		{"block inside not block", src(Source{IPBlocks: []string{"10.1.0.0/16"}, NotIPBlocks: []string{"10.0.0.0/8"}}), []string{"from[0].ipBlocks[0]: can never match"}},
		{"duplicate block", src(Source{IPBlocks: []string{"10.0.0.0/8", "10.0.0.0/8"}}), []string{"from[0].ipBlocks[1]: duplicate block"}},

		// Ports.
		{"port zero", op(Operation{Ports: []uint32{0}}), []string{"to[0].ports[0]: must be between 1 and 65535"}},
		{"port too big", op(Operation{NotPorts: []uint32{65536}}), []string{"to[0].notPorts[0]: must be between 1 and 65535"}},
		{"port duplicate", op(Operation{Ports: []uint32{80, 80}}), []string{"to[0].ports[1]: duplicate port 80"}},
		{"port in both", op(Operation{Ports: []uint32{80}, NotPorts: []uint32{80}}), []string{"to[0].ports[0]: can never match: 80 is also in notPorts"}},

		// Methods.
		{"method lower case", op(Operation{Methods: []string{"get"}}), []string{`to[0].methods[0]: "get" methods are case-sensitive and written in upper case: write "GET"`}},
		{"method not a token", op(Operation{Methods: []string{"GE T"}}), []string{"is not an HTTP method"}},
		{"method star", op(Operation{NotMethods: []string{"*"}}), []string{"to match any method, leave methods out"}},
		{"method empty", op(Operation{Methods: []string{""}}), []string{"must not be empty"}},
		{"method in both", op(Operation{Methods: []string{"GET"}, NotMethods: []string{"GET"}}), []string{"to[0].methods[0]: can never match"}},
		{"method duplicate", op(Operation{Methods: []string{"GET", "GET"}}), []string{"to[0].methods[1]: duplicate method"}},

		// Paths: normalized form, * only at the ends, templates.
		{"path relative", op(Operation{Paths: []string{"admin"}}), []string{"must start with '/'"}},
		{"path not normalized", op(Operation{Paths: []string{"/a//b"}}), []string{`write "/a/b"`}},
		{"path encoded letter", op(Operation{Paths: []string{"/%61dmin"}}), []string{`write "/admin"`}},
		{"path dot segment", op(Operation{Paths: []string{"/a/../b"}}), []string{`write "/b"`}},
		{"path lower-case escape", op(Operation{Paths: []string{"/caf%c3%a9"}}), []string{`write "/caf%C3%A9"`}},
		{"path prefix not normalized", op(Operation{Paths: []string{"//admin*"}}), []string{`write "/admin*"`}},
		{"path suffix not normalized", op(Operation{Paths: []string{"*/./x"}}), []string{`write "*/x"`}},
		{"path encoded slash", op(Operation{Paths: []string{"/a%2Fb"}}), []string{"can never match a request: path holds an encoded '/'"}},
		{"path semicolon", op(Operation{Paths: []string{"/a;b"}}), []string{"can never match a request: path holds ';'"}},
		{"path backslash", op(Operation{NotPaths: []string{`/a\b`}}), []string{"to[0].notPaths[0]"}},
		{"path query", op(Operation{Paths: []string{"/a?b=1"}}), []string{"path holds '?'"}},
		{"path star in the middle", op(Operation{Paths: []string{"/a/*/b"}}), []string{"write a template such as /users/{id}/orders"}},
		{"template rest in the middle", op(Operation{Paths: []string{"/a/**/b"}}), []string{"'**' may only be the last segment"}},
		{"template partial segment", op(Operation{Paths: []string{"/a/x{id}"}}), []string{"a template segment is a literal"}},
		{"template empty name", op(Operation{Paths: []string{"/a/{}"}}), []string{"a template parameter is a whole segment"}},
		{"template star", op(Operation{Paths: []string{"/a/{id}/*"}}), []string{"a template segment is a literal"}},
		{"template relative", op(Operation{Paths: []string{"a/{id}"}}), []string{"must start with '/'"}},
		{"template not normalized", op(Operation{Paths: []string{"/a/{id}/%62"}}), []string{"not in normalized form"}},
		{"template empty segment", op(Operation{Paths: []string{"/a//{id}"}}), []string{"must not have empty segments"}},
		{"path in both", op(Operation{Paths: []string{"/a"}, NotPaths: []string{"/a"}}), []string{"to[0].paths[0]: can never match"}},
		{"path covered by not prefix", op(Operation{Paths: []string{"/admin/x"}, NotPaths: []string{"/admin/*"}}), []string{"to[0].paths[0]: can never match"}},
		{"prefix covered by not prefix", op(Operation{Paths: []string{"/admin/x*"}, NotPaths: []string{"/admin/*"}}), []string{"to[0].paths[0]: can never match"}},
		{"path covered by not template", op(Operation{Paths: []string{"/u/1"}, NotPaths: []string{"/u/{id}"}}), []string{"to[0].paths[0]: can never match"}},
		{"path duplicate", op(Operation{Paths: []string{"/a", "/a"}}), []string{"to[0].paths[1]: duplicate entry"}},
		{"path too long", op(Operation{Paths: []string{"/" + strings.Repeat("a", 9000)}}), []string{"path longer than"}},

		// Hosts.
		{"host bad", op(Operation{Hosts: []string{"a b"}}), []string{`to[0].hosts[0]: "a b" is not a host name`}},
		{"host star in the middle", op(Operation{Hosts: []string{"a.*.com"}}), []string{"'*' may only be"}},
		{"host prefix with port", op(Operation{Hosts: []string{"api.*:80"}}), []string{"'*' may only be"}},
		{"host bad port", op(Operation{Hosts: []string{"a:0"}}), []string{"port that is not a number"}},
		{"host port only", op(Operation{Hosts: []string{":80"}}), []string{"must have a host before its port"}},
		{"host duplicate by case", op(Operation{Hosts: []string{"a.com", "A.COM."}}), []string{"to[0].hosts[1]: duplicate entry \"A.COM.\" (also entry 0; hosts are case-insensitive)"}},
		{"host in both", op(Operation{Hosts: []string{"a.com"}, NotHosts: []string{"A.com"}}), []string{"to[0].hosts[0]: can never match"}},
		{"host covered by not suffix", op(Operation{Hosts: []string{"api.example.com"}, NotHosts: []string{"*.example.com"}}), []string{"to[0].hosts[0]: can never match"}},
		{"host with port vs not host without", op(Operation{Hosts: []string{"a.com:80"}, NotHosts: []string{"a.com"}}), nil},

		// Conditions.
		{"bad condition", &Rule{When: "request.nope"}, []string{"when: invalid CEL: 1:8: undeclared reference to 'request.nope'"}},
		{"non-bool condition", &Rule{When: "1 + 1"}, []string{"when: must be a bool expression, not int"}},

		// Many errors at once, in order.
		{"several", &Rule{From: []Source{{Principals: []string{"web"}}, {}}, To: []Operation{{Ports: []uint32{0}, Methods: []string{"get"}}}, When: "x"},
			[]string{"from[0].principals[0]", "from[1]: is empty", "to[0].ports[0]", "to[0].methods[0]", "when: invalid CEL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := CheckRule(tt.r)
			if len(errs) != len(tt.want) {
				t.Fatalf("CheckRule: %d errors, want %d: %v", len(errs), len(tt.want), errs)
			}
			for i, w := range tt.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d = %q, want it to contain %q", i, errs[i].Error(), w)
				}
				if errs[i].Field == "" {
					t.Errorf("error %d has no field", i)
				}
			}
		})
	}
}

func TestCheckRuleLimits(t *testing.T) {
	many := make([]string, maxListLen+1)
	for i := range many {
		many[i] = "/p" + itoa(i)
	}
	errs := CheckRule(&Rule{To: []Operation{{Paths: many}}})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "to[0].paths: has 1025 entries") {
		t.Errorf("CheckRule: %v", errs)
	}
	long := "spiffe://td/" + strings.Repeat("a", maxEntryLen)
	errs = CheckRule(&Rule{From: []Source{{Principals: []string{long}}}})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "is longer than 1024 bytes") {
		t.Errorf("CheckRule: %v", errs)
	}
}
