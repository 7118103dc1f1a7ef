package inbound

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/ratelimit"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

var caller = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")

// compile compiles spec into a Policy, with a limiter on clock now when
// it has limits.
func compile(t testing.TB, spec *authz.WorkloadPolicy, now func() time.Time) Policy {
	t.Helper()
	e, err := authz.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	pol := Policy{Spec: spec, Engine: e}
	if len(spec.RateLimits) > 0 {
		if pol.Limiter, err = ratelimit.New(spec.RateLimits, ratelimit.Options{Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	return pol
}

// allowAuthenticated is the mesh's default policy: strict mTLS, any
// authenticated caller allowed.
func allowAuthenticated(t testing.TB) Policy {
	return compile(t, &authz.WorkloadPolicy{
		Namespace: "shop", Default: authz.DefaultAllowAuthenticated,
		TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
	}, nil)
}

// appServer is an app that counts its requests and answers with the
// request target it received and the Rampart headers it saw.
type appServer struct {
	*httptest.Server
	port int
	hits atomic.Int64
}

func newApp(t *testing.T, h2c bool) *appServer {
	a := &appServer{}
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		var rampart []string
		for k, v := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "rampart") {
				rampart = append(rampart, k+"="+strings.Join(v, ","))
			}
		}
		sort.Strings(rampart)
		io.WriteString(w, r.Proto+" "+r.Host+" "+r.RequestURI+" "+strings.Join(rampart, " "))
	}))
	if h2c {
		a.Config.Protocols = new(http.Protocols)
		a.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	a.Start()
	t.Cleanup(a.Close)
	_, p, _ := net.SplitHostPort(a.Listener.Addr().String())
	a.port, _ = strconv.Atoi(p)
	return a
}

// tunnelRequest is a request as the tunnel server hands it over: from
// caller (unless anonymous), with the request target uri as received.
func tunnelRequest(method, uri, host string, port int, anonymous bool) *http.Request {
	req := httptest.NewRequest(method, "/", nil)
	req.RequestURI = uri
	if u, err := url.ParseRequestURI(uri); err == nil {
		req.URL = u // as a server parses it
	}
	req.Host = host
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
	req.RemoteAddr = "10.0.0.7:41000"
	if port != 0 {
		req.Header.Set(tunnel.HeaderTargetPort, strconv.Itoa(port))
	}
	if !anonymous {
		req = req.WithContext(context.WithValue(req.Context(), peerKey{}, caller))
	}
	return req
}

func TestInboundForwardsOnlyDeclaredPortsAndProtocols(t *testing.T) {
	app := newApp(t, false)
	appPort := strconv.Itoa(app.port)

	m := metrics.New()
	h, err := New(Config{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	h.SetConfig([]*meshv1.InboundPort{
		{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP},
		{Port: 9999, Protocol: meshv1.Protocol_PROTOCOL_TCP},
	}, allowAuthenticated(t))

	tests := []struct {
		name     string
		method   string
		host     string
		target   string
		peer     bool
		wantCode int
		wantBody string
		reason   string
	}{
		{"forwarded with the verified identity", "GET", "orders", appPort, true, 200,
			"HTTP/1.1 orders / Rampart-Client-Id=" + caller.String(), ""},
		{"undeclared port", "GET", "orders", "8081", true, 403, "", ReasonPortNotAllowed},
		{"no port", "GET", "orders", "", true, 403, "", ReasonPortNotAllowed},
		{"garbage port", "GET", "orders", "80x", true, 403, "", ReasonPortNotAllowed},
		{"port out of range", "GET", "orders", "70000", true, 403, "", ReasonPortNotAllowed},
		{"HTTP to an opaque port", "GET", "orders", "9999", true, 403, "", ReasonProtocolMismatch},
		{"stream to an HTTP port", "CONNECT", "127.0.0.1:" + appPort, "", true, 403, "", ReasonProtocolMismatch},
		{"stream to an undeclared port", "CONNECT", "127.0.0.1:8081", "", true, 403, "", ReasonPortNotAllowed},
		{"stream to another host", "CONNECT", "10.0.0.1:9999", "", true, 400, "", ReasonBadTarget},
		{"no peer identity", "GET", "orders", appPort, false, 403, "", ReasonNoPeerIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tunnelRequest(tt.method, "/", tt.host, 0, !tt.peer)
			if tt.target != "" {
				req.Header.Set(tunnel.HeaderTargetPort, tt.target)
			}
			// A forged identity from the peer must be replaced, and its
			// lookalike removed.
			req.Header.Set(tunnel.HeaderClientID, "spiffe://evil/ns/x/sa/y")
			req.Header["Rampart_Client_Id"] = []string{"spiffe://evil/ns/x/sa/z"}
			var before float64
			if tt.reason != "" {
				before = testutil.ToFloat64(m.Refusals.WithLabelValues(metrics.Inbound, tt.reason))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("code %d (%s), want %d", rec.Code, rec.Body, tt.wantCode)
			}
			if tt.wantBody != "" && rec.Body.String() != tt.wantBody {
				t.Fatalf("app saw %q, want %q", rec.Body, tt.wantBody)
			}
			if tt.reason != "" {
				if got := testutil.ToFloat64(m.Refusals.WithLabelValues(metrics.Inbound, tt.reason)); got != before+1 {
					t.Fatalf("refusal %s counted %v times, want %v", tt.reason, got, before+1)
				}
			}
		})
	}
}

func TestInboundRefusesEverythingBeforeConfig(t *testing.T) {
	h, _ := New(Config{Metrics: metrics.New()})
	req := tunnelRequest("GET", "/", "orders", 8080, false)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("code %d before any config, want 403", rec.Code)
	}
}

var decisionIDPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

// checkRefusal checks a refusal's status and decision ID (header and
// body), and that the body names no policy or rule: only the decision ID
// and, for an invalid request, what is wrong with it (inBody).
func checkRefusal(t *testing.T, rec *httptest.ResponseRecorder, status int, inBody string) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("code %d (%s), want %d", rec.Code, rec.Body, status)
	}
	id := rec.Header().Get(HeaderDecisionID)
	if !decisionIDPattern.MatchString(id) {
		t.Fatalf("decision ID %q", id)
	}
	checkRefusalBody(t, rec.Body.String(), status, id, inBody)
	return id
}

// checkRefusalBody checks the body of a refusal with decision id.
func checkRefusalBody(t *testing.T, body string, status int, id, inBody string) {
	t.Helper()
	var ok bool
	switch status {
	case http.StatusForbidden:
		ok = body == "rampart: denied (decision "+id+")\n"
	case http.StatusTooManyRequests:
		ok = regexp.MustCompile(`^rampart: rate limited \(decision ` + id + `\); retry after [0-9]+s\n$`).MatchString(body)
	case http.StatusBadRequest:
		ok = strings.HasPrefix(body, "rampart: invalid request (decision "+id+"): ") && strings.Contains(body, inBody)
	}
	if !ok {
		t.Fatalf("body %q, want only the decision ID %s (and, when invalid, %q)", body, id, inBody)
	}
	for _, secret := range []string{"policy", "rules[", "ALLOW", "DENY", "shop/", "legacy/", "limit "} {
		if strings.Contains(body, secret) {
			t.Fatalf("body %q names %q", body, secret)
		}
	}
}

// logLines records what a Handler logs, as JSON.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func newLogLines() (*logLines, *slog.Logger) {
	l := &logLines{}
	return l, slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the lines logged so far whose message contains msg.
func (l *logLines) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, ln := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if ln == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("log line %q: %v", ln, err)
		}
		if strings.Contains(m["msg"].(string), msg) {
			out = append(out, m)
		}
	}
	return out
}

// decision returns the line logged with decision ID id.
func (l *logLines) decision(t *testing.T, id string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, m := range l.lines(t, "") {
		if m["decision_id"] == id {
			if found != nil {
				t.Fatalf("decision %s logged twice", id)
			}
			found = m
		}
	}
	if found == nil {
		t.Fatalf("decision %s not logged", id)
	}
	return found
}

