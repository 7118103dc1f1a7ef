package v1alpha1

// This file holds the security policy resources: AuthorizationPolicy,
// MeshTLSPolicy, NamespacePolicy and RateLimitPolicy. docs/authorization.md
// describes what they mean; internal/authz evaluates them, after
// internal/authz/compile has compiled them for a workload. Their
// validation runs the checks of internal/authz itself, so that a resource
// that validates is one the proxy accepts.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/internal/authz"
)

// Kinds of the security policy resources.
const (
	KindAuthorizationPolicy = "AuthorizationPolicy"
	KindMeshTLSPolicy       = "MeshTLSPolicy"
	KindNamespacePolicy     = "NamespacePolicy"
	KindRateLimitPolicy     = "RateLimitPolicy"
)

// RootNamespace is the mesh root namespace: a policy there applies to the
// workloads of every namespace (that its selector selects).
const RootNamespace = "rampart-system"

// WorkloadSelector selects workloads by label. A nil or empty selector
// selects every workload of the policy's namespace (of the mesh, in
// RootNamespace).
type WorkloadSelector struct {
	// MatchLabels selects the workloads that have all these labels.
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// AuthorizationPolicy allows, denies or audits requests to the workloads
// it selects.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=authzpolicy
// +kubebuilder:printcolumn:name="Action",type="string",JSONPath=".spec.action"
// +kubebuilder:printcolumn:name="Mode",type="string",JSONPath=".spec.mode"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicySpec describes an AuthorizationPolicy.
type AuthorizationPolicySpec struct {
	// Selector picks the workloads the policy applies to; empty means
	// every workload of the namespace (of the mesh, in RootNamespace).
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// Action is ALLOW, DENY or AUDIT. Required.
	Action AuthorizationAction `json:"action"`
	// Mode is ENFORCE (the default when empty): the policy takes part in
	// every decision; or AUDIT: the proxy decides without it and records
	// every request whose decision it would change, to try a policy
	// before enforcing it. Any action may be in either mode.
	Mode PolicyMode `json:"mode,omitempty"`
	// Rules: the policy matches a request that one of them matches. An
	// ALLOW policy without rules allows nothing (and, since it selects
	// the workload, the workload then allows only what other ALLOW
	// policies allow); DENY and AUDIT policies need at least one rule.
	Rules []AuthorizationRule `json:"rules,omitempty"`
}

// AuthorizationAction is what a policy does with the requests it matches.
// +kubebuilder:validation:Enum=ALLOW;DENY;AUDIT
type AuthorizationAction string

// Authorization actions.
const (
	ActionAllow AuthorizationAction = "ALLOW"
	ActionDeny  AuthorizationAction = "DENY"
	ActionAudit AuthorizationAction = "AUDIT"
)

// PolicyMode says whether an AuthorizationPolicy takes part in decisions.
// +kubebuilder:validation:Enum=ENFORCE;AUDIT
type PolicyMode string

// Policy modes.
const (
	// ModeEnforce: the policy takes part in every decision (the default).
	ModeEnforce PolicyMode = "ENFORCE"
	// ModeAudit: the policy does not take part in the decision; the proxy
	// records the requests whose decision it would change.
	ModeAudit PolicyMode = "AUDIT"
)

// AuthorizationRule matches a request when one entry of From matches its
// source (or From is empty), one entry of To matches its operation (or To
// is empty), and When, if set, is true. An empty rule matches every
// request.
type AuthorizationRule struct {
	From []RuleFrom `json:"from,omitempty"`
	To   []RuleTo   `json:"to,omitempty"`
	// When is a CEL expression over the request; see
	// docs/authorization.md for its variables.
	When string `json:"when,omitempty"`
}

// RuleFrom matches the source of a request when every field set matches.
// An entry must set at least one field.
type RuleFrom struct {
	// Principals are SPIFFE IDs, matched against the whole ID: exact,
	// "spiffe://td/ns/shop/*" (prefix), "*/sa/admin" (suffix) or "*".
	Principals    []string `json:"principals,omitempty"`
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	// Namespaces of the source identity: exact, prefix*, *suffix or *.
	Namespaces    []string `json:"namespaces,omitempty"`
	NotNamespaces []string `json:"notNamespaces,omitempty"`
	// IPBlocks are source addresses: CIDR blocks or single addresses.
	IPBlocks    []string `json:"ipBlocks,omitempty"`
	NotIPBlocks []string `json:"notIpBlocks,omitempty"`
}

// RuleTo matches the operation of a request when every field set
// matches. An entry must set at least one field.
type RuleTo struct {
	// Ports of the workload (the port its app listens on).
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports,omitempty"`
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	NotPorts []int32 `json:"notPorts,omitempty"`
	// Methods are HTTP methods, in upper case.
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	// Paths are normalized paths: exact, prefix*, *suffix, * or templates
	// ("/users/{id}/orders", "/static/**").
	Paths    []string `json:"paths,omitempty"`
	NotPaths []string `json:"notPaths,omitempty"`
	// Hosts are matched case-insensitively; an entry with a port matches
	// only that port.
	Hosts    []string `json:"hosts,omitempty"`
	NotHosts []string `json:"notHosts,omitempty"`
}

// MeshTLSPolicy sets whether workloads accept plaintext, for a namespace
// (no selector), some workloads (a selector) and some of their ports.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=mtlspolicy
// +kubebuilder:printcolumn:name="Mode",type="string",JSONPath=".spec.mode"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type MeshTLSPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MeshTLSPolicySpec `json:"spec"`
}

