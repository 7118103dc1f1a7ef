package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/authzpb"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/inbound"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
)

// rawGet sends one HTTP/1.1 request with a raw request target to addr and
// returns the response and its body.
func rawGet(t *testing.T, addr, target string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

var (
	deniedBody  = regexp.MustCompile(`^rampart: denied \(decision ([0-9a-f]{12})\)\n$`)
	invalidBody = regexp.MustCompile(`^rampart: invalid request \(decision ([0-9a-f]{12})\): `)
)

// loggedDecision returns the server's log line with decision ID id, or nil.
func (p *benchPath) loggedDecision(t *testing.T, id string) map[string]any {
	t.Helper()
	for _, ln := range strings.Split(p.serverLog.String(), "\n") {
		if !strings.Contains(ln, id) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("log line %q: %v", ln, err)
		}
		if m["decision_id"] == id {
			return m
		}
	}
	return nil
}

// TestPathNormalizesBeforeTheApp: through outbound, the tunnel and
// inbound, the app receives the path the rules matched, and paths that
// servers read in different ways never reach it.
func TestPathNormalizesBeforeTheApp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	res, body := rawGet(t, p.httpAddr, "/uri/a/./b//c?q=%2F")
	if res.StatusCode != http.StatusOK || body != "/uri/a/b/c?q=%2F" {
		t.Fatalf("%s: the app saw %q, want /uri/a/b/c?q=%%2F", res.Status, body)
	}
	hits := p.uriHits.Load()
	for _, target := range []string{"/uri/%2e%2e/admin", "/uri/a/%2E./admin", "/uri/a%2Fb", "/uri/a;b", `/uri/a\b`, "/uri/a%5cb", "/uri/%252F"} {
		res, body := rawGet(t, p.httpAddr, target)
		m := invalidBody.FindStringSubmatch(body)
		if res.StatusCode != http.StatusBadRequest || m == nil || res.Header.Get(inbound.HeaderDecisionID) != m[1] {
			t.Errorf("%s: %s %q, want 400 with a decision ID in the header and the body", target, res.Status, body)
		}
	}
	if got := p.uriHits.Load(); got != hits {
		t.Fatalf("%d refused requests reached the app", got-hits)
	}
	if got := testutil.ToFloat64(p.server.metrics.AuthzDecisions.WithLabelValues("deny", "invalid_request", "", "")); got != 7 {
		t.Fatalf("invalid requests counted %v times, want 7", got)
	}
}

// withPolicy returns the server's configuration with another version and
// authorization policy.
func (p *benchPath) withPolicy(version string, policy *authz.WorkloadPolicy) *meshv1.ProxyConfig {
	c := proto.CloneOf(p.serverConfig)
	c.Version = version
	c.Authorization = nil
	if policy != nil {
		c.Authorization = authzpb.ToProto(policy)
	}
	return c
}

