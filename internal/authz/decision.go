package authz

import (
	"fmt"
	"strings"
)

// Decision is the outcome of Decide.
type Decision struct {
	// Allow is the decision.
	Allow bool
	// Code classifies the decision, for metrics.
	Code Code
	// Policy is "namespace/name" of the policy whose rule decided, or ""
	// when none did (the default, or no ALLOW rule matched).
	Policy string
	// Rule is the index of that rule in the policy, or -1.
	Rule int
	// Reason says in one line why, for the log and the response.
	Reason string

	// audits are the AUDIT rules that matched, the first MaxAudits of
	// them; moreAudits counts the others.
	audits     [MaxAudits]RuleRef
	nAudits    uint8
	moreAudits uint16
}

// MaxAudits is how many AUDIT matches a Decision lists; Decision.AuditsOmitted
// counts the others.
const MaxAudits = 8

// RuleRef names a rule of a policy.
type RuleRef struct {
	Policy string // "namespace/name"
	Rule   int
}

// Audits returns the AUDIT rules that matched the request, one per policy,
// in evaluation order.
func (d *Decision) Audits() []RuleRef { return d.audits[:d.nAudits] }

// AuditsOmitted counts the AUDIT policies that matched beyond MaxAudits.
func (d *Decision) AuditsOmitted() int { return int(d.moreAudits) }

func (d *Decision) addAudit(ref RuleRef) {
	if d.nAudits < MaxAudits {
		d.audits[d.nAudits] = ref
		d.nAudits++
	} else if d.moreAudits < 0xffff {
		d.moreAudits++
	}
}

func (d Decision) String() string {
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	return verdict + ": " + d.Reason
}

// Code classifies decisions, for metrics labels.
type Code uint8

// Codes.
const (
	// CodeNoPolicy: the proxy has no policy for the workload (a nil
	// Engine). Denied.
	CodeNoPolicy Code = iota
	// CodeInvalidRequest: the request is malformed (protocol unset, path
	// or host not normalized, no method). Denied.
	CodeInvalidRequest
	// CodePlaintext: a request without mutual TLS on a STRICT port. Denied.
	CodePlaintext
	// CodeDenyRule: a DENY rule matched.
	CodeDenyRule
	// CodeAllowRule: an ALLOW rule matched.
	CodeAllowRule
	// CodeNoAllowMatch: ALLOW policies select the workload but none of
	// their rules matched.
	CodeNoAllowMatch
	// CodeDefaultAllow: no ALLOW policy selects the workload and the
	// default allowed the request.
	CodeDefaultAllow
	// CodeDefaultDeny: no ALLOW policy selects the workload and the
	// default denied the request.
	CodeDefaultDeny
)

var codeNames = [...]string{"no_policy", "invalid_request", "plaintext", "deny_rule", "allow_rule", "no_allow_match", "default_allow", "default_deny"}

// String returns the code as a metrics label value: "deny_rule".
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code_%d", uint8(c))
}

// Explanation is a decision with the chain of checks that produced it.
type Explanation struct {
	Decision Decision
	Steps    []Step
	// AuditMode, when policies in AUDIT mode select the workload and
	// would change whether the request is allowed, is the decision they
	// would make; nil otherwise.
	AuditMode *AuditModeExplanation
}

// AuditModeExplanation is the decision with the workload's policies in
// AUDIT mode in force, when it differs from the decision made.
type AuditModeExplanation struct {
	Decision Decision
	// Policies are the policies in AUDIT mode that select the workload;
	// Policy is what the decision is owed to (Engine.AuditModePolicy).
	Policies []string
	Policy   string
	// Steps are the checks that the policies in AUDIT mode add: their
	// rules, and the end of the ALLOW stage when no rule decided.
	Steps []Step
}

// Step is one check of an explanation: the request itself, the TLS mode, a
// rule of a policy, or the default.
type Step struct {
	// Stage is "request", "tls", "audit", "deny", "allow" or "default".
	Stage string
	// Policy and Rule name the rule checked, for the policy stages;
	// Rule is -1 for a policy without rules.
	Policy string
	Rule   int
	// Matched says whether the check matched (for "request" and "tls":
	// whether the request passed it).
	Matched bool
	// Detail says why.
	Detail string
}

// String renders the explanation for people, one step a line.
func (x *Explanation) String() string {
	var b strings.Builder
	b.WriteString(x.Decision.String())
	b.WriteByte('\n')
	writeSteps(&b, x.Steps)
	if a := x.Decision.Audits(); len(a) > 0 {
		b.WriteString("  audited by:")
		for _, r := range a {
			fmt.Fprintf(&b, " %s rules[%d]", r.Policy, r.Rule)
		}
		b.WriteByte('\n')
	}
	if x.AuditMode != nil {
		b.WriteString(x.AuditMode.String())
	}
	return b.String()
}

// String renders the decision with the policies in AUDIT mode in force,
// and the checks they add, one a line.
func (am *AuditModeExplanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "in AUDIT mode, %s would make it %s\n", strings.Join(am.Policies, ", "), am.Decision)
	writeSteps(&b, am.Steps)
	return b.String()
}

func writeSteps(b *strings.Builder, steps []Step) {
	for _, s := range steps {
		mark := "-"
		if s.Matched {
			mark = "+"
		}
		fmt.Fprintf(b, "  %s %s", mark, s.Stage)
		if s.Policy != "" {
			b.WriteString(" " + s.Policy)
			if s.Rule >= 0 {
				fmt.Fprintf(b, " rules[%d]", s.Rule)
			}
		}
		if s.Detail != "" {
			b.WriteString(": " + s.Detail)
		}
		b.WriteByte('\n')
	}
}