// MeshTLSPolicySpec describes a MeshTLSPolicy.
type MeshTLSPolicySpec struct {
	// Selector picks the workloads; empty means the whole namespace (the
	// whole mesh, in RootNamespace).
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// Mode is STRICT or PERMISSIVE. Empty inherits the mode of the
	// namespace, then of the mesh, then STRICT; a policy without a
	// selector must set it.
	Mode TLSMode `json:"mode,omitempty"`
	// Ports override Mode on some ports. Only with a selector: ports
	// belong to workloads.
	Ports []PortTLS `json:"ports,omitempty"`
}

// TLSMode says whether a workload accepts plaintext.
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE
type TLSMode string

// TLS modes.
const (
	// TLSStrict accepts only mutual TLS (the default).
	TLSStrict TLSMode = "STRICT"
	// TLSPermissive also accepts plaintext, counted, for migration.
	// Plaintext requests have no identity.
	TLSPermissive TLSMode = "PERMISSIVE"
)

// PortTLS is the TLS mode of one port.
type PortTLS struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32   `json:"port"`
	Mode TLSMode `json:"mode"`
}

// NamespacePolicy sets a namespace's default authorization: what happens
// to the requests to a workload that no ALLOW policy selects. In
// RootNamespace it sets the mesh-wide default, which a namespace's own
// NamespacePolicy overrides. Without either, the default is
// allow-authenticated.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=nspolicy
// +kubebuilder:printcolumn:name="Default",type="string",JSONPath=".spec.defaultAuthorization"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type NamespacePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec NamespacePolicySpec `json:"spec"`
}

// NamespacePolicySpec describes a NamespacePolicy.
type NamespacePolicySpec struct {
	// DefaultAuthorization is deny-all, allow-same-namespace or
	// allow-authenticated. Required. When a namespace has several
	// NamespacePolicies, the strictest wins.
	DefaultAuthorization DefaultAuthorization `json:"defaultAuthorization"`
}

// DefaultAuthorization is a namespace's default authorization.
// +kubebuilder:validation:Enum=deny-all;allow-same-namespace;allow-authenticated
type DefaultAuthorization string

// Default authorizations, strictest first.
const (
	// DefaultDenyAll denies every request that no ALLOW rule allows.
	DefaultDenyAll DefaultAuthorization = "deny-all"
	// DefaultAllowSameNamespace allows requests from verified identities
	// of the same namespace.
	DefaultAllowSameNamespace DefaultAuthorization = "allow-same-namespace"
	// DefaultAllowAuthenticated allows requests from any verified mesh
	// identity. It is the default of a mesh without NamespacePolicies.
	DefaultAllowAuthenticated DefaultAuthorization = "allow-authenticated"
)

// RateLimitPolicy limits the rate of requests to the workloads it selects.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=rlpolicy
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type RateLimitPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec RateLimitPolicySpec `json:"spec"`
}

// RateLimitPolicySpec describes a RateLimitPolicy.
type RateLimitPolicySpec struct {
	// Selector picks the workloads; empty means every workload of the
	// namespace (of the mesh, in RootNamespace).
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// Limits apply in order; a request must have a token in each limit
	// that matches it. At least one.
	// +kubebuilder:validation:MinItems=1
	Limits []RateLimit `json:"limits"`
}