// TestPathDenials: the calling app sees a denied request's decision, and
// a denied stream closes its connection.
func TestPathDenials(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	policy := &authz.WorkloadPolicy{
		Namespace: benchNS, Default: authz.DefaultAllowAuthenticated,
		TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
		Policies: []authz.Policy{{Namespace: benchNS, Name: "deny", Action: authz.ActionDeny, Rules: []authz.Rule{
			// Without ports, a DENY on paths would deny the TCP port too.
			{To: []authz.Operation{{Ports: []uint32{p.h1Port}, Paths: []string{"/admin/**"}}}},
			{To: []authz.Operation{{Ports: []uint32{p.echoPort}}}},
		}}},
	}
	if err := p.server.apply(p.withPolicy("2", policy)); err != nil {
		t.Fatal(err)
	}
	res, body := rawGet(t, p.httpAddr, "/admin/users")
	m := deniedBody.FindStringSubmatch(body)
	if res.StatusCode != http.StatusForbidden || m == nil || res.Header.Get(inbound.HeaderDecisionID) != m[1] {
		t.Fatalf("%s %q, want 403 with the decision ID alone", res.Status, body)
	}
	// The decision ID in the answer is the one the server's log ties to
	// the policy and rule.
	if line := p.loggedDecision(t, m[1]); line == nil || line["reason"] != "DENY policy bench/deny rules[0] matched" ||
		line["policy"] != "bench/deny" || line["path"] != "/admin/users" {
		t.Fatalf("decision %s logged as %v, want the deciding rule", m[1], line)
	}
	if res, _ := rawGet(t, p.httpAddr, "/uri/x"); res.StatusCode != http.StatusOK {
		t.Fatalf("allowed request: %s", res.Status)
	}

	refusedBefore := testutil.ToFloat64(p.client.metrics.Refusals.WithLabelValues(metrics.Outbound, "peer_denied"))
	conn, err := net.Dial("tcp", p.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second)) // a regression fails rather than hangs
	io.WriteString(conn, "ping")
	if n, err := io.Copy(io.Discard, conn); n != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a denied stream echoed %d bytes (%v), want it closed", n, err)
	}
	if got := testutil.ToFloat64(p.server.metrics.AuthzDecisions.WithLabelValues("deny", "deny_rule", "bench/deny", "1")); got != 1 {
		t.Fatalf("denied stream counted %v times by the server", got)
	}
	// The calling proxy closed the app's connection when the stream was
	// refused, and counted it.
	if got := testutil.ToFloat64(p.client.metrics.Refusals.WithLabelValues(metrics.Outbound, "peer_denied")); got != refusedBefore+1 {
		t.Fatalf("refused stream counted %v times by the caller, want %v", got, refusedBefore+1)
	}

	// Without a policy, everything is denied.
	if err := p.server.apply(p.withPolicy("3", nil)); err != nil {
		t.Fatal(err)
	}
	res, body = rawGet(t, p.httpAddr, "/uri/x")
	if m := deniedBody.FindStringSubmatch(body); res.StatusCode != http.StatusForbidden || m == nil {
		t.Fatalf("without a policy: %s %q, want 403", res.Status, body)
	} else if line := p.loggedDecision(t, m[1]); line == nil || line["code"] != "no_policy" {
		t.Fatalf("decision %s logged as %v, want code no_policy", m[1], line)
	}
}

// TestApplyRejectsTheWholeConfigurationForABadPolicy: the last good
// configuration, ports and policy, stays in force.
func TestApplyRejectsTheWholeConfigurationForABadPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	bad := []*meshv1.ProxyConfig{
		p.withPolicy("2", &authz.WorkloadPolicy{ // does not compile
			Namespace: benchNS, Default: authz.DefaultDenyAll, TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
			Policies: []authz.Policy{{Namespace: benchNS, Name: "x", Action: authz.ActionDeny}},
		}),
		p.withPolicy("3", &authz.WorkloadPolicy{ // compiles, but two limits share a name
			Namespace: benchNS, Default: authz.DefaultDenyAll, TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
			RateLimits: []authz.RateLimit{
				{Policy: "bench/l", Name: "a", Per: authz.PerOverall, RequestsPerSecond: 1, Burst: 1},
				{Policy: "bench/l", Name: "a", Per: authz.PerOverall, RequestsPerSecond: 1, Burst: 1},
			},
		}),
	}
	bad[1].Inbound = nil // would refuse every port, if it were applied
	for _, c := range bad {
		if err := p.server.apply(c); err == nil || rejectReason(err) != rejectAuthorization || !strings.Contains(err.Error(), "authorization.") {
			t.Fatalf("version %s: err %v, want a rejected authorization naming the field", c.Version, err)
		}
	}
	if got := testutil.ToFloat64(p.server.metrics.ConfigRejected.WithLabelValues(rejectAuthorization)); got != 2 {
		t.Fatalf("rejections counted %v times, want 2", got)
	}
	if v := p.server.config.Load().GetVersion(); v != "1" {
		t.Fatalf("version %s in force, want 1", v)
	}
	if res, _ := rawGet(t, p.httpAddr, "/uri/x"); res.StatusCode != http.StatusOK {
		t.Fatalf("after the rejections: %s, want the last good configuration to allow it", res.Status)
	}
}
