package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/rampart-mesh/rampart/internal/authz/normalize"
)

// Engine is the compiled, immutable form of one workload's WorkloadPolicy.
// It is safe for concurrent use. A nil *Engine denies everything.
type Engine struct {
	namespace string
	def       DefaultMode
	defSource string
	tlsMode   TLSMode
	tlsPorts  []PortTLS
	tlsSource string
	audits    ruleSet
	denies    ruleSet
	allows    ruleSet

	// auditMode, when policies in AUDIT mode select the workload, is the
	// engine with them in force; nil otherwise. auditModeRefs names
	// them, in order; auditModeNoRule is what AuditModePolicy says of a
	// decision that no rule made.
	auditMode       *Engine
	auditModeRefs   []string
	auditModeNoRule string

	// Reasons, built once.
	reasonNoAllow      string
	reasonDefaultAllow string
	reasonDefaultDeny  string // deny-all
	reasonNoIdentity   string // allow-* default, no identity
	reasonOtherNS      string // allow-same-namespace, another namespace
	reasonPlaintext    string
}

// policy is a compiled Policy.
type policy struct {
	ref    string // "namespace/name"
	action Action
	rules  []rule
}

// rule is a compiled Rule.
type rule struct {
	from   []source
	to     []operation
	cond   *condition
	reason string // "DENY policy shop/x rules[0] matched"
}

// source is a compiled Source.
type source struct {
	principals, notPrincipals strSet
	namespaces, notNamespaces strSet
	ipBlocks, notIPBlocks     []netip.Prefix

	idFields bool // principals, namespaces or their Not fields are set
	nsFields bool // namespaces or notNamespaces are set
}

// operation is a compiled Operation.
type operation struct {
	ports, notPorts     []uint16
	methods, notMethods []string
	paths, notPaths     pathSet
	hosts, notHosts     hostSet
	http                bool
}

// Compile checks p and compiles it into an Engine. The error is
// FieldErrors, with fields named from the WorkloadPolicy:
// "policies[2].rules[0].to[1].paths[0]". Compile keeps no reference to p.
//
// When policies in AUDIT mode select the workload, Compile builds two
// engines: the one returned, without them, which decides; and, behind
// it, one with every policy in force, for DecideAuditMode. Without such
// policies there is one engine, and DecideAuditMode costs nothing.
func Compile(p *WorkloadPolicy) (*Engine, error) {
	if p == nil {
		return nil, errNoPolicy
	}
	// The engine with every policy in force checks every policy, so that
	// a policy in AUDIT mode is held to the same checks as one enforced.
	all, err := compileEngine(p, p.Policies)
	if err != nil {
		return nil, err
	}
	var refs, allowRefs []string
	for i := range p.Policies {
		if pol := &p.Policies[i]; pol.Mode == ModeAudit {
			ref := pol.Namespace + "/" + pol.Name
			refs = append(refs, ref)
			if pol.Action == ActionAllow {
				allowRefs = append(allowRefs, ref)
			}
		}
	}
	if len(refs) == 0 {
		return all, nil
	}
	enforced := make([]Policy, 0, len(p.Policies)-len(refs))
	for i := range p.Policies {
		if p.Policies[i].Mode != ModeAudit {
			enforced = append(enforced, p.Policies[i])
		}
	}
	e, err := compileEngine(p, enforced)
	if err != nil {
		return nil, err
	}
	e.auditMode = all
	e.auditModeRefs = refs
	// When the decision with them in force differs and no rule made it,
	// it is "no ALLOW rule matched": the AUDIT-mode ALLOW policies made
	// the ALLOW stage apply.
	if len(allowRefs) == 0 {
		allowRefs = refs
	}
	e.auditModeNoRule = strings.Join(allowRefs, ",")
	return e, nil
}