// RateLimit is one token-bucket limit.
type RateLimit struct {
	// Name identifies the limit in metrics and logs; a limit keeps its
	// buckets across configuration changes while its name stays the
	// same. Required, unique in the policy.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Match selects the requests the limit counts; empty counts all.
	Match RateLimitMatch `json:"match,omitempty"`
	// Per is source (a bucket per source identity, or per address for
	// plaintext sources), route (a bucket per entry of match.to) or
	// overall (one bucket). Required.
	Per RateLimitKey `json:"per"`
	// RequestsPerSecond is the rate at which a bucket refills.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1048576
	RequestsPerSecond int32 `json:"requestsPerSecond"`
	// Burst is the size of a bucket; defaults to RequestsPerSecond.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1048576
	Burst int32 `json:"burst,omitempty"`
	// OnExceed cuts a source off for a while when it keeps exceeding the
	// limit. Only with per: source.
	OnExceed *RateLimitExceed `json:"onExceed,omitempty"`
}

// RateLimitMatch selects requests as the from and to of an
// AuthorizationRule do, except that a field the request has no value for
// (an identity field of a plaintext request, an HTTP field of a TCP
// connection) does not match.
type RateLimitMatch struct {
	From []RuleFrom `json:"from,omitempty"`
	To   []RuleTo   `json:"to,omitempty"`
}

// RateLimitKey says what gets a bucket of its own.
// +kubebuilder:validation:Enum=source;route;overall
type RateLimitKey string

// Rate limit keys.
const (
	PerSource  RateLimitKey = "source"
	PerRoute   RateLimitKey = "route"
	PerOverall RateLimitKey = "overall"
)

// RateLimitExceed is what happens to a source that keeps exceeding.
type RateLimitExceed struct {
	// ConsecutiveWindows is how many one-second windows in a row the
	// source must have been refused in before it is cut off; defaults
	// to 3.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	ConsecutiveWindows int32 `json:"consecutiveWindows,omitempty"`
	// CoolDown is how long the source is then refused everything, from 1s
	// to 24h. Required.
	CoolDown metav1.Duration `json:"coolDown"`
}

// DefaultConsecutiveWindows is RateLimitExceed.ConsecutiveWindows when it
// is not set.
const DefaultConsecutiveWindows = 3

// Default fills the namespace.
func (p *AuthorizationPolicy) Default() {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
}

// Validate reports every invalid field of p as FieldErrors: the
// checks of internal/authz on its rules (entries that do not parse, that
// can never match a normalized request or that contradict each other, CEL
// conditions that do not compile), an action that is not ALLOW, DENY
// or AUDIT, and a mode that is not ENFORCE or AUDIT. A DENY or AUDIT policy without rules is an error: it would
// match nothing, and its author most likely meant something else. An
// ALLOW policy without rules is accepted: it allows nothing.
func (p *AuthorizationPolicy) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindAuthorizationPolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	validateSelector(&errs, p.Spec.Selector)

	ap := p.ToAuthz()
	var aerrs authz.FieldErrors
	if _, err := authz.Compile(&authz.WorkloadPolicy{
		Namespace: "validate",
		Default:   authz.DefaultDenyAll,
		TLS:       authz.TLSPolicy{Mode: authz.TLSStrict},
		Policies:  []authz.Policy{ap},
	}); err != nil && !errors.As(err, &aerrs) {
		errs.add("spec", "%v", err)
	}
	for _, fe := range aerrs {
		// Compile names the fields "policies[0].rules[1]..."; the
		// resource has them under spec.
		field := fe.Field
		switch {
		case field == "policies[0].action":
			if p.Spec.Action == "" {
				errs.add("spec.action", "is required: ALLOW, DENY or AUDIT")
			} else {
				errs.add("spec.action", "must be ALLOW, DENY or AUDIT, not %s", quote(string(p.Spec.Action)))
			}
			continue
		case field == "policies[0].mode":
			errs.add("spec.mode", "must be ENFORCE or AUDIT (or left out, which is ENFORCE), not %s", quote(string(p.Spec.Mode)))
			continue
		case field == "policies[0].name", field == "policies[0].namespace":
			continue // reported by validateObjectMeta
		}
		errs.add("spec."+strings.TrimPrefix(field, "policies[0]."), "%s", fe.Msg)
	}
	return errs.errOrNil()
}

// ToAuthz returns p in the form internal/authz evaluates. It does not
// validate p.
func (p *AuthorizationPolicy) ToAuthz() authz.Policy {
	action, _ := authz.ParseAction(string(p.Spec.Action))
	out := authz.Policy{Namespace: p.Namespace, Name: p.Name, Action: action}
	if mode, ok := authz.ParseMode(string(p.Spec.Mode)); ok {
		out.Mode = mode
	} else {
		// An out-of-range mode, which authz rejects: never enforce a
		// policy whose author did not say ENFORCE.
		out.Mode = authz.Mode(255)
	}
	if out.Namespace == "" {
		out.Namespace = DefaultNamespace
	}
	if len(p.Spec.Rules) > 0 {
		out.Rules = make([]authz.Rule, len(p.Spec.Rules))
	}
	for i, r := range p.Spec.Rules {
		out.Rules[i] = authz.Rule{From: convertFrom(r.From), To: convertTo(r.To), When: r.When}
	}
	return out
}