func TestInboundWithoutPolicyDeniesEverything(t *testing.T) {
	app := newApp(t, false)
	m := metrics.New()
	logs, log := newLogLines()
	h, _ := New(Config{Metrics: m, Logger: log})
	h.SetConfig([]*meshv1.InboundPort{
		{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_AUTO},
	}, Policy{})
	for _, method := range []string{"GET", "CONNECT"} {
		host := "orders"
		if method == "CONNECT" {
			host = "127.0.0.1:" + strconv.Itoa(app.port)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, tunnelRequest(method, "/", host, app.port, false))
		id := checkRefusal(t, rec, http.StatusForbidden, "")
		if line := logs.decision(t, id); line["code"] != "no_policy" {
			t.Fatalf("logged %v, want code no_policy", line)
		}
	}
	if n := app.hits.Load(); n != 0 {
		t.Fatalf("the app was reached %d times", n)
	}
	if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues("deny", "no_policy", "", "")); got != 2 {
		t.Fatalf("no_policy denials counted %v times, want 2", got)
	}
}

// shopPolicy allows web to GET /orders/**, denies /admin/** to everyone,
// audits DELETE and limits POST /login overall to 1 per second.
func shopPolicy(appPort uint32) *authz.WorkloadPolicy {
	return &authz.WorkloadPolicy{
		Namespace: "shop", Default: authz.DefaultDenyAll,
		TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
		Policies: []authz.Policy{
			{Namespace: "shop", Name: "no-admin", Action: authz.ActionDeny, Rules: []authz.Rule{
				{To: []authz.Operation{{Paths: []string{"/admin/**"}}}},
			}},
			{Namespace: "shop", Name: "orders", Action: authz.ActionAllow, Rules: []authz.Rule{
				{From: []authz.Source{{Principals: []string{"spiffe://example.org/ns/shop/sa/other"}}}},
				{From: []authz.Source{{Principals: []string{caller.String()}}},
					To: []authz.Operation{{Methods: []string{"GET", "DELETE", "POST"}, Paths: []string{"/orders/**", "/login"}}}},
				{To: []authz.Operation{{Ports: []uint32{appPort}, Methods: []string{"OPTIONS"}}}},
			}},
			{Namespace: "shop", Name: "watch-deletes", Action: authz.ActionAudit, Rules: []authz.Rule{
				{To: []authz.Operation{{Methods: []string{"DELETE"}}}},
			}},
		},
		RateLimits: []authz.RateLimit{{
			Policy: "shop/limits", Name: "login", Per: authz.PerOverall, RequestsPerSecond: 1, Burst: 1,
			To: []authz.Operation{{Methods: []string{"POST"}, Paths: []string{"/login"}}},
		}},
	}
}

