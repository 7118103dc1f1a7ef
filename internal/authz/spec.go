package authz

import (
	"fmt"
	"time"
)

// This file holds the compiled form: what the controller computes for one
// workload and sends to its proxy. It is plain data (strings, integers,
// slices, enums), mirroring the fields of the resources one to one, so that
// it maps directly onto a protobuf message.

// WorkloadPolicy is everything that decides about requests to one workload:
// the authorization policies that select it, its default, its mesh TLS mode
// and its rate limits.
type WorkloadPolicy struct {
	// Namespace is the workload's namespace, for allow-same-namespace
	// (required with it; empty for a proxy that is no workload of the
	// mesh, whose policy denies everything).
	Namespace string
	// Default applies when no ALLOW policy selects the workload.
	Default DefaultMode
	// DefaultSource says where Default comes from, for explanations:
	// "NamespacePolicy shop/default", "built-in".
	DefaultSource string
	// TLS is the workload's mesh TLS mode.
	TLS TLSPolicy
	// Policies are the authorization policies that select the workload,
	// in the order in which they are evaluated and reported (the
	// controller sorts them: the mesh root namespace first, then by
	// namespace and name).
	Policies []Policy
	// RateLimits are the rate limits that apply to the workload, in order.
	RateLimits []RateLimit
}

// DefaultMode is what happens to a request when no ALLOW policy selects the
// workload and no DENY rule matched.
type DefaultMode uint8

// Default modes. The zero value is invalid: a WorkloadPolicy must say.
const (
	DefaultUnset DefaultMode = iota
	// DefaultDenyAll denies every request that no ALLOW rule allows.
	DefaultDenyAll
	// DefaultAllowSameNamespace allows requests whose verified identity is
	// in the workload's namespace.
	DefaultAllowSameNamespace
	// DefaultAllowAuthenticated allows requests with a verified mesh
	// identity.
	DefaultAllowAuthenticated
)

var defaultNames = [...]string{"", "deny-all", "allow-same-namespace", "allow-authenticated"}

func (m DefaultMode) String() string {
	if int(m) < len(defaultNames) && m != DefaultUnset {
		return defaultNames[m]
	}
	return fmt.Sprintf("DefaultMode(%d)", uint8(m))
}

// ParseDefaultMode parses "deny-all", "allow-same-namespace" or
// "allow-authenticated".
func ParseDefaultMode(s string) (DefaultMode, bool) {
	for i, n := range defaultNames {
		if n == s && i != 0 {
			return DefaultMode(i), true
		}
	}
	return DefaultUnset, false
}

// TLSPolicy is a workload's mesh TLS mode, for the whole workload and per
// port.
type TLSPolicy struct {
	// Mode applies to the ports that Ports does not list.
	Mode TLSMode
	// Ports overrides Mode on some ports.
	Ports []PortTLS
	// Source says where Mode comes from, for explanations.
	Source string
}

// PortTLS is the TLS mode of one port.
type PortTLS struct {
	Port uint32
	Mode TLSMode
}

// TLSMode says whether a port accepts plaintext.
type TLSMode uint8

// TLS modes. The zero value is invalid: a TLSPolicy must say.
const (
	TLSUnset TLSMode = iota
	// TLSStrict accepts only mutual TLS from mesh identities.
	TLSStrict
	// TLSPermissive also accepts plaintext, for migration; plaintext
	// requests have no verified identity.
	TLSPermissive
)

var tlsNames = [...]string{"", "STRICT", "PERMISSIVE"}

func (m TLSMode) String() string {
	if int(m) < len(tlsNames) && m != TLSUnset {
		return tlsNames[m]
	}
	return fmt.Sprintf("TLSMode(%d)", uint8(m))
}

// ParseTLSMode parses "STRICT" or "PERMISSIVE".
func ParseTLSMode(s string) (TLSMode, bool) {
	for i, n := range tlsNames {
		if n == s && i != 0 {
			return TLSMode(i), true
		}
	}
	return TLSUnset, false
}

// Policy is one authorization policy.
type Policy struct {
	// Namespace and Name identify the policy in decisions and logs.
	Namespace, Name string
	Action          Action
	// Mode says whether the policy takes part in decisions; the zero
	// value, ModeEnforce, says it does.
	Mode Mode
	// Rules: the policy matches a request when one of them does. An
	// ALLOW policy without rules allows nothing (but, selecting the
	// workload, makes it deny what no other ALLOW rule allows); a DENY or
	// AUDIT policy must have rules.
	Rules []Rule
}

// Action is what a policy does with the requests it matches.
type Action uint8

// Actions. The zero value is invalid.
const (
	ActionUnset Action = iota
	// ActionAllow: when any ALLOW policy selects a workload, a request
	// must match one of their rules.
	ActionAllow
	// ActionDeny: a request that matches a DENY rule is denied.
	ActionDeny
	// ActionAudit: a request that matches an AUDIT rule is reported in
	// the decision; the decision does not change.
	ActionAudit
)

var actionNames = [...]string{"", "ALLOW", "DENY", "AUDIT"}