func convertFrom(from []RuleFrom) []authz.Source {
	if from == nil {
		return nil
	}
	out := make([]authz.Source, len(from))
	for i, f := range from {
		out[i] = authz.Source{
			Principals:    f.Principals,
			NotPrincipals: f.NotPrincipals,
			Namespaces:    f.Namespaces,
			NotNamespaces: f.NotNamespaces,
			IPBlocks:      f.IPBlocks,
			NotIPBlocks:   f.NotIPBlocks,
		}
	}
	return out
}

func convertTo(to []RuleTo) []authz.Operation {
	if to == nil {
		return nil
	}
	out := make([]authz.Operation, len(to))
	for i, t := range to {
		out[i] = authz.Operation{
			Ports:      convertPorts(t.Ports),
			NotPorts:   convertPorts(t.NotPorts),
			Methods:    t.Methods,
			NotMethods: t.NotMethods,
			Paths:      t.Paths,
			NotPaths:   t.NotPaths,
			Hosts:      t.Hosts,
			NotHosts:   t.NotHosts,
		}
	}
	return out
}

// convertPorts converts ports; one outside 1-65535 becomes 0, which
// authz rejects.
func convertPorts(ports []int32) []uint32 {
	if ports == nil {
		return nil
	}
	out := make([]uint32, len(ports))
	for i, p := range ports {
		if p >= minPort && p <= maxPort {
			out[i] = uint32(p)
		}
	}
	return out
}

// Default fills the namespace.
func (p *MeshTLSPolicy) Default() {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
}

// Validate reports every invalid field of p as FieldErrors.
func (p *MeshTLSPolicy) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindMeshTLSPolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	validateSelector(&errs, p.Spec.Selector)
	spec := &p.Spec
	selects := spec.Selector != nil && len(spec.Selector.MatchLabels) > 0
	switch {
	case spec.Mode == "" && !selects:
		errs.add("spec.mode", "is required in a policy without a selector: STRICT or PERMISSIVE")
	case spec.Mode == "" && len(spec.Ports) == 0:
		errs.add("spec.mode", "is required when no ports are set: STRICT or PERMISSIVE")
	case spec.Mode != "" && !validTLSMode(spec.Mode):
		errs.add("spec.mode", "must be STRICT or PERMISSIVE, not %s", quote(string(spec.Mode)))
	}
	if len(spec.Ports) > 0 && !selects {
		errs.add("spec.ports", "need a selector: ports belong to workloads, so set per-port modes in a policy that selects them")
	}
	seen := make(map[int32]int, len(spec.Ports))
	for i, pt := range spec.Ports {
		path := fmt.Sprintf("spec.ports[%d]", i)
		if pt.Port < minPort || pt.Port > maxPort {
			errs.add(path+".port", "must be between %d and %d", minPort, maxPort)
		} else if j, dup := seen[pt.Port]; dup {
			errs.add(path+".port", "duplicate port %d (also spec.ports[%d])", pt.Port, j)
		} else {
			seen[pt.Port] = i
		}
		if !validTLSMode(pt.Mode) {
			errs.add(path+".mode", "must be STRICT or PERMISSIVE, not %s", quote(string(pt.Mode)))
		}
	}
	return errs.errOrNil()
}

func validTLSMode(m TLSMode) bool { return m == TLSStrict || m == TLSPermissive }

// Default fills the namespace.
func (p *NamespacePolicy) Default() {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
}

// Validate reports every invalid field of p as FieldErrors.
func (p *NamespacePolicy) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindNamespacePolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	if d := p.Spec.DefaultAuthorization; d == "" {
		errs.add("spec.defaultAuthorization", "is required: deny-all, allow-same-namespace or allow-authenticated")
	} else if _, ok := authz.ParseDefaultMode(string(d)); !ok {
		errs.add("spec.defaultAuthorization", "must be deny-all, allow-same-namespace or allow-authenticated, not %s", quote(string(d)))
	}
	return errs.errOrNil()
}

// Default fills the namespace, each limit's burst (its rate) and
// onExceed.consecutiveWindows (DefaultConsecutiveWindows).
func (p *RateLimitPolicy) Default() {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
	for i := range p.Spec.Limits {
		l := &p.Spec.Limits[i]
		if l.Burst == 0 {
			l.Burst = l.RequestsPerSecond
		}
		if l.OnExceed != nil && l.OnExceed.ConsecutiveWindows == 0 {
			l.OnExceed.ConsecutiveWindows = DefaultConsecutiveWindows
		}
	}
}