func TestInboundAuthorizesRequests(t *testing.T) {
	app := newApp(t, false)
	m := metrics.New()
	logs, log := newLogLines()
	h, _ := New(Config{Metrics: m, Logger: log})
	now := time.Unix(1700000000, 0)
	h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		compile(t, shopPolicy(uint32(app.port)), func() time.Time { return now }))

	tests := []struct {
		name       string
		method     string
		uri        string
		wantCode   int
		wantURI    string // what the app received
		reason     string // in the log of a refusal (for an invalid request, in its body too)
		labels     []string
		retryAfter string
	}{
		{"allowed by a rule", "GET", "/orders/1?x=%2F", 200, "/orders/1?x=%2F", "", []string{"allow", "allow_rule", "shop/orders", "1"}, ""},
		{"denied by a rule", "GET", "/admin/users", 403, "", "DENY policy shop/no-admin rules[0] matched", []string{"deny", "deny_rule", "shop/no-admin", "0"}, ""},
		{"denied after normalization", "GET", "/orders/../admin/x", 403, "", "DENY policy shop/no-admin rules[0] matched", []string{"deny", "deny_rule", "shop/no-admin", "0"}, ""},
		{"no rule matched", "PUT", "/orders/1", 403, "", "no ALLOW rule matched", []string{"deny", "no_allow_match", "", ""}, ""},
		{"audited and allowed", "DELETE", "/orders/1", 200, "/orders/1", "", []string{"allow", "allow_rule", "shop/orders", "1"}, ""},
		{"within the rate limit", "POST", "/login", 200, "/login", "", []string{"allow", "allow_rule", "shop/orders", "1"}, ""},
		{"over the rate limit", "POST", "/login", 429, "", "shop/limits/login", []string{"allow", "allow_rule", "shop/orders", "1"}, "1"},
		{"path that cannot be normalized", "GET", "/orders/a;b", 400, "", "path holds ';'", []string{"deny", "invalid_request", "", ""}, ""},
		{"asterisk form", "OPTIONS", "*", 400, "", "the asterisk-form target", []string{"deny", "invalid_request", "", ""}, ""},
		{"absolute form", "GET", "http://Orders/orders/2", 200, "/orders/2", "", []string{"allow", "allow_rule", "shop/orders", "1"}, ""},
		{"absolute form naming another host", "GET", "http://payments/orders/2", 400, "", "name different hosts", []string{"deny", "invalid_request", "", ""}, ""},
		{"lower-case method", "get", "/orders/1", 400, "", "the method is not an upper-case token", []string{"deny", "invalid_request", "", ""}, ""},
		{"lower-case letter in a method", "GeT", "/orders/1", 400, "", "the method is not an upper-case token", []string{"deny", "invalid_request", "", ""}, ""},
		{"unknown upper-case method", "PROPFIND", "/orders/1", 403, "", "no ALLOW rule matched", []string{"deny", "no_allow_match", "", ""}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues(tt.labels...))
			hits := app.hits.Load()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, tunnelRequest(tt.method, tt.uri, "orders", app.port, false))
			if tt.wantCode == http.StatusOK {
				if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), " "+tt.wantURI+" ") {
					t.Fatalf("code %d, app saw %q, want %s", rec.Code, rec.Body, tt.wantURI)
				}
			} else {
				inBody := ""
				if tt.wantCode == http.StatusBadRequest {
					inBody = tt.reason
				}
				id := checkRefusal(t, rec, tt.wantCode, inBody)
				line := logs.decision(t, id)
				if why := fmt.Sprint(line["reason"], " ", line["limit"]); !strings.Contains(why, tt.reason) {
					t.Fatalf("logged %v, want %q", line, tt.reason)
				}
				if got := app.hits.Load(); got != hits {
					t.Fatal("a refused request reached the app")
				}
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues(tt.labels...)); got != before+1 {
				t.Fatalf("decision %v counted %v times, want %v", tt.labels, got, before+1)
			}
		})
	}
	if got := testutil.ToFloat64(m.AuthzAudits.WithLabelValues("shop/watch-deletes", "0")); got != 1 {
		t.Fatalf("audits counted %v times, want 1", got)
	}
	if got := testutil.ToFloat64(m.RateLimited.WithLabelValues("shop/limits", "login")); got != 1 {
		t.Fatalf("rate limit refusals counted %v times, want 1", got)
	}
}

func TestInboundForwardsNormalizedPath(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		app := newApp(t, h2c)
		h, _ := New(Config{Metrics: metrics.New()})
		proto := meshv1.Protocol_PROTOCOL_HTTP
		if h2c {
			proto = meshv1.Protocol_PROTOCOL_HTTP2
		}
		h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: proto}}, allowAuthenticated(t))
		tests := []struct {
			uri, host    string
			wantCode     int
			wantHost     string
			wantURI      string
			reasonInBody string
		}{
			{"/a/./b//c", "orders", 200, "orders", "/a/b/c", ""},
			{"/a/b/../c?q=1&r=%2F", "Orders.Shop.:8080", 200, "orders.shop:8080", "/a/c?q=1&r=%2F", ""},
			{"/%7euser/caf%c3%a9", "orders", 200, "orders", "/~user/caf%C3%A9", ""},
			{"/a/%2e%2e/admin", "orders", 400, "", "", "encoded dots"},
			{"/a%2Fb", "orders", 400, "", "", "encoded '/'"},
			{"/admin;x/users", "orders", 400, "", "", "';'"},
			{`/a\b`, "orders", 400, "", "", "backslash"},
			{"/a/%5c/b", "orders", 400, "", "", "encoded backslash"},
			{"/../x", "orders", 400, "", "", "above the root"},
			{"/a", "orders@evil", 400, "", "", "userinfo"},
		}
		for _, tt := range tests {
			t.Run(strconv.FormatBool(h2c)+tt.uri, func(t *testing.T) {
				hits := app.hits.Load()
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, tunnelRequest("GET", tt.uri, tt.host, app.port, false))
				if tt.wantCode != http.StatusOK {
					checkRefusal(t, rec, tt.wantCode, tt.reasonInBody)
					if app.hits.Load() != hits {
						t.Fatal("the request reached the app")
					}
					return
				}
				want := " " + tt.wantHost + " " + tt.wantURI + " "
				if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
					t.Fatalf("code %d, app saw %q, want %q", rec.Code, rec.Body, want)
				}
			})
		}
	}
}