// compileEngine compiles p with policies in place of p.Policies, all in
// force.
func compileEngine(p *WorkloadPolicy, policies []Policy) (*Engine, error) {
	var errs FieldErrors
	e := &Engine{
		namespace: p.Namespace,
		def:       p.Default,
		defSource: p.DefaultSource,
		tlsMode:   p.TLS.Mode,
		tlsPorts:  slices.Clone(p.TLS.Ports),
		tlsSource: p.TLS.Source,
	}
	if p.Namespace == "" && p.Default == DefaultAllowSameNamespace {
		errs.add("namespace", "is required with allow-same-namespace")
	}
	if p.Default < DefaultDenyAll || p.Default > DefaultAllowAuthenticated {
		errs.add("default", "must be deny-all, allow-same-namespace or allow-authenticated")
	}
	if p.TLS.Mode != TLSStrict && p.TLS.Mode != TLSPermissive {
		errs.add("tls.mode", "must be STRICT or PERMISSIVE")
	}
	for i, pt := range p.TLS.Ports {
		path := idx("tls.ports", i)
		if pt.Port < 1 || pt.Port > 65535 {
			errs.add(path+".port", "must be between 1 and 65535")
		}
		if pt.Mode != TLSStrict && pt.Mode != TLSPermissive {
			errs.add(path+".mode", "must be STRICT or PERMISSIVE")
		}
		for j := range i {
			if p.TLS.Ports[j].Port == pt.Port {
				errs.add(path+".port", "duplicate port %d (also tls.ports[%d])", pt.Port, j)
				break
			}
		}
	}
	if len(policies) > maxPolicies {
		errs.add("policies", "has %d policies, more than %d", len(policies), maxPolicies)
		return nil, errs
	}
	seen := make(map[string]int, len(policies))
	for i := range policies {
		path := idx("policies", i)
		c := compilePolicy(path, &policies[i], &errs)
		if j, dup := seen[c.ref]; dup {
			errs.add(path, "duplicate policy %s (also policies[%d])", c.ref, j)
		}
		seen[c.ref] = i
		switch c.action {
		case ActionAllow:
			e.allows.policies = append(e.allows.policies, c)
		case ActionDeny:
			e.denies.policies = append(e.denies.policies, c)
		case ActionAudit:
			e.audits.policies = append(e.audits.policies, c)
		}
	}
	if len(p.RateLimits) > maxRules {
		errs.add("rateLimits", "has %d limits, more than %d", len(p.RateLimits), maxRules)
	} else {
		for i := range p.RateLimits {
			compileRateLimit(idx("rateLimits", i), &p.RateLimits[i], &errs)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	e.audits.index()
	e.denies.index()
	e.allows.index()
	e.buildReasons()
	return e, nil
}

func compilePolicy(path string, p *Policy, errs *FieldErrors) policy {
	c := policy{ref: p.Namespace + "/" + p.Name, action: p.Action}
	if p.Namespace == "" {
		errs.add(path+".namespace", "is required")
	}
	if p.Name == "" {
		errs.add(path+".name", "is required")
	}
	switch p.Action {
	case ActionAllow:
	case ActionDeny, ActionAudit:
		if len(p.Rules) == 0 {
			errs.add(path+".rules", "a %s policy without rules matches nothing: add a rule (an empty rule {} matches every request)", p.Action)
		}
	default:
		errs.add(path+".action", "must be ALLOW, DENY or AUDIT")
	}
	if p.Mode != ModeEnforce && p.Mode != ModeAudit {
		errs.add(path+".mode", "must be ENFORCE or AUDIT")
	}
	if len(p.Rules) > maxRules {
		errs.add(path+".rules", "has %d rules, more than %d", len(p.Rules), maxRules)
		return c
	}
	c.rules = make([]rule, len(p.Rules))
	for j := range p.Rules {
		rp := idx(path+".rules", j)
		c.rules[j] = compileRule(rp, &p.Rules[j], errs)
		c.rules[j].reason = fmt.Sprintf("%s policy %s rules[%d] matched", p.Action, c.ref, j)
	}
	return c
}

func (e *Engine) buildReasons() {
	src := ""
	if e.defSource != "" {
		src = " (" + e.defSource + ")"
	}
	e.reasonNoAllow = "no ALLOW rule matched"
	e.reasonDefaultDeny = "no ALLOW policy selects the workload and the default is deny-all" + src
	e.reasonDefaultAllow = "allowed by the default " + e.def.String() + src
	e.reasonNoIdentity = "the request has no verified identity, and the default is " + e.def.String() + src
	e.reasonOtherNS = "the source is not in namespace " + e.namespace + ", and the default is allow-same-namespace" + src
	e.reasonPlaintext = "plaintext request on a STRICT port"
}

// view is what Decide derives from a request once, on the stack.
type view struct {
	http         bool
	id           string // verified identity, "" if none
	ns           string // its namespace, "" if none
	method, path string
	host         string
}

var errNoPolicy = errors.New("authz: no workload policy to compile")

// Reasons of invalid requests.
const (
	reasonNoPolicy      = "no authorization policy is loaded for the workload"
	reasonNoRequest     = "invalid request: none"
	reasonProtocol      = "invalid request: protocol not set"
	reasonPort          = "invalid request: destination port not set"
	reasonMethod        = "invalid request: no method"
	reasonPath          = "invalid request: path not normalized"
	reasonHost          = "invalid request: host not normalized"
	reasonMissingIDNote = "the request has no verified identity"
)

// Decide decides about r. It does not allocate, unless a rule whose other
// fields match has a CEL condition to evaluate. A nil Engine denies.
func (e *Engine) Decide(r *Request) Decision {
	return e.decide(r, nil)
}

// Explain decides about r as Decide does, and returns every check made on
// the way: which policies were considered, which rule matched and why the
// others did not. It allocates.
//
// When policies in AUDIT mode select the workload and, in force, they
// would change whether r is allowed, the explanation's AuditMode says how.
func (e *Engine) Explain(r *Request) *Explanation {
	x := &Explanation{}
	x.Decision = e.decide(r, x)
	if !e.HasAuditMode() {
		return x
	}
	ax := &Explanation{}
	ax.Decision = e.auditMode.decide(r, ax)
	if ax.Decision.Allow == x.Decision.Allow {
		return x
	}
	am := &AuditModeExplanation{Decision: ax.Decision, Policies: slices.Clone(e.auditModeRefs), Policy: e.AuditModePolicy(&ax.Decision)}
	for _, s := range ax.Steps {
		// The steps that differ: the AUDIT-mode policies' rules, and the
		// end of the ALLOW stage or the default when no rule decided.
		if slices.Contains(e.auditModeRefs, s.Policy) || (s.Policy == "" && (s.Stage == "allow" || s.Stage == "default")) {
			am.Steps = append(am.Steps, s)
		}
	}
	x.AuditMode = am
	return x
}

// HasAuditMode reports whether policies in AUDIT mode select the
// workload: whether DecideAuditMode may differ from Decide.
func (e *Engine) HasAuditMode() bool { return e != nil && e.auditMode != nil }

// DecideAuditMode decides about r as Decide does, but with the workload's
// policies in AUDIT mode in force, as if their mode were ENFORCE. Without
// such policies it returns what Decide returns. Like Decide, it does not
// allocate unless a CEL condition is evaluated.
func (e *Engine) DecideAuditMode(r *Request) Decision {
	if !e.HasAuditMode() {
		return e.Decide(r)
	}
	return e.auditMode.Decide(r)
}

// AuditModePolicies names the policies in AUDIT mode that select the
// workload ("namespace/name"), in evaluation order.
func (e *Engine) AuditModePolicies() []string {
	if e == nil {
		return nil
	}
	return slices.Clone(e.auditModeRefs)
}

// AuditModeLabels returns every value that AuditModePolicy may give a
// decision of DecideAuditMode that differs from Decide's: the policies in
// AUDIT mode and what it says when no rule decided. Nil without policies
// in AUDIT mode.
func (e *Engine) AuditModeLabels() []string {
	if !e.HasAuditMode() {
		return nil
	}
	labels := slices.Clone(e.auditModeRefs)
	if !slices.Contains(labels, e.auditModeNoRule) {
		labels = append(labels, e.auditModeNoRule)
	}
	return labels
}

// AuditModePolicy names what d, a decision of DecideAuditMode that differs
// from Decide's, is owed to, for metrics and logs: the policy whose rule
// decided, or, when no rule did (no ALLOW rule matched), the ALLOW
// policies in AUDIT mode, comma-separated. The values are bounded by the
// workload's policies; the string is not built per call.
func (e *Engine) AuditModePolicy(d *Decision) string {
	if d.Policy != "" {
		return d.Policy
	}
	if e == nil {
		return ""
	}
	return e.auditModeNoRule
}

// TLSMode returns the mesh TLS mode of a port of the workload: whether the
// proxy may accept plaintext on it. A nil Engine says STRICT.
func (e *Engine) TLSMode(port uint16) TLSMode {
	if e == nil {
		return TLSStrict
	}
	for _, p := range e.tlsPorts {
		if p.Port == uint32(port) {
			return p.Mode
		}
	}
	return e.tlsMode
}

func deny(code Code, reason string) Decision {
	return Decision{Code: code, Rule: -1, Reason: reason}
}

func (e *Engine) decide(r *Request, x *Explanation) Decision {
	if e == nil {
		x.step("request", "", -1, false, reasonNoPolicy)
		return deny(CodeNoPolicy, reasonNoPolicy)
	}
	if r == nil {
		x.step("request", "", -1, false, reasonNoRequest)
		return deny(CodeInvalidRequest, reasonNoRequest)
	}
	v := view{id: r.identity()}
	if v.id != "" {
		v.ns = NamespaceOf(v.id)
	}
	switch r.Protocol {
	case ProtocolTCP:
	case ProtocolHTTP:
		v.http = true
		v.method, v.path, v.host = r.Method, r.Path, r.Host
		switch {
		case r.Method == "":
			x.step("request", "", -1, false, reasonMethod)
			return deny(CodeInvalidRequest, reasonMethod)
		case !normalize.IsPath(r.Path):
			x.step("request", "", -1, false, reasonPath)
			return deny(CodeInvalidRequest, reasonPath)
		case r.Host != "" && !normalize.IsHost(r.Host):
			x.step("request", "", -1, false, reasonHost)
			return deny(CodeInvalidRequest, reasonHost)
		}
	default:
		x.step("request", "", -1, false, reasonProtocol)
		return deny(CodeInvalidRequest, reasonProtocol)
	}
	if r.Port == 0 {
		x.step("request", "", -1, false, reasonPort)
		return deny(CodeInvalidRequest, reasonPort)
	}
	if x != nil {
		x.step("request", "", -1, true, describeRequest(r, &v))
	}

	if e.TLSMode(r.Port) == TLSStrict && v.id == "" {
		x.step("tls", "", -1, false, e.reasonPlaintext)
		return deny(CodePlaintext, e.reasonPlaintext)
	}
	if x != nil {
		x.step("tls", "", -1, true, fmt.Sprintf("port %d is %s (%s)", r.Port, e.TLSMode(r.Port), e.tlsSource))
	}

	var d Decision
	if x != nil {
		e.audits.explain(r, &v, true, "audit", x, func(f *flatRule) { d.addAudit(RuleRef{Policy: f.policy.ref, Rule: f.index}) }, false)
	} else {
		e.audits.all(r, &v, &d)
	}
	if f := e.denies.first(r, &v, true, "deny", x); f != nil {
		d.Allow, d.Code, d.Policy, d.Rule, d.Reason = false, CodeDenyRule, f.policy.ref, f.index, f.rule.reason
		return d
	}
	if len(e.allows.policies) > 0 {
		if f := e.allows.first(r, &v, false, "allow", x); f != nil {
			d.Allow, d.Code, d.Policy, d.Rule, d.Reason = true, CodeAllowRule, f.policy.ref, f.index, f.rule.reason
			return d
		}
		d.Code, d.Rule, d.Reason = CodeNoAllowMatch, -1, e.reasonNoAllow
		x.step("allow", "", -1, false, e.reasonNoAllow)
		return d
	}

	d.Rule = -1
	switch {
	case e.def == DefaultDenyAll:
		d.Code, d.Reason = CodeDefaultDeny, e.reasonDefaultDeny
	case v.id == "":
		d.Code, d.Reason = CodeDefaultDeny, e.reasonNoIdentity
	case e.def == DefaultAllowSameNamespace && v.ns != e.namespace:
		d.Code, d.Reason = CodeDefaultDeny, e.reasonOtherNS
	default:
		d.Allow, d.Code, d.Reason = true, CodeDefaultAllow, e.reasonDefaultAllow
	}
	x.step("default", "", -1, d.Allow, d.Reason)
	return d
}

// ruleSet is the policies of one action, with their rules flattened in
// evaluation order and indexed by the identities they require.
type ruleSet struct {
	policies []policy
	rules    []flatRule
	// byPrincipal and byNamespace list the rules (indexes into rules, in
	// order) that can only match a source with that exact principal or
	// namespace: every entry of their from lists exact principals (or,
	// for byNamespace, exact namespaces). unindexed lists the others.
	byPrincipal map[string][]int32
	byNamespace map[string][]int32
	unindexed   []int32
}

// flatRule is a rule with the policy it belongs to.
type flatRule struct {
	policy *policy
	index  int // in policy.rules
	rule   *rule
}

// index flattens and indexes the rules of s.policies.
func (s *ruleSet) index() {
	for i := range s.policies {
		p := &s.policies[i]
		for j := range p.rules {
			s.rules = append(s.rules, flatRule{policy: p, index: j, rule: &p.rules[j]})
		}
	}
	for i := range s.rules {
		n := int32(i)
		ru := s.rules[i].rule
		if keys := ru.exactKeys(func(src *source) *strSet { return &src.principals }); keys != nil {
			if s.byPrincipal == nil {
				s.byPrincipal = map[string][]int32{}
			}
			for _, k := range keys {
				s.byPrincipal[k] = appendOnce(s.byPrincipal[k], n)
			}
			continue
		}
		if keys := ru.exactKeys(func(src *source) *strSet { return &src.namespaces }); keys != nil {
			if s.byNamespace == nil {
				s.byNamespace = map[string][]int32{}
			}
			for _, k := range keys {
				s.byNamespace[k] = appendOnce(s.byNamespace[k], n)
			}
			continue
		}
		s.unindexed = append(s.unindexed, n)
	}
}

func appendOnce(list []int32, n int32) []int32 {
	if len(list) > 0 && list[len(list)-1] == n {
		return list
	}
	return append(list, n)
}

// exactKeys returns the values the field that field picks must have for
// the rule to match a source with a verified identity (and namespace): the
// union of that field's entries over the rule's from, when every entry of
// from sets the field with exact values only. Otherwise it returns nil.
func (ru *rule) exactKeys(field func(*source) *strSet) []string {
	if len(ru.from) == 0 {
		return nil
	}
	var keys []string
	for i := range ru.from {
		f := field(&ru.from[i])
		if f.empty() || f.any || len(f.prefix) > 0 || len(f.suffix) > 0 {
			return nil
		}
		keys = append(keys, f.exact...)
	}
	return keys
}

// candidates lists the rules of a set that may match a request: three
// sorted lists of indexes into rules, to merge.
type candidates struct {
	unindexed, principal, namespace []int32
}

// each calls f with each candidate, in order, until f returns true.
func (c candidates) each(f func(i int32) bool) {
	u, p, n := c.unindexed, c.principal, c.namespace
	for len(p)+len(n) > 0 {
		// Take the smallest head; drop it from every list that has it.
		i := int32(1<<31 - 1)
		if len(u) > 0 {
			i = u[0]
		}
		if len(p) > 0 && p[0] < i {
			i = p[0]
		}
		if len(n) > 0 && n[0] < i {
			i = n[0]
		}
		if len(u) > 0 && u[0] == i {
			u = u[1:]
		}
		if len(p) > 0 && p[0] == i {
			p = p[1:]
		}
		if len(n) > 0 && n[0] == i {
			n = n[1:]
		}
		if f(i) {
			return
		}
	}
	// Only unindexed rules are left: no merging.
	for _, i := range u {
		if f(i) {
			return
		}
	}
}

// candidates returns the rules that may match v. With failClosed, a
// request without an identity (or namespace) matches identity fields, so
// the index cannot narrow the rules down: every rule is a candidate.
func (s *ruleSet) candidates(v *view, failClosed bool) (c candidates, all bool) {
	if failClosed && (v.id == "" || v.ns == "") {
		return c, true
	}
	c.unindexed = s.unindexed
	if v.id != "" && s.byPrincipal != nil {
		c.principal = s.byPrincipal[v.id]
	}
	if v.ns != "" && s.byNamespace != nil {
		c.namespace = s.byNamespace[v.ns]
	}
	return c, false
}

// first returns the first rule of s that matches, or nil. With x set, it
// checks and explains every rule instead of using the index, so that
// Explain describes each rule.
func (s *ruleSet) first(r *Request, v *view, failClosed bool, stage string, x *Explanation) *flatRule {
	if x != nil {
		var found *flatRule
		s.explain(r, v, failClosed, stage, x, func(f *flatRule) { found = f }, true)
		return found
	}
	c, all := s.candidates(v, failClosed)
	if all {
		for i := range s.rules {
			if s.rules[i].rule.match(r, v, failClosed, nil) {
				return &s.rules[i]
			}
		}
		return nil
	}
	var found *flatRule
	c.each(func(i int32) bool {
		if s.rules[i].rule.match(r, v, failClosed, nil) {
			found = &s.rules[i]
			return true
		}
		return false
	})
	return found
}

// all adds the first matching rule of each AUDIT policy to d.
func (s *ruleSet) all(r *Request, v *view, d *Decision) {
	if len(s.rules) == 0 {
		return
	}
	var last *policy
	visit := func(i int32) bool {
		f := &s.rules[i]
		if f.policy != last && f.rule.match(r, v, true, nil) {
			last = f.policy
			d.addAudit(RuleRef{Policy: f.policy.ref, Rule: f.index})
		}
		return false
	}
	c, all := s.candidates(v, true)
	if all {
		for i := range s.rules {
			visit(int32(i))
		}
		return
	}
	c.each(visit)
}

// explain checks every rule of every policy in order, recording a step for
// each, and calls matched with the first matching rule of each policy;
// with stop, it stops at the first match.
func (s *ruleSet) explain(r *Request, v *view, failClosed bool, stage string, x *Explanation, matched func(*flatRule), stop bool) {
	for i := range s.policies {
		p := &s.policies[i]
		if len(p.rules) == 0 {
			x.step(stage, p.ref, -1, false, "the policy has no rules")
			continue
		}
		for j := range p.rules {
			var why []string
			ok := p.rules[j].match(r, v, failClosed, &why)
			x.step(stage, p.ref, j, ok, joinWhy(why, ok))
			if ok {
				matched(&flatRule{policy: p, index: j, rule: &p.rules[j]})
				if stop {
					return
				}
				break
			}
		}
	}
}

// match reports whether the rule matches. When why is not nil, it collects
// why the rule did or did not match.
func (ru *rule) match(r *Request, v *view, failClosed bool, why *[]string) bool {
	if len(ru.from) > 0 {
		ok := false
		for i := range ru.from {
			if ru.from[i].match(r, v, failClosed, why, i) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(ru.to) > 0 {
		ok := false
		for i := range ru.to {
			if ru.to[i].match(r.Port, v, failClosed, why, i) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if ru.cond == nil {
		return true
	}
	if missing := ru.cond.missing(r, v); missing != "" {
		note(why, "when: not evaluated: "+missing)
		return failClosed
	}
	ok, err := ru.cond.eval(r, v)
	if err != nil {
		note(why, "when: "+err.Error())
		return failClosed
	}
	if !ok {
		note(why, "when: false")
	}
	return ok
}

// missing names an attribute the condition reads that the request does not
// have, or returns "".
func (c *condition) missing(r *Request, v *view) string {
	n := c.needs
	switch {
	case n&attrHTTP != 0 && !v.http:
		return "it reads HTTP attributes, and the request is opaque TCP"
	case n&attrHost != 0 && v.host == "":
		return "it reads request.host, and the request has no host"
	case n&attrID != 0 && v.id == "":
		return reasonMissingIDNote
	case n&attrNS != 0 && v.ns == "":
		return "the source's identity has no namespace"
	case n&attrIP != 0 && !r.SourceIP.IsValid():
		return "the source address is unknown"
	case n&attrDigest != 0 && r.SourceDigest == "":
		return "the source's code digest is unknown"
	case n&attrTime != 0 && r.Time.IsZero():
		return "the request time is unknown"
	}
	return ""
}

func (s *source) match(r *Request, v *view, failClosed bool, why *[]string, i int) bool {
	if s.idFields {
		switch {
		case v.id == "":
			if !failClosed {
				if why != nil {
					notef(why, "from[%d]: %s", i, reasonMissingIDNote)
				}
				return false
			}
			if why != nil {
				notef(why, "from[%d]: identity fields match a request without a verified identity (fail closed)", i)
			}
		default:
			if !s.principals.empty() && !s.principals.match(v.id) {
				if why != nil {
					notef(why, "from[%d].principals: %s is not listed", i, v.id)
				}
				return false
			}
			if !s.notPrincipals.empty() && s.notPrincipals.match(v.id) {
				if why != nil {
					notef(why, "from[%d].notPrincipals: %s is listed", i, v.id)
				}
				return false
			}
			if !s.nsFields {
				break
			}
			if v.ns == "" {
				if !failClosed {
					if why != nil {
						notef(why, "from[%d]: the identity %s has no namespace", i, v.id)
					}
					return false
				}
				if why != nil {
					notef(why, "from[%d]: namespace fields match an identity without a namespace (fail closed)", i)
				}
				break
			}
			if !s.namespaces.empty() && !s.namespaces.match(v.ns) {
				if why != nil {
					notef(why, "from[%d].namespaces: %s is not listed", i, v.ns)
				}
				return false
			}
			if !s.notNamespaces.empty() && s.notNamespaces.match(v.ns) {
				if why != nil {
					notef(why, "from[%d].notNamespaces: %s is listed", i, v.ns)
				}
				return false
			}
		}
	}
	if len(s.ipBlocks)+len(s.notIPBlocks) > 0 {
		ip := r.SourceIP.Unmap()
		switch {
		case !ip.IsValid():
			if !failClosed {
				if why != nil {
					notef(why, "from[%d]: the source address is unknown", i)
				}
				return false
			}
			if why != nil {
				notef(why, "from[%d]: address fields match an unknown source address (fail closed)", i)
			}
		case len(s.ipBlocks) > 0 && !matchIP(s.ipBlocks, ip):
			if why != nil {
				notef(why, "from[%d].ipBlocks: %s is not in them", i, ip)
			}
			return false
		case len(s.notIPBlocks) > 0 && matchIP(s.notIPBlocks, ip):
			if why != nil {
				notef(why, "from[%d].notIpBlocks: %s is in them", i, ip)
			}
			return false
		}
	}
	return true
}

func (o *operation) match(port uint16, v *view, failClosed bool, why *[]string, i int) bool {
	if len(o.ports) > 0 && !matchPort(o.ports, port) {
		if why != nil {
			notef(why, "to[%d].ports: %d is not listed", i, port)
		}
		return false
	}
	if len(o.notPorts) > 0 && matchPort(o.notPorts, port) {
		if why != nil {
			notef(why, "to[%d].notPorts: %d is listed", i, port)
		}
		return false
	}
	if !o.http {
		return true
	}
	if !v.http {
		if !failClosed {
			if why != nil {
				notef(why, "to[%d]: HTTP fields do not match an opaque TCP connection", i)
			}
			return false
		}
		if why != nil {
			notef(why, "to[%d]: HTTP fields match an opaque TCP connection (fail closed)", i)
		}
		return true
	}
	if len(o.methods) > 0 && !slices.Contains(o.methods, v.method) {
		if why != nil {
			notef(why, "to[%d].methods: %s is not listed", i, v.method)
		}
		return false
	}
	if len(o.notMethods) > 0 && slices.Contains(o.notMethods, v.method) {
		if why != nil {
			notef(why, "to[%d].notMethods: %s is listed", i, v.method)
		}
		return false
	}
	if !o.paths.empty() && !o.paths.match(v.path) {
		if why != nil {
			notef(why, "to[%d].paths: %s does not match", i, v.path)
		}
		return false
	}
	if !o.notPaths.empty() && o.notPaths.match(v.path) {
		if why != nil {
			notef(why, "to[%d].notPaths: %s matches", i, v.path)
		}
		return false
	}
	if !o.hosts.empty() || !o.notHosts.empty() {
		if v.host == "" {
			if !failClosed {
				if why != nil {
					notef(why, "to[%d]: the request has no host", i)
				}
				return false
			}
			if why != nil {
				notef(why, "to[%d]: host fields match a request without a host (fail closed)", i)
			}
			return true
		}
		if !o.hosts.empty() && !o.hosts.match(v.host) {
			if why != nil {
				notef(why, "to[%d].hosts: %s does not match", i, v.host)
			}
			return false
		}
		if !o.notHosts.empty() && o.notHosts.match(v.host) {
			if why != nil {
				notef(why, "to[%d].notHosts: %s matches", i, v.host)
			}
			return false
		}
	}
	return true
}

// note adds to why, if collecting.
func note(why *[]string, s string) {
	if why != nil {
		*why = append(*why, s)
	}
}

// notef is note with formatting. Callers check that why is not nil
// first: boxing the arguments would allocate on the hot path.
func notef(why *[]string, format string, args ...any) {
	*why = append(*why, fmt.Sprintf(format, args...))
}

func joinWhy(why []string, ok bool) string {
	if len(why) == 0 {
		if ok {
			return "every field matched"
		}
		return ""
	}
	s := why[0]
	for _, w := range why[1:] {
		s += "; " + w
	}
	return s
}

func (x *Explanation) step(stage, policy string, rule int, matched bool, detail string) {
	if x != nil {
		x.Steps = append(x.Steps, Step{Stage: stage, Policy: policy, Rule: rule, Matched: matched, Detail: detail})
	}
}

func describeRequest(r *Request, v *view) string {
	id := "no verified identity"
	if v.id != "" {
		id = v.id
	}
	if v.http {
		return fmt.Sprintf("HTTP %s %s host %q port %d from %s (%s)", r.Method, r.Path, r.Host, r.Port, id, addrString(r.SourceIP))
	}
	return fmt.Sprintf("TCP port %d from %s (%s)", r.Port, id, addrString(r.SourceIP))
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown address"
	}
	return a.Unmap().String()
}
