// Package compile turns the security policy resources of api/v1alpha1
// (AuthorizationPolicy, MeshTLSPolicy, NamespacePolicy, RateLimitPolicy)
// into the authz.WorkloadPolicy of one workload: the policies that select
// it, its default and TLS mode resolved, in evaluation order. It also
// decodes policy documents strictly (Decode).
//
// It is the controller's and the CLI's side of internal/authz: it may
// import api/v1alpha1, and the proxy must never import it (the proxy only
// sees the compiled form). It must not depend on Kubernetes client
// libraries or on controller packages.
package compile

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
)

// Resources are the security policy resources of a mesh.
type Resources struct {
	AuthorizationPolicies []v1alpha1.AuthorizationPolicy
	MeshTLSPolicies       []v1alpha1.MeshTLSPolicy
	NamespacePolicies     []v1alpha1.NamespacePolicy
	RateLimitPolicies     []v1alpha1.RateLimitPolicy
}

// Add adds a resource that Decode returned.
func (r *Resources) Add(obj Object) error {
	switch o := obj.(type) {
	case *v1alpha1.AuthorizationPolicy:
		r.AuthorizationPolicies = append(r.AuthorizationPolicies, *o)
	case *v1alpha1.MeshTLSPolicy:
		r.MeshTLSPolicies = append(r.MeshTLSPolicies, *o)
	case *v1alpha1.NamespacePolicy:
		r.NamespacePolicies = append(r.NamespacePolicies, *o)
	case *v1alpha1.RateLimitPolicy:
		r.RateLimitPolicies = append(r.RateLimitPolicies, *o)
	default:
		return fmt.Errorf("compile: %T is not a policy resource", obj)
	}
	return nil
}

// Options tune compilation. The zero value is the mesh's defaults.
type Options struct {
	// RootNamespace is the mesh root namespace, whose policies apply to
	// every namespace. Empty means v1alpha1.RootNamespace.
	RootNamespace string
	// MeshDefault is the default authorization when neither the
	// workload's namespace nor the root namespace has a NamespacePolicy.
	// Zero means allow-authenticated: any verified mesh identity may
	// call, as before authorization policy existed; a mesh-wide
	// NamespacePolicy (or this option) makes the mesh deny by default.
	MeshDefault authz.DefaultMode
}

// Workload is a workload to compile for.
type Workload struct {
	Namespace string
	Labels    map[string]string
}

// ForWorkload returns the WorkloadPolicy of w: the authorization and rate
// limit policies that select it (those of its namespace and of the root
// namespace), its default authorization and its TLS mode. The resources
// are expected to be defaulted and valid (as Decode returns them); the
// error of a resource that is not names it. Policies come in a fixed
// order: the root namespace first, then by namespace and name.
func ForWorkload(res *Resources, w Workload, opts Options) (*authz.WorkloadPolicy, error) {
	root := cmp.Or(opts.RootNamespace, v1alpha1.RootNamespace)
	if w.Namespace == "" {
		return nil, errors.New("compile: workload has no namespace")
	}
	applies := func(ns string, sel *v1alpha1.WorkloadSelector) bool {
		return (ns == w.Namespace || ns == root) && sel.Selects(w.Labels)
	}
	order := func(ans, aname, bns, bname string) int {
		return cmp.Or(cmp.Compare(rank(ans, root), rank(bns, root)), cmp.Compare(ans, bns), cmp.Compare(aname, bname))
	}
	wp := &authz.WorkloadPolicy{Namespace: w.Namespace}

	var errs []error
	var aps []*v1alpha1.AuthorizationPolicy
	for i := range res.AuthorizationPolicies {
		p := &res.AuthorizationPolicies[i]
		if applies(ns(p.Namespace), p.Spec.Selector) {
			aps = append(aps, p)
		}
	}
	slices.SortFunc(aps, func(a, b *v1alpha1.AuthorizationPolicy) int {
		return order(ns(a.Namespace), a.Name, ns(b.Namespace), b.Name)
	})
	for _, p := range aps {
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", v1alpha1.KindAuthorizationPolicy, ns(p.Namespace), p.Name, err))
			continue
		}
		wp.Policies = append(wp.Policies, p.ToAuthz())
	}

	var rls []*v1alpha1.RateLimitPolicy
	for i := range res.RateLimitPolicies {
		p := &res.RateLimitPolicies[i]
		if applies(ns(p.Namespace), p.Spec.Selector) {
			rls = append(rls, p)
		}
	}
	slices.SortFunc(rls, func(a, b *v1alpha1.RateLimitPolicy) int {
		return order(ns(a.Namespace), a.Name, ns(b.Namespace), b.Name)
	})
	for _, p := range rls {
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", v1alpha1.KindRateLimitPolicy, ns(p.Namespace), p.Name, err))
			continue
		}
		wp.RateLimits = append(wp.RateLimits, p.ToAuthz()...)
	}

	wp.Default, wp.DefaultSource = defaultMode(res, w.Namespace, root, opts.MeshDefault)
	wp.TLS = tlsPolicy(res, w, root)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return wp, nil
}