func TestInboundHTTP2HostHeaderMustMatchAuthority(t *testing.T) {
	app := newApp(t, false)
	h, _ := New(Config{Metrics: metrics.New()})
	h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}}, allowAuthenticated(t))
	for _, tt := range []struct {
		hosts []string
		code  int
	}{
		{[]string{"ORDERS"}, 200},
		{[]string{"payments"}, 400},
		{[]string{"orders", "orders"}, 400},
	} {
		req := tunnelRequest("GET", "/", "orders", app.port, false)
		req.Header["Host"] = tt.hosts
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.code {
			t.Errorf("Host %q: code %d (%s), want %d", tt.hosts, rec.Code, rec.Body, tt.code)
		}
	}
}

func TestInboundAuthorizesStreams(t *testing.T) {
	// An app that closes every connection at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	appPort, _ := strconv.Atoi(p)

	m := metrics.New()
	logs, log := newLogLines()
	h, _ := New(Config{Metrics: m, Logger: log})
	now := time.Unix(1700000000, 0)
	spec := &authz.WorkloadPolicy{
		Namespace: "shop", Default: authz.DefaultAllowAuthenticated,
		TLS: authz.TLSPolicy{Mode: authz.TLSStrict},
		Policies: []authz.Policy{{Namespace: "shop", Name: "no-9000", Action: authz.ActionDeny, Rules: []authz.Rule{
			{To: []authz.Operation{{Ports: []uint32{9000}}}},
		}}},
		RateLimits: []authz.RateLimit{{
			Policy: "shop/limits", Name: "streams", Per: authz.PerSource, RequestsPerSecond: 1, Burst: 1,
			To: []authz.Operation{{Ports: []uint32{uint32(appPort)}}},
		}},
	}
	h.SetConfig([]*meshv1.InboundPort{
		{Port: 9000, Protocol: meshv1.Protocol_PROTOCOL_TCP},
		{Port: uint32(appPort), Protocol: meshv1.Protocol_PROTOCOL_TCP},
	}, compile(t, spec, func() time.Time { return now }))

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, tunnelRequest("CONNECT", "", "127.0.0.1:9000", 0, false))
	id := checkRefusal(t, rec, http.StatusForbidden, "")
	if line := logs.decision(t, id); line["reason"] != "DENY policy shop/no-9000 rules[0] matched" {
		t.Fatalf("logged %v, want the deciding rule", line)
	}
	if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues("deny", "deny_rule", "shop/no-9000", "0")); got != 1 {
		t.Fatalf("denied stream counted %v times", got)
	}

	// The first stream takes the only token.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, tunnelRequest("CONNECT", "", "127.0.0.1:"+p, 0, false))
	if rec.Code != http.StatusOK {
		t.Fatalf("first stream: code %d (%s), want 200", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, tunnelRequest("CONNECT", "", "127.0.0.1:"+p, 0, false))
	id = checkRefusal(t, rec, http.StatusTooManyRequests, "")
	if line := logs.decision(t, id); line["limit"] != "shop/limits/streams" {
		t.Fatalf("logged %v, want the limit", line)
	}
	if got := rec.Header().Get("Retry-After"); got != "1" {
		t.Fatalf("Retry-After %q, want 1", got)
	}
	if got := testutil.ToFloat64(m.RateLimited.WithLabelValues("shop/limits", "streams")); got != 1 {
		t.Fatalf("rate-limited stream counted %v times", got)
	}
	if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues("allow", "default_allow", "", "")); got != 2 {
		t.Fatalf("allowed streams counted %v times, want 2", got)
	}
}

