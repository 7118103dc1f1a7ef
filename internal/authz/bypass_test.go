package authz

import (
	"strings"
	"testing"

	"github.com/rampart-mesh/rampart/internal/authz/bypasstable"
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
	for _, a := range bypasstable.Attempts {
		path, _, _ := strings.Cut(a.Target, "?")
		n, err := normalize.Path(path)
		if err != nil {
			continue // rejected: the proxy answers 400
		}
		d := e.Decide(req(idWeb, "GET", n))
		if d.Allow {
			t.Errorf("%q (%s) normalized to %q is allowed: %s", a.Target, a.Source, n, d.Reason)
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
