package authz_test

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/normalize"
)

// The proxy compiles the WorkloadPolicy the controller sent, normalizes
// each request's path and host, and decides.
func Example() {
	engine, err := authz.Compile(&authz.WorkloadPolicy{
		Namespace: "shop",
		Default:   authz.DefaultDenyAll,
		TLS:       authz.TLSPolicy{Mode: authz.TLSStrict},
		Policies: []authz.Policy{{
			Namespace: "shop", Name: "web-reads-orders", Action: authz.ActionAllow,
			Rules: []authz.Rule{{
				From: []authz.Source{{Principals: []string{"spiffe://rampart.local/ns/shop/sa/web"}}},
				To:   []authz.Operation{{Methods: []string{"GET"}, Paths: []string{"/orders/{id}"}}},
			}},
		}},
	})
	if err != nil {
		panic(err)
	}
	for _, target := range []string{"/orders/42?full=1", "/orders/./42", "/orders/42/../../admin", "/orders/%2e%2e/admin"} {
		rawPath, _, _ := strings.Cut(target, "?")
		path, err := normalize.Path(rawPath)
		if err != nil {
			fmt.Printf("%s: 400 (%v)\n", target, err)
			continue
		}
		d := engine.Decide(&authz.Request{
			Source:        "spiffe://rampart.local/ns/shop/sa/web",
			Authenticated: true,
			SourceIP:      netip.MustParseAddr("10.0.0.7"),
			Port:          8080,
			Protocol:      authz.ProtocolHTTP,
			Method:        "GET",
			Path:          path,
			Host:          "orders.shop",
		})
		fmt.Printf("%s: %s\n", target, d)
	}
	// Output:
	// /orders/42?full=1: allow: ALLOW policy shop/web-reads-orders rules[0] matched
	// /orders/./42: allow: ALLOW policy shop/web-reads-orders rules[0] matched
	// /orders/42/../../admin: deny: no ALLOW rule matched
	// /orders/%2e%2e/admin: 400 (normalize: path holds a '.' or '..' segment written with encoded dots)
}