func TestSetConfigForgetsSeriesOfRemovedPolicies(t *testing.T) {
	m := metrics.New()
	h, _ := New(Config{Metrics: m})
	app := newApp(t, false)
	ports := []*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_HTTP}}
	now := time.Unix(1700000000, 0)
	clock := func() time.Time { return now }
	h.SetConfig(ports, compile(t, shopPolicy(uint32(app.port)), clock))
	for _, uri := range []string{"/admin/x", "/orders/1", "/login", "/login"} {
		method := "GET"
		if uri == "/login" {
			method = "POST"
		}
		h.ServeHTTP(httptest.NewRecorder(), tunnelRequest(method, uri, "orders", app.port, false))
	}
	if n := testutil.CollectAndCount(m.AuthzDecisions); n != 2 {
		t.Fatalf("%d decision series, want 2", n)
	}
	if n := testutil.CollectAndCount(m.RateLimited); n != 1 {
		t.Fatalf("%d rate-limit series, want 1", n)
	}
	// The same policy without no-admin, the limits and the last rule of
	// orders.
	spec := shopPolicy(uint32(app.port))
	spec.Policies = spec.Policies[1:]
	spec.Policies[0].Rules = spec.Policies[0].Rules[:2]
	spec.RateLimits = nil
	h.SetConfig(ports, compile(t, spec, clock))
	if n := testutil.CollectAndCount(m.AuthzDecisions); n != 1 {
		t.Fatalf("%d decision series after the update, want 1 (shop/orders rules[1])", n)
	}
	if n := testutil.CollectAndCount(m.RateLimited); n != 0 {
		t.Fatalf("%d rate-limit series after the update, want 0", n)
	}
}

func TestRequestTarget(t *testing.T) {
	tests := []struct {
		uri, path, authority string
		ok                   bool
	}{
		{"/a/b?c=d", "/a/b", "", true},
		{"/", "/", "", true},
		{"/a?", "/a", "", true},
		{"http://h:80/a?b", "/a", "h:80", true},
		{"HTTPS://h", "/", "h", true},
		{"http://h?q", "/", "h", true},
		{"http:///a", "", "", false},
		{"http:/a", "", "", false},
		{"ftp://h/a", "", "", false},
		{"*", "", "", false},
		{"h:80", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		path, authority, err := requestTarget(tt.uri)
		if (err == nil) != tt.ok || path != tt.path || authority != tt.authority {
			t.Errorf("requestTarget(%q) = %q, %q, %v; want %q, %q, ok %v", tt.uri, path, authority, err, tt.path, tt.authority, tt.ok)
		}
	}
}

func TestSamplerLetsOneEventASecondThrough(t *testing.T) {
	var s sampler
	t0 := time.Unix(1700000000, 0)
	steps := []struct {
		at         time.Duration
		ok         bool
		suppressed int64
	}{
		{0, true, 0},
		{100 * time.Millisecond, false, 0},
		{900 * time.Millisecond, false, 0},
		{1000 * time.Millisecond, true, 2},
		{1500 * time.Millisecond, false, 0},
		{5 * time.Second, true, 1},
	}
	for _, st := range steps {
		ok, n := s.allow(t0.Add(st.at))
		if ok != st.ok || n != st.suppressed {
			t.Fatalf("at %v: %v, %d; want %v, %d", st.at, ok, n, st.ok, st.suppressed)
		}
	}
}

func TestDecisionIDsAreDistinct(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newDecisionID()
		if !decisionIDPattern.MatchString(id) || seen[id] {
			t.Fatalf("decision ID %q malformed or repeated", id)
		}
		seen[id] = true
	}
}

func TestAllowedRequestCheckDoesNotAllocate(t *testing.T) {
	h, _ := New(Config{Metrics: metrics.New()})
	h.SetConfig([]*meshv1.InboundPort{{Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		compile(t, shopPolicy(8080), nil))
	st := h.state.Load()
	hdr := http.Header{"Accept": {"*/*"}}
	req := &http.Request{Method: "GET", RequestURI: "/orders/1?x=y", Host: "orders", ProtoMajor: 2, Header: hdr}
	allocs := testing.AllocsPerRun(100, func() {
		_, path, host, err := requestPathHost(req)
		if err != nil {
			t.Fatal(err)
		}
		r := authz.Request{
			Source: caller.String(), Authenticated: true, SourceIP: remoteIP("10.0.0.7:4000"),
			Port: 8080, Protocol: authz.ProtocolHTTP, Method: "GET", Path: path, Host: host,
			Headers: authz.HTTPHeaders(hdr), Time: time.Now(),
		}
		if v := h.check(st, &r); v.status != 0 {
			t.Fatalf("refused: %s", v.message)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per allowed request", allocs)
	}
}