func (a Action) String() string {
	if int(a) < len(actionNames) && a != ActionUnset {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// ParseAction parses "ALLOW", "DENY" or "AUDIT".
func ParseAction(s string) (Action, bool) {
	for i, n := range actionNames {
		if n == s && i != 0 {
			return Action(i), true
		}
	}
	return ActionUnset, false
}

// Mode says whether a policy takes part in decisions.
type Mode uint8

// Modes. The zero value enforces.
const (
	// ModeEnforce: the policy takes part in every decision.
	ModeEnforce Mode = iota
	// ModeAudit: the policy does not take part in the decision. The
	// engine decides a second time as if it were enforced (see
	// Engine.DecideAuditMode), so that the proxy can record every request
	// whose decision the policy would change.
	ModeAudit
)

var modeNames = [...]string{"ENFORCE", "AUDIT"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode parses "ENFORCE" or "AUDIT"; "" is ENFORCE.
func ParseMode(s string) (Mode, bool) {
	if s == "" {
		return ModeEnforce, true
	}
	for i, n := range modeNames {
		if n == s {
			return Mode(i), true
		}
	}
	return ModeEnforce, false
}

// Rule matches a request when one of From matches its source (or From is
// empty), one of To matches its operation (or To is empty), and When, if
// set, is true.
type Rule struct {
	From []Source
	To   []Operation
	// When is a CEL expression over the request's attributes; see
	// docs/authorization.md for the variables.
	When string
}

// Source matches the source of a request when every field that is set
// matches. A field matches when the value is one of the field's entries;
// a Not field when it is none of them.
type Source struct {
	// Principals are SPIFFE IDs: exact ("spiffe://td/ns/a/sa/b"),
	// prefix ("spiffe://td/ns/a/*"), suffix ("*/sa/b") or "*" (any
	// verified identity).
	Principals, NotPrincipals []string
	// Namespaces of the source's identity: exact, prefix*, *suffix or *.
	Namespaces, NotNamespaces []string
	// IPBlocks are source addresses in CIDR form, or single addresses.
	IPBlocks, NotIPBlocks []string
}

// Operation matches the operation of a request when every field that is
// set matches.
type Operation struct {
	// Ports of the workload (the port the app listens on), 1-65535.
	Ports, NotPorts []uint32
	// Methods are HTTP methods, case-sensitive.
	Methods, NotMethods []string
	// Paths are normalized paths: exact, prefix*, *suffix, *, or
	// templates: "/users/{id}/orders" ({name} is one segment), "/static/**"
	// (** is the rest, and matches "/static" itself).
	Paths, NotPaths []string
	// Hosts are matched case-insensitively: exact, *suffix or prefix*; an
	// entry with a port matches only that host:port, one without a port
	// matches the host with any port or none.
	Hosts, NotHosts []string
}

// hasHTTP reports whether o has fields that only HTTP requests have.
func (o *Operation) hasHTTP() bool {
	return len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths)+len(o.Hosts)+len(o.NotHosts) > 0
}

// RateLimit is one token-bucket limit.
type RateLimit struct {
	// Policy ("namespace/name") and Name identify the limit. A limit keeps
	// its buckets across reconfigurations while these stay the same.
	Policy, Name string
	// Match selects the requests the limit counts: those that one of
	// From and one of To match (an empty list matches everything). The
	// fields mean what they mean in a Rule, except that a field the
	// request has no value for (an identity field of a plaintext request,
	// an HTTP field of a TCP connection) does not match.
	From []Source
	To   []Operation
	// Per says what gets a bucket of its own.
	Per RateLimitKey
	// RequestsPerSecond is the rate at which a bucket refills, and Burst
	// its size: how many requests may come at once after a quiet spell.
	RequestsPerSecond uint32
	Burst             uint32
	// CoolDown, if set (only with Per == PerSource), refuses every request
	// of a source for that long once it has exceeded its limit in
	// CoolDownAfter consecutive one-second windows.
	CoolDown      time.Duration
	CoolDownAfter uint32
}

// RateLimitKey says what gets a bucket of its own.
type RateLimitKey uint8

// Rate limit keys. The zero value is invalid.
const (
	PerUnset RateLimitKey = iota
	// PerSource: a bucket per verified source identity; requests without
	// one are keyed by source IP address (an IPv6 address by its /64).
	PerSource
	// PerRoute: a bucket per entry of To.
	PerRoute
	// PerOverall: one bucket for all the requests the limit matches.
	PerOverall
)

var perNames = [...]string{"", "source", "route", "overall"}

func (k RateLimitKey) String() string {
	if int(k) < len(perNames) && k != PerUnset {
		return perNames[k]
	}
	return fmt.Sprintf("RateLimitKey(%d)", uint8(k))
}

// ParseRateLimitKey parses "source", "route" or "overall".
func ParseRateLimitKey(s string) (RateLimitKey, bool) {
	for i, n := range perNames {
		if n == s && i != 0 {
			return RateLimitKey(i), true
		}
	}
	return PerUnset, false
}
