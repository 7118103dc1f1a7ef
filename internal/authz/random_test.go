package authz

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestIndexMatchesFullScan compares Decide, which narrows rules down with
// the identity index, with Explain, which checks every rule, on random
// policies and requests.
func TestIndexMatchesFullScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ids := []string{idWeb, idAdmin, idBatch, idOddPath, td + "/ns/shop/sa/api", td + "/ns/web/sa/web", ""}
	nss := []string{"shop", "batch", "web", "sh*", "*"}
	pick := func(list []string) string { return list[rng.IntN(len(list))] }
	some := func(list []string) []string {
		var out []string
		seen := map[string]bool{}
		for range 1 + rng.IntN(3) {
			v := pick(list)
			if v != "" && !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
		return out
	}
	principalPats := []string{idWeb, idAdmin, idBatch, idOddPath, td + "/ns/shop/*", "*/sa/web", "*"}
	pathPats := []string{"/a", "/a/*", "/b/{id}", "/c/**", "*.css", "*"}
	randSource := func() Source {
		var s Source
		switch rng.IntN(5) {
		case 0:
			s.Principals = some(principalPats)
		case 1:
			s.Namespaces = some(nss)
		case 2:
			s.Principals = some(principalPats[:4])
			if rng.IntN(2) == 0 {
				s.IPBlocks = []string{"10.0.0.0/8"}
			}
		case 3:
			s.NotPrincipals = []string{idAdmin}
		default:
			s.Namespaces = some(nss[:3])
			s.NotIPBlocks = []string{"192.168.0.0/16"}
		}
		return s
	}
	randRule := func() Rule {
		var r Rule
		for range rng.IntN(3) {
			r.From = append(r.From, randSource())
		}
		if rng.IntN(2) == 0 {
			r.To = []Operation{{Paths: some(pathPats)}}
		}
		if rng.IntN(3) == 0 {
			r.To = append(r.To, Operation{Methods: []string{"POST"}, Ports: []uint32{8080}})
		}
		return r
	}
	var paths = []string{"/a", "/a/x", "/b/1", "/c", "/c/d", "/x.css", "/z"}
	for round := range 300 {
		var ps []Policy
		for i := range 1 + rng.IntN(20) {
			p := Policy{Namespace: "shop", Name: "p" + itoa(i), Action: Action(1 + rng.IntN(3))}
			for range rng.IntN(4) {
				p.Rules = append(p.Rules, randRule())
			}
			if p.Action != ActionAllow && len(p.Rules) == 0 {
				p.Rules = []Rule{randRule()}
			}
			ps = append(ps, p)
		}
		pol := wp(DefaultMode(1+rng.IntN(3)), ps...)
		e, err := Compile(pol)
		if err != nil {
			continue // a random conflict; fine
		}
		for range 30 {
			id := pick(ids)
			var r *Request
			if rng.IntN(4) == 0 {
				r = tcp(id, 8080)
			} else {
				r = req(id, pick([]string{"GET", "POST"}), pick(paths))
			}
			if rng.IntN(5) == 0 {
				r.SourceIP = netip.MustParseAddr("192.168.1.1")
			}
			d := e.Decide(r)
			if x := e.Explain(r); x.Decision != d {
				t.Fatalf("round %d: request %+v:\nDecide  %+v\nExplain %+v\n%s", round, r, d, x.Decision, x)
			}
		}
	}
}
