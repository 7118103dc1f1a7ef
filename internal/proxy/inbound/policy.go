package inbound

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/normalize"
	"github.com/rampart-mesh/rampart/internal/authz/ratelimit"
	"github.com/rampart-mesh/rampart/internal/proxy/logsample"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/tunnel"
)

// HeaderDecisionID names, on a response the proxy refused itself, the
// decision's ID; see tunnel.HeaderDecisionID.
const HeaderDecisionID = tunnel.HeaderDecisionID

// Policy is the authorization policy the handler enforces. The zero
// Policy is no policy: every request and stream is denied (code
// no_policy).
type Policy struct {
	// Spec is the policy that Engine was compiled from (and Limiter built
	// from); its policies, rules and limits name the label values of the
	// authorization metrics. Nil with a nil Engine.
	Spec *authz.WorkloadPolicy
	// Engine decides; nil denies everything.
	Engine *authz.Engine
	// Limiter applies the rate limits; nil limits nothing.
	Limiter *ratelimit.Limiter
}

// state is what one configuration lets through: the app ports and the
// policy, swapped together so that no request sees the ports of one
// configuration with the policy of another.
type state struct {
	ports  map[uint32]*appPort
	policy Policy
	counts *policyCounts
}

func (s *state) port(n uint64) (*appPort, bool) {
	if n == 0 || n > 65535 {
		return nil, false
	}
	a, ok := s.ports[uint32(n)]
	return a, ok
}

// policyCounts holds the metric children of one policy, built when it is
// installed, so that counting a decision hashes no label values. Every
// label value comes from the policy, never from a request.
type policyCounts struct {
	m *metrics.Metrics
	// rules are the children of the rules of each policy, by
	// "namespace/name".
	rules map[string][]ruleCounts
	// other counts the decisions that no rule made, by code and by
	// allow (1) or deny (0).
	other [numCodes][2]*metrics.Child
	// otherLog samples the log of the denials that no rule made, by code.
	otherLog [numCodes]*logsample.Bucket
	// limits are the rate limits, by "namespace/policy/limit".
	limits map[string]*limitCounts
	// auditMode counts, by what Engine.AuditModePolicy names, the
	// requests whose decision the policies in AUDIT mode would change;
	// nil without such policies. auditModeLog samples the log of a
	// label it does not name.
	auditMode    map[string]*auditModeCounts
	auditModeLog logsample.Bucket
}

type auditModeCounts struct {
	would [2]*metrics.Child // would_deny, would_allow
	log   logsample.Bucket
}

// Values of the result label of rampart_proxy_authz_audit_mode_total.
const (
	wouldDeny  = "would_deny"
	wouldAllow = "would_allow"
)

func wouldLabel(allow bool) string {
	if allow {
		return wouldAllow
	}
	return wouldDeny
}

// numCodes bounds the authz.Code values that policyCounts keeps at hand.
const numCodes = 8

type ruleCounts struct {
	decided [2]*metrics.Child // deny_rule, allow_rule
	audited *metrics.Child
	// denyLog and auditLog sample the log of the rule's denials and
	// AUDIT matches: a caller must not flood the log.
	denyLog, auditLog *logsample.Bucket
}

type limitCounts struct {
	refused *metrics.Child
	// log lets one line a second about this limit through: a flood of
	// refusals must not flood the log.
	log sampler
}

