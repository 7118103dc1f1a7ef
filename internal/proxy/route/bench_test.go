package route

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// benchHeader is a typical request's header: a dozen fields, the canary
// header absent.
var benchHeader = http.Header{
	"Accept":          {"application/json"},
	"Accept-Encoding": {"gzip"},
	"User-Agent":      {"shop-client/1.2"},
	"Content-Type":    {"application/json"},
	"X-Request-Id":    {"4bf92f3577b34da6a3ce929d0e0e4736"},
	"Traceparent":     {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	"Authorization":   {"Bearer abc"},
	"X-Tenant":        {"acme"},
	"Cookie":          {"a=1", "b=2"},
	"Cache-Control":   {"no-cache"},
	"Origin":          {"https://shop.example.com"},
	"X-Forwarded-For": {"10.0.0.9"},
}

// BenchmarkMatch measures Match on the example route of docs/traffic.md (a
// header rule, a method and prefix rule, a catch-all split) and on a route
// of 128 matches (the most one route may hold), for a request matched by
// the first entry, one matched by the last, and one matched by nothing.
func BenchmarkMatch(b *testing.B) {
	example := &meshv1.Route{Namespace: "shop", Name: "web", Rules: []*meshv1.RouteRule{
		rule("testers", match(prefix("/"), "", header("X-Canary", "always"))),
		rule("orders", match(prefix("/api/orders"), "POST")),
		rule("split", match(prefix("/"), "")),
	}}
	large := &meshv1.Route{Namespace: "shop", Name: "large"}
	for i := range maxRules {
		r := &meshv1.RouteRule{Backends: []*meshv1.RouteBackend{backend("web-v1", 80, 1)}}
		for j := range maxMatches / maxRules {
			r.Matches = append(r.Matches, match(exact(fmt.Sprintf("/api/v%d/resource-%d", i, j)), "GET", header("X-Tenant", "acme")))
		}
		large.Rules = append(large.Rules, r)
	}
	tests := []struct {
		name   string
		route  *meshv1.Route
		method string
		path   string
		ok     bool
	}{
		{"example/first", example, "POST", "/api/orders/17", true},
		{"example/last", example, "GET", "/catalog/items/42", true},
		{"large/first", large, "GET", "/api/v0/resource-0", true},
		{"large/last", large, "GET", "/api/v15/resource-7", true},
		{"large/none", large, "GET", "/catalog", false},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			tbl := mustTable(b, services(tt.route), 80)
			if _, ok := tbl.Match(tt.method, tt.path, benchHeader); ok != tt.ok {
				b.Fatalf("Match(%s %s) = %v, want %v", tt.method, tt.path, ok, tt.ok)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				tbl.Match(tt.method, tt.path, benchHeader)
			}
		})
	}
}

// BenchmarkPick measures a weighted pick among 2 and 16 backends, with its
// random number.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{2, 16} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			r := &meshv1.RouteRule{Matches: []*meshv1.RouteMatch{match(prefix("/"), "")}}
			for i := range n {
				r.Backends = append(r.Backends, backend("web-v1", 80, uint32(i+1)))
			}
			tbl := mustTable(b, services(&meshv1.Route{Namespace: "shop", Name: "r", Rules: []*meshv1.RouteRule{r}}), 80)
			rule, _ := tbl.Match("GET", "/", nil)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if rule.Pick(rand.Uint64()) == nil {
					b.Fatal("no backend")
				}
			}
		})
	}
}