// maxRate bounds requestsPerSecond and burst.
const maxRate = 1 << 20

// Validate reports every invalid field of p as FieldErrors. Fields that
// Default fills may be left empty.
func (p *RateLimitPolicy) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, p.TypeMeta, KindRateLimitPolicy)
	validateObjectMeta(&errs, &p.ObjectMeta)
	validateSelector(&errs, p.Spec.Selector)
	if len(p.Spec.Limits) == 0 {
		errs.add("spec.limits", "at least one limit is required")
	}
	seen := make(map[string]int, len(p.Spec.Limits))
	for i, l := range p.Spec.Limits {
		path := fmt.Sprintf("spec.limits[%d]", i)
		switch {
		case l.Name == "":
			errs.add(path+".name", "is required: it names the limit in metrics and logs")
		case dns1123Label(l.Name) != "":
			errs.add(path+".name", "%s", dns1123Label(l.Name))
		default:
			if j, dup := seen[l.Name]; dup {
				errs.add(path+".name", "duplicate limit %q (also spec.limits[%d])", l.Name, j)
			} else {
				seen[l.Name] = i
			}
		}
		switch l.Per {
		case PerSource, PerOverall:
		case PerRoute:
			if len(l.Match.To) == 0 {
				errs.add(path+".match.to", "per: route needs routes: list them in match.to, each gets a bucket of its own")
			}
		case "":
			errs.add(path+".per", "is required: source, route or overall")
		default:
			errs.add(path+".per", "must be source, route or overall, not %s", quote(string(l.Per)))
		}
		if l.RequestsPerSecond < 1 || l.RequestsPerSecond > maxRate {
			errs.add(path+".requestsPerSecond", "must be between 1 and %d", maxRate)
		}
		if l.Burst != 0 && (l.Burst < 1 || l.Burst > maxRate) {
			errs.add(path+".burst", "must be between 1 and %d", maxRate)
		}
		if e := l.OnExceed; e != nil {
			if l.Per != PerSource && l.Per != "" {
				errs.add(path+".onExceed", "cuts a source off, so it needs per: source")
			}
			if e.ConsecutiveWindows != 0 && (e.ConsecutiveWindows < 1 || e.ConsecutiveWindows > 3600) {
				errs.add(path+".onExceed.consecutiveWindows", "must be between 1 and 3600")
			}
			if d := e.CoolDown.Duration; d < time.Second || d > 24*time.Hour {
				errs.add(path+".onExceed.coolDown", "must be between 1s and 24h")
			}
		}
		for _, fe := range authz.CheckRule(&authz.Rule{From: convertFrom(l.Match.From), To: convertTo(l.Match.To)}) {
			errs.add(path+".match."+fe.Field, "%s", fe.Msg)
		}
	}
	return errs.errOrNil()
}

// ToAuthz returns p's limits in the form internal/authz/ratelimit
// enforces. It does not validate p; call Default first.
func (p *RateLimitPolicy) ToAuthz() []authz.RateLimit {
	ns := p.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	out := make([]authz.RateLimit, len(p.Spec.Limits))
	for i, l := range p.Spec.Limits {
		per, _ := authz.ParseRateLimitKey(string(l.Per))
		burst := l.Burst
		if burst == 0 {
			burst = l.RequestsPerSecond
		}
		out[i] = authz.RateLimit{
			Policy:            ns + "/" + p.Name,
			Name:              l.Name,
			From:              convertFrom(l.Match.From),
			To:                convertTo(l.Match.To),
			Per:               per,
			RequestsPerSecond: uint32(max(l.RequestsPerSecond, 0)),
			Burst:             uint32(max(burst, 0)),
		}
		if e := l.OnExceed; e != nil {
			out[i].CoolDown = e.CoolDown.Duration
			out[i].CoolDownAfter = uint32(max(e.ConsecutiveWindows, 0))
			if out[i].CoolDownAfter == 0 {
				out[i].CoolDownAfter = DefaultConsecutiveWindows
			}
		}
	}
	return out
}

// validateSelector checks the labels of a selector.
func validateSelector(errs *FieldErrors, s *WorkloadSelector) {
	if s != nil {
		validateLabels(errs, "spec.selector.matchLabels", s.MatchLabels)
	}
}

// Selects reports whether s selects a workload with these labels: every
// label of MatchLabels must be among them. A nil or empty selector selects
// every workload.
func (s *WorkloadSelector) Selects(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
