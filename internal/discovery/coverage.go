package discovery

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/compile"
	"github.com/rampart-mesh/rampart/internal/authz/ratelimit"
	"github.com/rampart-mesh/rampart/internal/identity"
)

// WorkloadCoverage is one workload's authorization policy as the
// compliance report shows it.
type WorkloadCoverage struct {
	Namespace      string `json:"namespace"`
	Name           string `json:"name"`
	ServiceAccount string `json:"serviceAccount"`
	// SPIFFEID is the identity the workload serves with; empty when its
	// service account makes no valid identity.
	SPIFFEID string `json:"spiffeId,omitempty"`
	// Declared says a Workload resource declares it; Registered that a
	// proxy stands in front of it now.
	Declared   bool `json:"declared"`
	Registered bool `json:"registered"`
	// Default is the default authorization ("deny-all",
	// "allow-same-namespace", "allow-authenticated") and DefaultSource
	// where it comes from.
	Default       string `json:"default"`
	DefaultSource string `json:"defaultSource"`
	// TLS is the workload's mesh TLS mode (STRICT or PERMISSIVE) and
	// TLSPorts the ports that override it ("8080=PERMISSIVE").
	TLS      string   `json:"tls"`
	TLSPorts []string `json:"tlsPorts,omitempty"`
	// Policies select the workload, in evaluation order.
	Policies []PolicyRef `json:"policies"`
	// Error is set when the policies that select the workload cannot be
	// compiled: the workload's proxy then keeps its last good policy, or
	// denies everything, and Policies, Default and TLS describe that.
	Error string `json:"error,omitempty"`
}

// PolicyRef names one authorization policy and what it does.
type PolicyRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Action is ALLOW, DENY or AUDIT.
	Action string `json:"action"`
	// Mode is ENFORCE, or AUDIT for a policy that takes no part in
	// decisions (its proxy only records what it would change).
	Mode string `json:"mode"`
}

// HasAllow reports whether an ALLOW policy in ENFORCE mode selects the
// workload: one in AUDIT mode decides nothing.
func (w *WorkloadCoverage) HasAllow() bool {
	return slices.ContainsFunc(w.Policies, func(p PolicyRef) bool {
		return p.Action == authz.ActionAllow.String() && p.Mode == authz.ModeEnforce.String()
	})
}

// Coverage returns every known workload (declared or registered, one entry
// per namespace, name and service account) with the authorization policy
// in force for it, sorted by namespace, name and service account. It only
// reads the model.
func (m *Model) Coverage() []WorkloadCoverage {
	m.mu.Lock()
	defer m.mu.Unlock()
	type key struct{ ns, name, sa string }
	byKey := make(map[key]*WorkloadCoverage)
	order := make([]key, 0)
	for _, w := range m.resources.Workloads {
		k := key{namespaceOf(w.Namespace), w.Name, w.Spec.ServiceAccount}
		if byKey[k] == nil {
			order = append(order, k)
			byKey[k] = m.coverageLocked(workload{namespace: k.ns, name: w.Name, serviceAccount: k.sa, labels: w.Labels})
		}
		byKey[k].Declared = true
	}
	// The most recent registration of a workload decides its labels, as
	// for its proxy's configuration (selfLocked).
	regIDs := make([]uint64, 0, len(m.registered))
	for id := range m.registered {
		regIDs = append(regIDs, id)
	}
	slices.Sort(regIDs)
	for _, id := range slices.Backward(regIDs) {
		w := m.registered[id]
		k := key{w.namespace, w.name, w.serviceAccount}
		if c := byKey[k]; c != nil {
			c.Registered = true
			continue
		}
		order = append(order, k)
		c := m.coverageLocked(w)
		c.Registered = true
		byKey[k] = c
	}
	slices.SortFunc(order, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name), cmp.Compare(a.sa, b.sa))
	})
	out := make([]WorkloadCoverage, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}

// coverageLocked describes the policy of w as policyLocked would choose
// it, without recording anything.
func (m *Model) coverageLocked(w workload) *WorkloadCoverage {
	c := &WorkloadCoverage{Namespace: w.namespace, Name: w.name, ServiceAccount: w.serviceAccount, Policies: []PolicyRef{}}
	if id, err := identity.WorkloadID(m.td, w.namespace, w.serviceAccount); err == nil {
		c.SPIFFEID = id.String()
	}
	wp, err := compile.ForWorkload(&m.policies, compile.Workload{Namespace: w.namespace, Labels: w.labels}, compile.Options{})
	if err == nil {
		_, err = authz.Compile(wp)
	}
	if err == nil {
		_, err = ratelimit.New(wp.RateLimits, ratelimit.Options{})
	}
	if err != nil {
		c.Error = err.Error()
		if last, ok := m.lastGoodPolicy[w.namespace+"/"+w.name]; ok {
			wp = last
		} else {
			wp = denyAll("the policies that select this workload cannot be enforced together")
		}
	}
	c.Default, c.DefaultSource = wp.Default.String(), wp.DefaultSource
	c.TLS = wp.TLS.Mode.String()
	for _, p := range wp.TLS.Ports {
		c.TLSPorts = append(c.TLSPorts, portTLS(p))
	}
	for _, p := range wp.Policies {
		c.Policies = append(c.Policies, PolicyRef{Namespace: p.Namespace, Name: p.Name, Action: p.Action.String(), Mode: p.Mode.String()})
	}
	return c
}

func portTLS(p authz.PortTLS) string {
	return strconv.FormatUint(uint64(p.Port), 10) + "=" + p.Mode.String()
}