func verdictLabel(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// newPolicyCounts builds the children for spec and engine, compiled from
// it, keeping the samplers of the limits that prev has too.
func newPolicyCounts(m *metrics.Metrics, spec *authz.WorkloadPolicy, engine *authz.Engine, prev *policyCounts) *policyCounts {
	c := &policyCounts{m: m, rules: map[string][]ruleCounts{}, limits: map[string]*limitCounts{}}
	if labels := engine.AuditModeLabels(); len(labels) > 0 {
		c.auditMode = make(map[string]*auditModeCounts, len(labels))
		for _, l := range labels {
			c.auditMode[l] = &auditModeCounts{would: [2]*metrics.Child{
				metrics.NewChild(m.AuthzAuditMode, wouldDeny, l),
				metrics.NewChild(m.AuthzAuditMode, wouldAllow, l),
			}}
		}
	}
	for code := range numCodes {
		c.otherLog[code] = new(logsample.Bucket)
		for allow := range 2 {
			c.other[code][allow] = metrics.NewChild(m.AuthzDecisions, verdictLabel(allow == 1), authz.Code(code).String(), "", "")
		}
	}
	if spec == nil {
		return c
	}
	for _, p := range spec.Policies {
		ref := p.Namespace + "/" + p.Name
		rules := make([]ruleCounts, len(p.Rules))
		for i := range rules {
			idx := strconv.Itoa(i)
			rules[i] = ruleCounts{
				decided: [2]*metrics.Child{
					metrics.NewChild(m.AuthzDecisions, "deny", authz.CodeDenyRule.String(), ref, idx),
					metrics.NewChild(m.AuthzDecisions, "allow", authz.CodeAllowRule.String(), ref, idx),
				},
				audited:  metrics.NewChild(m.AuthzAudits, ref, idx),
				denyLog:  new(logsample.Bucket),
				auditLog: new(logsample.Bucket),
			}
		}
		c.rules[ref] = rules
	}
	for _, l := range spec.RateLimits {
		id := l.Policy + "/" + l.Name
		if prev != nil {
			if old, ok := prev.limits[id]; ok {
				c.limits[id] = old
				continue
			}
		}
		c.limits[id] = &limitCounts{refused: metrics.NewChild(m.RateLimited, l.Policy, l.Name)}
	}
	return c
}

// forget deletes the series of the policies, rules and limits that c has
// and next does not, so that the series stay bounded by the policy in
// force rather than by every policy ever seen.
func (c *policyCounts) forget(next *policyCounts) {
	for ref, rules := range c.rules {
		n := len(next.rules[ref])
		if _, ok := next.rules[ref]; !ok {
			c.m.AuthzDecisions.DeletePartialMatch(prometheus.Labels{"policy": ref})
			c.m.AuthzAudits.DeletePartialMatch(prometheus.Labels{"policy": ref})
			continue
		}
		for i := n; i < len(rules); i++ {
			idx := strconv.Itoa(i)
			c.m.AuthzDecisions.DeletePartialMatch(prometheus.Labels{"policy": ref, "rule": idx})
			c.m.AuthzAudits.DeleteLabelValues(ref, idx)
		}
	}
	for l := range c.auditMode {
		if _, ok := next.auditMode[l]; !ok {
			c.m.AuthzAuditMode.DeletePartialMatch(prometheus.Labels{"policy": l})
		}
	}
	for id := range c.limits {
		if _, ok := next.limits[id]; !ok {
			i := strings.LastIndexByte(id, '/')
			c.m.RateLimited.DeleteLabelValues(id[:i], id[i+1:])
		}
	}
}

// decision counts d.
func (c *policyCounts) decision(d *authz.Decision) {
	allow := b2i(d.Allow)
	if d.Policy == "" {
		if int(d.Code) < numCodes {
			c.other[d.Code][allow].Inc()
			return
		}
	} else if rules := c.rules[d.Policy]; d.Rule >= 0 && d.Rule < len(rules) {
		if (d.Code == authz.CodeAllowRule) == d.Allow && (d.Code == authz.CodeAllowRule || d.Code == authz.CodeDenyRule) {
			rules[d.Rule].decided[allow].Inc()
			return
		}
	}
	// Not kept at hand (the engine and its spec disagree, which they do
	// not): the label values still come from the policy.
	rule := ""
	if d.Rule >= 0 {
		rule = strconv.Itoa(d.Rule)
	}
	c.m.AuthzDecisions.WithLabelValues(verdictLabel(d.Allow), d.Code.String(), d.Policy, rule).Inc()
}

// audit counts a matched AUDIT rule.
func (c *policyCounts) audit(ref authz.RuleRef) {
	if rules := c.rules[ref.Policy]; ref.Rule >= 0 && ref.Rule < len(rules) {
		rules[ref.Rule].audited.Inc()
		return
	}
	c.m.AuthzAudits.WithLabelValues(ref.Policy, strconv.Itoa(ref.Rule)).Inc()
}

// denyLog returns the sampler of the log of d, a denial: its rule's, or
// its code's.
func (c *policyCounts) denyLog(d *authz.Decision) *logsample.Bucket {
	if rules := c.rules[d.Policy]; d.Policy != "" && d.Rule >= 0 && d.Rule < len(rules) {
		return rules[d.Rule].denyLog
	}
	if d.Policy == "" && int(d.Code) < numCodes {
		return c.otherLog[d.Code]
	}
	return nil
}

// auditLog returns the sampler of the log of an AUDIT match.
func (c *policyCounts) auditLog(ref authz.RuleRef) *logsample.Bucket {
	if rules := c.rules[ref.Policy]; ref.Rule >= 0 && ref.Rule < len(rules) {
		return rules[ref.Rule].auditLog
	}
	return nil
}

// sampler lets one event a second through and counts the others.
type sampler struct {
	next       atomic.Int64 // Unix nanoseconds before which events are held back
	suppressed atomic.Int64
}

// allow reports whether to log the event that happens at now, and how
// many were held back since the last one let through.
func (s *sampler) allow(now time.Time) (ok bool, suppressed int64) {
	n := now.UnixNano()
	next := s.next.Load()
	if n < next || !s.next.CompareAndSwap(next, n+int64(time.Second)) {
		s.suppressed.Add(1)
		return false, 0
	}
	return true, s.suppressed.Swap(0)
}

// verdict is the outcome of check for a request or stream that may not go
// on.
type verdict struct {
	status     int    // 400, 403 or 429; 0 lets the request go on
	id         string // the decision ID, in the response and the log
	message    string // the response body
	retryAfter int    // seconds, for 429
}

// newDecisionID returns 12 random hex digits: enough to find one decision
// in the logs of a fleet.
func newDecisionID() string {
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// check decides about req with the policy of st, then applies its rate
// limits. It counts the decision and every AUDIT match, and logs the
// matches and every refusal. A request it lets through costs no
// allocation (unless a CEL condition is evaluated) and no log line.
func (h *Handler) check(st *state, req *authz.Request) verdict {
	d := st.policy.Engine.Decide(req)
	st.counts.decision(&d)
	if len(d.Audits()) > 0 {
		h.audited(st, req, &d)
	}
	if !d.Allow {
		v := h.denied(st, req, &d, "")
		if st.policy.Engine.HasAuditMode() {
			h.auditMode(st, req, &d, v.id)
		}
		return v
	}
	if st.policy.Engine.HasAuditMode() {
		h.auditMode(st, req, &d, "")
	}
	res := st.policy.Limiter.Allow(req)
	if res.Allowed {
		return verdict{}
	}
	return h.rateLimited(st, req, &res)
}

// invalid refuses a request that cannot be normalized; rawPath is its
// path as received, for the log.
func (h *Handler) invalid(st *state, req *authz.Request, rawPath string, err error) verdict {
	why := strings.TrimPrefix(err.Error(), "normalize: ")
	d := authz.Decision{
		Code:   authz.CodeInvalidRequest,
		Rule:   -1,
		Reason: "invalid request: " + why,
	}
	st.counts.decision(&d)
	req.Path = rawPath
	return h.denied(st, req, &d, why)
}

// maxLogged bounds the part of a path or host that is logged.
const maxLogged = 512

// truncated returns s, or its first maxLogged bytes (cut at a character)
// and how long it was.
func truncated(s string) string {
	if len(s) <= maxLogged {
		return s
	}
	n := maxLogged
	for n > maxLogged-utf8.UTFMax && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// requestAttrs are the log fields that describe req.
func requestAttrs(req *authz.Request) []any {
	attrs := []any{
		"direction", metrics.Inbound,
		"peer", req.Source,
		"authenticated", req.Authenticated,
		"source_ip", req.SourceIP.String(),
		"port", req.Port,
		"protocol", req.Protocol.String(),
	}
	if req.Protocol == authz.ProtocolHTTP {
		attrs = append(attrs, "method", truncated(req.Method), "path", truncated(req.Path), "host", truncated(req.Host))
	}
	return attrs
}

// denied refuses what d denies. The answer carries the decision ID and,
// for an invalid request, invalid: what is wrong with the caller's own
// request. It never names a policy or rule, which only the log does.
func (h *Handler) denied(st *state, req *authz.Request, d *authz.Decision, invalid string) verdict {
	v := verdict{status: http.StatusForbidden, id: newDecisionID()}
	if d.Code == authz.CodeInvalidRequest {
		v.status = http.StatusBadRequest
		v.message = "rampart: invalid request (decision " + v.id + "): " + invalid
	} else {
		v.message = "rampart: denied (decision " + v.id + ")"
	}
	if d.Code == authz.CodePlaintext {
		h.plaintextOnStrict(req.SourceIP, req.Port)
	}
	b := st.counts.denyLog(d)
	if b == nil {
		b = &h.unknownDenyLog
	}
	if ok, suppressed := b.Allow(time.Now()); ok {
		attrs := append(requestAttrs(req),
			"decision_id", v.id, "code", d.Code.String(), "policy", d.Policy, "rule", d.Rule, "reason", d.Reason,
			"suppressed_since_last", suppressed)
		h.log.Info("denied by authorization policy", attrs...)
	}
	return v
}

func (h *Handler) audited(st *state, req *authz.Request, d *authz.Decision) {
	audits := d.Audits()
	for _, a := range audits {
		st.counts.audit(a)
	}
	// The first rule's sampler decides whether the line is logged.
	b := st.counts.auditLog(audits[0])
	if b == nil {
		b = &h.unknownAuditLog
	}
	ok, suppressed := b.Allow(time.Now())
	if !ok {
		return
	}
	refs := make([]string, len(audits))
	for i, a := range audits {
		refs[i] = a.Policy + " rules[" + strconv.Itoa(a.Rule) + "]"
	}
	attrs := append(requestAttrs(req),
		"audit_rules", refs, "decision", verdictLabel(d.Allow), "code", d.Code.String(),
		"suppressed_since_last", suppressed)
	if n := d.AuditsOmitted(); n > 0 {
		attrs = append(attrs, "audits_omitted", n)
	}
	h.log.Info("AUDIT rule matched", attrs...)
}

// auditMode decides about req again, with the policies in AUDIT mode in
// force, and when that decision differs from d, counts it and logs it
// (sampled). id is d's decision ID when it has one (a refusal); a logged
// line about an allowed request gets one of its own.
func (h *Handler) auditMode(st *state, req *authz.Request, d *authz.Decision, id string) {
	a := st.policy.Engine.DecideAuditMode(req)
	if a.Allow == d.Allow {
		return
	}
	label := st.policy.Engine.AuditModePolicy(&a)
	b := &st.counts.auditModeLog
	if c := st.counts.auditMode[label]; c != nil {
		c.would[b2i(a.Allow)].Inc()
		b = &c.log
	} else {
		// Not kept at hand (the engine and its counts disagree, which
		// they do not): the label value still comes from the policy.
		h.cfg.Metrics.AuthzAuditMode.WithLabelValues(wouldLabel(a.Allow), label).Inc()
	}
	ok, suppressed := b.Allow(time.Now())
	if !ok {
		return
	}
	if id == "" {
		id = newDecisionID()
	}
	attrs := append(requestAttrs(req),
		"decision_id", id, "decision", verdictLabel(d.Allow), "result", wouldLabel(a.Allow),
		"policy", label, "rule", a.Rule, "code", a.Code.String(), "reason", a.Reason,
		"suppressed_since_last", suppressed)
	h.log.Info("a policy in AUDIT mode would change the decision", attrs...)
}

func (h *Handler) rateLimited(st *state, req *authz.Request, res *ratelimit.Result) verdict {
	lc := st.counts.limits[res.Limit]
	if lc == nil {
		// A limit the spec does not name (the limiter and its spec
		// disagree, which they do not): count it all the same.
		lc = &h.unknownLimit
		i := strings.LastIndexByte(res.Limit, '/')
		h.cfg.Metrics.RateLimited.WithLabelValues(res.Limit[:max(i, 0)], res.Limit[i+1:]).Inc()
	} else {
		lc.refused.Inc()
	}
	secs := int((res.RetryAfter + time.Second - 1) / time.Second)
	v := verdict{status: http.StatusTooManyRequests, id: newDecisionID(), retryAfter: max(secs, 1)}
	v.message = "rampart: rate limited (decision " + v.id + "); retry after " + strconv.Itoa(v.retryAfter) + "s"
	if ok, suppressed := lc.log.allow(time.Now()); ok {
		attrs := append(requestAttrs(req),
			"decision_id", v.id, "limit", res.Limit, "cooling_down", res.CoolingDown,
			"retry_after", v.retryAfter, "suppressed_since_last", suppressed)
		h.log.Info("refused by rate limit", attrs...)
	}
	return v
}

// answer writes a refusal and returns its status code, the one counted
// in metrics. A gRPC request gets what gRPC clients understand: a
// trailers-only answer (HTTP 200, no body) whose grpc-status is
// PERMISSION_DENIED, RESOURCE_EXHAUSTED or INVALID_ARGUMENT and whose
// grpc-message carries the decision ID, rather than an HTTP status that the
// client would report as a transport error without the decision ID.
func answer(w http.ResponseWriter, r *http.Request, v verdict) int {
	hdr := w.Header()
	hdr.Set(HeaderDecisionID, v.id)
	if v.retryAfter > 0 {
		hdr.Set("Retry-After", strconv.Itoa(v.retryAfter))
	}
	if isGRPC(r) {
		hdr.Set("Content-Type", "application/grpc")
		hdr.Set("Grpc-Status", grpcStatusOf(v.status))
		hdr.Set("Grpc-Message", grpcMessage(v.message))
		w.WriteHeader(http.StatusOK)
		return v.status
	}
	http.Error(w, v.message, v.status)
	return v.status
}

// isGRPC reports whether r is a gRPC call.
func isGRPC(r *http.Request) bool {
	if r == nil || r.ProtoMajor != 2 {
		return false
	}
	ct := r.Header.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// grpcStatusOf maps a refusal's HTTP status to a gRPC status code.
func grpcStatusOf(status int) string {
	switch status {
	case http.StatusForbidden:
		return "7" // PERMISSION_DENIED
	case http.StatusTooManyRequests:
		return "8" // RESOURCE_EXHAUSTED: a rate limit, not to be retried at once
	default:
		return "3" // INVALID_ARGUMENT
	}
}

// grpcMessage percent-encodes s as grpc-message requires: bytes outside
// printable ASCII, and '%'.
func grpcMessage(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Errors of request targets that name no path to authorize.
var (
	errMethod       = errors.New("the method is not an upper-case token")
	errAsteriskForm = errors.New("the asterisk-form target (OPTIONS *) names no path to authorize")
	errTargetForm   = errors.New("the request target is neither a path nor an absolute http(s) URL")
	errManyHosts    = errors.New("the request has more than one Host header")
	errHostsDiffer  = errors.New("the request target and the Host name different hosts")
)

// requestTarget returns the path (without the query) and the authority,
// if any, of a request target as received: origin form (/a/b?q) or
// absolute form (http://host/a/b?q). The path is not decoded.
func requestTarget(uri string) (path, authority string, err error) {
	switch {
	case strings.HasPrefix(uri, "/"):
		path = uri
	case uri == "*":
		return "", "", errAsteriskForm
	default:
		rest, ok := cutSchemePrefix(uri)
		if !ok {
			return "", "", errTargetForm
		}
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		authority, path = rest[:end], rest[end:]
		if authority == "" {
			return "", "", errTargetForm
		}
		if path == "" || path[0] == '?' {
			path = "/" + path
		}
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return path, authority, nil
}

// cutSchemePrefix removes "http://" or "https://", in any case, from uri.
func cutSchemePrefix(uri string) (string, bool) {
	for _, s := range [...]string{"http://", "https://"} {
		if len(uri) >= len(s) && strings.EqualFold(uri[:len(s)], s) {
			return uri[len(s):], true
		}
	}
	return "", false
}

// requestPathHost returns the normalized path and host of r: what rules
// match and what the app receives.
func requestPathHost(r *http.Request) (rawPath, path, host string, err error) {
	rawPath, authority, err := requestTarget(r.RequestURI)
	if err != nil {
		return r.RequestURI, "", "", err
	}
	if path, err = normalize.Path(rawPath); err != nil {
		return rawPath, "", "", err
	}
	// HTTP/2 keeps a Host header next to :authority (r.Host), and both
	// must agree; HTTP/1 servers fold the Host header into r.Host.
	var hostHeader string
	if r.ProtoMajor >= 2 {
		switch hv := r.Header["Host"]; len(hv) {
		case 0:
		case 1:
			hostHeader = hv[0]
		default:
			return rawPath, "", "", errManyHosts
		}
	}
	if r.Host != "" || hostHeader != "" {
		if host, err = normalize.RequestHost(r.Host, hostHeader); err != nil {
			return rawPath, "", "", err
		}
	}
	if authority != "" {
		a, err := normalize.Host(authority)
		if err != nil {
			return rawPath, "", "", err
		}
		if a != host {
			return rawPath, "", "", errHostsDiffer
		}
	}
	return rawPath, path, host, nil
}

// validMethod reports whether m is a token without lower-case letters:
// methods are case-sensitive, rules name them in upper case, and apps
// such as Go's ServeMux serve "get" as GET.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !upperTchar[m[i]] {
			return false
		}
	}
	return true
}

// upperTchar holds the token characters (RFC 9110, section 5.6.2) but the
// lower-case letters.
var upperTchar = func() (t [256]bool) {
	for _, c := range "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" {
		t[c] = true
	}
	return t
}()

// remoteIP parses a remote address, host:port, without allocating.
func remoteIP(addr string) netip.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
