package authz

import (
	"testing"
)

// benchPolicy builds n policies shaped like a real namespace's: a few
// DENY policies on admin paths and banned callers, one AUDIT, and ALLOW
// policies each letting some callers use some routes. The request that
// the benchmark sends is allowed by the last ALLOW policy, so every policy
// is looked at.
func benchPolicy(n int) *WorkloadPolicy {
	var ps []Policy
	ps = append(ps, Policy{Namespace: "rampart-system", Name: "mesh-deny-debug", Action: ActionDeny, Rules: []Rule{paths("/debug/**", "/actuator/**")}})
	ps = append(ps, audit("audit-writes", to(Operation{Methods: []string{"DELETE", "PATCH"}})))
	for i := range n / 10 {
		ps = append(ps, denyP("deny-"+itoa(i),
			Rule{From: []Source{{Principals: []string{td + "/ns/banned" + itoa(i) + "/*"}}}},
			Rule{From: []Source{{NotNamespaces: []string{"shop", "batch", "web"}}}, To: []Operation{{Paths: []string{"/admin/**"}}}},
		))
	}
	for i := len(ps); i < n-1; i++ {
		ps = append(ps, allow("allow-"+itoa(i), Rule{
			From: []Source{{Principals: []string{td + "/ns/team" + itoa(i) + "/sa/api", td + "/ns/team" + itoa(i) + "/sa/worker"}}},
			To:   []Operation{{Methods: []string{"GET", "POST"}, Paths: []string{"/api/v1/team" + itoa(i) + "/*", "/users/{id}/team" + itoa(i)}}},
		}))
	}
	ps = append(ps, allow("allow-web", Rule{
		From: []Source{{Principals: []string{idWeb}, Namespaces: []string{"shop"}}},
		To:   []Operation{{Methods: []string{"GET", "HEAD"}, Paths: []string{"/api/v1/orders/{id}", "/api/v1/orders"}, Hosts: []string{"orders.shop"}}},
	}))
	return wp(DefaultDenyAll, ps...)
}

func benchEngine(tb testing.TB, n int) *Engine {
	tb.Helper()
	p := benchPolicy(n)
	if len(p.Policies) != n {
		tb.Fatalf("built %d policies, want %d", len(p.Policies), n)
	}
	return mustCompile(tb, p)
}

func BenchmarkDecide100Policies(b *testing.B) {
	e := benchEngine(b, 100)
	r := req(idWeb, "GET", "/api/v1/orders/42")
	if d := e.Decide(r); !d.Allow || d.Policy != "shop/allow-web" {
		b.Fatalf("decision %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Decide(r)
	}
}

func BenchmarkDecide100PoliciesDenied(b *testing.B) {
	e := benchEngine(b, 100)
	r := req(idBatch, "GET", "/api/v1/orders/42")
	if d := e.Decide(r); d.Allow {
		b.Fatalf("decision %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Decide(r)
	}
}

func BenchmarkDecideTCP(b *testing.B) {
	e := benchEngine(b, 100)
	r := tcp(idWeb, 5432)
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Decide(r)
	}
}

func BenchmarkDecideDefaultOnly(b *testing.B) {
	e := mustCompile(b, wp(DefaultAllowSameNamespace))
	r := req(idWeb, "GET", "/api/v1/orders/42")
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Decide(r)
	}
}

func BenchmarkDecideCondition(b *testing.B) {
	e := mustCompile(b, wp(DefaultDenyAll, allow("a", when(`request.headers["x-tenant"].exists(v, v == "acme") && source.namespace == "shop"`))))
	r := with(req(idWeb, "GET", "/api/v1/orders/42"), func(r *Request) {
		r.Headers = HTTPHeaders{"X-Tenant": {"acme"}, "Accept": {"*/*"}, "User-Agent": {"bench"}}
	})
	if d := e.Decide(r); !d.Allow {
		b.Fatalf("decision %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Decide(r)
	}
}

func BenchmarkExplain(b *testing.B) {
	e := benchEngine(b, 100)
	r := req(idWeb, "GET", "/api/v1/orders/42")
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Explain(r)
	}
}
