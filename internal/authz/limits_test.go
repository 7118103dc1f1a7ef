package authz

import (
	"strings"
	"testing"
	"time"
)

func TestRateLimitMatch(t *testing.T) {
	limit := func(from []Source, to []Operation) *RateLimitMatcher {
		m, err := CompileRateLimit(&RateLimit{Policy: "shop/rl", Name: "x", Per: PerOverall, RequestsPerSecond: 1, Burst: 1, From: from, To: to})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name  string
		m     *RateLimitMatcher
		r     *Request
		ok    bool
		route int
	}{
		{"empty matches all", limit(nil, nil), req(idWeb, "GET", "/"), true, 0},
		{"empty matches tcp", limit(nil, nil), tcp("", 5432), true, 0},
		{"principal", limit([]Source{{Principals: []string{idWeb}}}, nil), req(idWeb, "GET", "/"), true, 0},
		{"principal, other", limit([]Source{{Principals: []string{idWeb}}}, nil), req(idAdmin, "GET", "/"), false, 0},
		{"principal, plaintext", limit([]Source{{Principals: []string{"*"}}}, nil), req("", "GET", "/"), false, 0},
		{"not principal, plaintext", limit([]Source{{NotPrincipals: []string{idWeb}}}, nil), req("", "GET", "/"), false, 0},
		{"ip block, plaintext", limit([]Source{{IPBlocks: []string{"10.0.0.0/8"}}}, nil), req("", "GET", "/"), true, 0},
		{"route", limit(nil, []Operation{{Paths: []string{"/login"}}, {Paths: []string{"/api/**"}}}), req(idWeb, "POST", "/api/x"), true, 1},
		{"route, first", limit(nil, []Operation{{Paths: []string{"/login"}}, {Paths: []string{"/api/**"}}}), req(idWeb, "POST", "/login"), true, 0},
		{"route, none", limit(nil, []Operation{{Paths: []string{"/login"}}}), req(idWeb, "POST", "/x"), false, 0},
		{"route, tcp", limit(nil, []Operation{{Paths: []string{"*"}}}), tcp(idWeb, 8080), false, 0},
		{"port route, tcp", limit(nil, []Operation{{Ports: []uint32{5432}}}), tcp(idWeb, 5432), true, 0},
		{"method", limit(nil, []Operation{{Methods: []string{"POST"}}}), req(idWeb, "GET", "/"), false, 0},
	}
	for _, tt := range tests {
		ok, route := tt.m.Match(tt.r)
		if ok != tt.ok || route != tt.route {
			t.Errorf("%s: Match = %v, %d; want %v, %d", tt.name, ok, route, tt.ok, tt.route)
		}
	}
	m := limit([]Source{{Namespaces: []string{"shop"}}}, []Operation{{Paths: []string{"/a/{id}"}}})
	r := req(idWeb, "GET", "/a/1")
	if n := testing.AllocsPerRun(100, func() { m.Match(r) }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

func TestCompileRateLimitErrors(t *testing.T) {
	base := RateLimit{Policy: "shop/rl", Name: "x", Per: PerSource, RequestsPerSecond: 10, Burst: 20}
	tests := []struct {
		name   string
		mutate func(*RateLimit)
		want   string
	}{
		{"valid", func(*RateLimit) {}, ""},
		{"valid cool-down", func(l *RateLimit) { l.CoolDown, l.CoolDownAfter = time.Minute, 3 }, ""},
		{"no policy", func(l *RateLimit) { l.Policy = "" }, "policy: is required"},
		{"no name", func(l *RateLimit) { l.Name = "" }, "name: is required"},
		{"no per", func(l *RateLimit) { l.Per = PerUnset }, "per: must be source, route or overall"},
		{"route without routes", func(l *RateLimit) { l.Per = PerRoute }, "to: per route needs routes"},
		{"zero rate", func(l *RateLimit) { l.RequestsPerSecond = 0 }, "requestsPerSecond: must be between 1"},
		{"huge rate", func(l *RateLimit) { l.RequestsPerSecond = 1 << 30 }, "requestsPerSecond: must be between 1"},
		{"zero burst", func(l *RateLimit) { l.Burst = 0 }, "burst: must be between 1"},
		{"cool-down overall", func(l *RateLimit) { l.Per, l.CoolDown, l.CoolDownAfter = PerOverall, time.Minute, 1 }, "coolDown: cuts a source off, so it needs per source"},
		{"cool-down short", func(l *RateLimit) { l.CoolDown, l.CoolDownAfter = time.Millisecond, 1 }, "coolDown: must be between 1s and 24h0m0s"},
		{"cool-down no windows", func(l *RateLimit) { l.CoolDown = time.Minute }, "coolDownAfter: must be between 1 and 3600"},
		{"windows without cool-down", func(l *RateLimit) { l.CoolDownAfter = 3 }, "coolDown: must be between"},
		{"bad match", func(l *RateLimit) { l.To = []Operation{{Paths: []string{"x"}}} }, "to[0].paths[0]"},
	}
	for _, tt := range tests {
		l := base
		tt.mutate(&l)
		_, err := CompileRateLimit(&l)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}
