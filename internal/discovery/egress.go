package discovery

import (
	"cmp"
	"slices"
	"strings"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// MaxEgressRules bounds the egress rules sent to one proxy: one per
// EgressPolicy that selects its workload. Past it, the policies are taken
// in namespace/name order and the rest are left out (the workload may
// reach less, never more) and a warning is logged. The proxy refuses a
// configuration with more.
const MaxEgressRules = 1024

// egressLocked compiles the EgressPolicies that select the workload self
// into its proxy's egress allow-list: one rule per policy, in namespace
// then name order, each rule's hosts, networks and ports sorted and
// without duplicates. A policy selects the workloads of its namespace (of
// every namespace, in the root namespace) that its selector selects. The
// result is never nil: a workload that no policy selects gets an empty
// list, which admits nothing.
func (m *Model) egressLocked(self workload) *meshv1.EgressPolicy {
	out := &meshv1.EgressPolicy{}
	for i := range m.resources.EgressPolicies {
		p := &m.resources.EgressPolicies[i]
		ns := namespaceOf(p.Namespace)
		if ns != self.namespace && ns != v1alpha1.RootNamespace {
			continue
		}
		if !p.Spec.Selector.Selects(self.labels) {
			continue
		}
		out.Rules = append(out.Rules, egressRule(p))
	}
	slices.SortFunc(out.Rules, func(a, b *meshv1.EgressRule) int { return strings.Compare(a.GetSource(), b.GetSource()) })
	if len(out.Rules) > MaxEgressRules {
		m.warnOnceLocked("egress/"+self.namespace+"/"+self.name,
			"more EgressPolicies select this workload than a proxy takes: the ones past the limit, in namespace/name order, are left out",
			"namespace", self.namespace, "workload", self.name, "policies", len(out.Rules), "limit", MaxEgressRules,
			"first_left_out", out.Rules[MaxEgressRules].GetSource())
		out.Rules = out.Rules[:MaxEgressRules]
	}
	return out
}

// egressRule is the rule of one valid, defaulted policy.
func egressRule(p *v1alpha1.EgressPolicy) *meshv1.EgressRule {
	r := &meshv1.EgressRule{Source: namespaceOf(p.Namespace) + "/" + p.Name}
	r.Hosts = sortedUnique(p.Spec.Hosts, func(h string) (string, bool) {
		n, msg := v1alpha1.NormalizeEgressHost(h)
		return n, msg == ""
	})
	r.Cidrs = sortedUnique(p.Spec.CIDRs, func(c string) (string, bool) {
		n, msg := v1alpha1.NormalizeEgressCIDR(c)
		return n, msg == ""
	})
	for _, port := range p.Spec.Ports {
		if port >= 1 && port <= 65535 {
			r.Ports = append(r.Ports, uint32(port))
		}
	}
	slices.Sort(r.Ports)
	r.Ports = slices.Compact(r.Ports)
	return r
}

// sortedUnique returns the canonical forms of in, sorted and without
// duplicates, leaving out those norm refuses (validation already did).
func sortedUnique(in []string, norm func(string) (string, bool)) []string {
	var out []string
	for _, s := range in {
		if n, ok := norm(s); ok {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, cmp.Compare[string])
	return slices.Compact(out)
}