// Engine compiles the WorkloadPolicy of w into an Engine, for the CLI.
func Engine(res *Resources, w Workload, opts Options) (*authz.Engine, error) {
	wp, err := ForWorkload(res, w, opts)
	if err != nil {
		return nil, err
	}
	return authz.Compile(wp)
}

func ns(n string) string { return cmp.Or(n, v1alpha1.DefaultNamespace) }

// rank puts the root namespace first.
func rank(n, root string) int {
	if n == root {
		return 0
	}
	return 1
}

// defaultMode resolves a namespace's default authorization: its own
// NamespacePolicies, else the root namespace's, else the mesh default;
// among several NamespacePolicies of one namespace, the strictest.
func defaultMode(res *Resources, namespace, root string, mesh authz.DefaultMode) (authz.DefaultMode, string) {
	pick := func(n string) (authz.DefaultMode, string) {
		best, src := authz.DefaultUnset, ""
		var names []string
		for i := range res.NamespacePolicies {
			p := &res.NamespacePolicies[i]
			if ns(p.Namespace) != n {
				continue
			}
			m, ok := authz.ParseDefaultMode(string(p.Spec.DefaultAuthorization))
			if !ok {
				// An invalid resource: fail closed.
				m = authz.DefaultDenyAll
			}
			if best == authz.DefaultUnset || m < best { // lower is stricter
				best = m
			}
			names = append(names, n+"/"+p.Name)
		}
		if best != authz.DefaultUnset {
			slices.Sort(names)
			src = v1alpha1.KindNamespacePolicy + " " + strings.Join(names, ", ")
		}
		return best, src
	}
	if m, src := pick(namespace); m != authz.DefaultUnset {
		return m, src
	}
	if m, src := pick(root); m != authz.DefaultUnset {
		return m, src + " (mesh-wide)"
	}
	if mesh != authz.DefaultUnset {
		return mesh, "mesh default"
	}
	return authz.DefaultAllowAuthenticated, "built-in default"
}

// tlsPolicy resolves a workload's TLS mode. The most specific level that
// sets a mode wins: a policy of the workload's namespace that selects it,
// one of its namespace without a selector, one of the root namespace that
// selects it, one of the root namespace without a selector, then STRICT.
// Per-port modes come from the policies with selectors, the workload's
// namespace before the root's. Where policies of one level disagree,
// STRICT wins.
func tlsPolicy(res *Resources, w Workload, root string) authz.TLSPolicy {
	type level struct {
		mode  authz.TLSMode
		names []string
	}
	var levels [4]level // see above, most specific first
	ports := map[uint32]authz.TLSMode{}
	portLevel := map[uint32]int{}
	for i := range res.MeshTLSPolicies {
		p := &res.MeshTLSPolicies[i]
		n := ns(p.Namespace)
		if n != w.Namespace && n != root {
			continue
		}
		selects := p.Spec.Selector != nil && len(p.Spec.Selector.MatchLabels) > 0
		if selects && !p.Spec.Selector.Selects(w.Labels) {
			continue
		}
		lv := 0
		switch {
		case n == w.Namespace && selects:
		case n == w.Namespace:
			lv = 1
		case selects:
			lv = 2
		default:
			lv = 3
		}
		if p.Spec.Mode != "" {
			m := parseTLS(p.Spec.Mode)
			if levels[lv].mode == authz.TLSUnset || m == authz.TLSStrict {
				levels[lv].mode = m
			}
			levels[lv].names = append(levels[lv].names, n+"/"+p.Name)
		}
		if !selects {
			continue
		}
		for _, pt := range p.Spec.Ports {
			port := uint32(max(pt.Port, 0))
			m := parseTLS(pt.Mode)
			old, set := portLevel[port]
			switch {
			case !set || lv < old:
				ports[port], portLevel[port] = m, lv
			case lv == old && m == authz.TLSStrict:
				ports[port] = m
			}
		}
	}
	out := authz.TLSPolicy{Mode: authz.TLSStrict, Source: "built-in default"}
	for i, lv := range levels {
		if lv.mode != authz.TLSUnset {
			slices.Sort(lv.names)
			out.Mode = lv.mode
			out.Source = v1alpha1.KindMeshTLSPolicy + " " + strings.Join(lv.names, ", ")
			if i >= 2 {
				out.Source += " (mesh-wide)"
			}
			break
		}
	}
	for port, m := range ports {
		out.Ports = append(out.Ports, authz.PortTLS{Port: port, Mode: m})
	}
	slices.SortFunc(out.Ports, func(a, b authz.PortTLS) int { return cmp.Compare(a.Port, b.Port) })
	return out
}

// parseTLS parses a TLS mode; an invalid one (from a resource that did not
// validate) is STRICT: fail closed.
func parseTLS(m v1alpha1.TLSMode) authz.TLSMode {
	if t, ok := authz.ParseTLSMode(string(m)); ok {
		return t
	}
	return authz.TLSStrict
}
