// Package recommend turns a learnt baseline (insights.Snapshot) into
// least-privilege AuthorizationPolicies: one ALLOW policy per destination
// workload, one rule per caller identity, with the methods and path
// templates the caller was seen using. It is pure: a snapshot in, policies
// and warnings out. It must not depend on the controller, the control
// plane, the proxy or a Kubernetes client (deps_test.go); `rampart policy
// recommend` feeds it and writes its output.
package recommend

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/insights"
)

// SnapshotVersion is the only baseline format version Policies reads.
const SnapshotVersion = 1

// NameSuffix ends the name of every recommended policy.
const NameSuffix = "-recommended"

// Options select and shape the recommendation. The zero value recommends
// policies for every namespace, in AUDIT mode.
type Options struct {
	// Namespace, when set, limits the policies to workloads of this
	// namespace.
	Namespace string
	// Enforce writes the policies in mode ENFORCE instead of AUDIT.
	Enforce bool
}

// Result is what Policies recommends.
type Result struct {
	// Policies are sorted by namespace then name; each passed v1alpha1
	// validation.
	Policies []Recommendation
	// Warnings say what the policies will deny that was observed, or
	// allow more broadly than observed, and why; grouped by workload, in
	// the order of the policies.
	Warnings []Warning
}

// Recommendation is one recommended policy with what it was made from.
type Recommendation struct {
	Policy *v1alpha1.AuthorizationPolicy
	// Workloads are the baselines the policy was made from: one, or
	// several of the same name and namespace under different service
	// accounts.
	Workloads []insights.WorkloadBaseline
	// Learning and the period are the snapshot's.
	Learning                      bool
	LearningStarted, LearningEnds string
}

// Warning is a reason to review a recommended policy before enforcing it.
type Warning struct {
	// Namespace and Workload name the destination.
	Namespace, Workload string
	// Caller is the caller's SPIFFE ID, or "plaintext", when the warning
	// is about one caller.
	Caller  string
	Message string
}

func (w Warning) String() string {
	s := w.Namespace + "/" + w.Workload
	if w.Caller != "" {
		s += ": caller " + w.Caller
	}
	return s + ": " + w.Message
}

// Policies recommends an AuthorizationPolicy for each destination
// workload of snap. It returns an error for a snapshot it cannot read
// (nil, another format version) or options that are not valid, and when
// a policy it made fails validation (a bug: no policy is then returned).
func Policies(snap *insights.Snapshot, opts Options) (Result, error) {
	var res Result
	if snap == nil {
		return res, errors.New("recommend: no baseline")
	}
	if snap.Version != SnapshotVersion {
		return res, fmt.Errorf("recommend: baseline format version %d: this rampart reads version %d; use the rampart release that matches the controller", snap.Version, SnapshotVersion)
	}
	if opts.Namespace != "" {
		if err := identity.ValidateName(opts.Namespace); err != nil {
			return res, fmt.Errorf("recommend: namespace %q: %w", opts.Namespace, err)
		}
	}
	groups := groupWorkloads(snap, opts, &res)
	for _, g := range groups {
		rec, err := recommendFor(g, opts, &res)
		if err != nil {
			return Result{}, err
		}
		rec.Learning = snap.Learning
		rec.LearningStarted = formatTime(snap.LearningStarted)
		rec.LearningEnds = formatTime(snap.LearningEnds)
		res.Policies = append(res.Policies, rec)
	}
	return res, nil
}

// group is the baselines one policy is made from.
type group struct {
	namespace, workload, name string
	selector                  map[string]string
	baselines                 []insights.WorkloadBaseline
}

// groupWorkloads picks the workloads to recommend for, their selectors
// and policy names, merging the baselines of one workload name registered
// under several service accounts.
func groupWorkloads(snap *insights.Snapshot, opts Options, res *Result) []*group {
	wbs := append([]insights.WorkloadBaseline(nil), snap.Workloads...)
	sort.SliceStable(wbs, func(i, j int) bool {
		a, b := wbs[i], wbs[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Workload != b.Workload {
			return a.Workload < b.Workload
		}
		return a.SPIFFEID < b.SPIFFEID
	})
	// appShared counts, per namespace and app label value, the workloads
	// carrying it: an app label shared by two workloads does not tell
	// them apart.
	appShared := map[[2]string]map[string]struct{}{}
	for _, wb := range wbs {
		if app, ok := wb.Labels["app"]; ok {
			k := [2]string{wb.Namespace, app}
			if appShared[k] == nil {
				appShared[k] = map[string]struct{}{}
			}
			appShared[k][wb.Workload] = struct{}{}
		}
	}
	var out []*group
	byName := map[[2]string]*group{}
	for _, wb := range wbs {
		if opts.Namespace != "" && wb.Namespace != opts.Namespace {
			continue
		}
		warn := func(format string, args ...any) {
			res.Warnings = append(res.Warnings, Warning{Namespace: wb.Namespace, Workload: wb.Workload, Message: fmt.Sprintf(format, args...)})
		}
		if identity.ValidateName(wb.Namespace) != nil || identity.ValidateName(wb.Workload) != nil {
			warn("not a valid namespace and workload name: no policy")
			continue
		}
		if len(wb.Labels) == 0 {
			warn("no labels known: no policy, since a policy without a selector would apply to every workload of the namespace; give the workload labels (its Workload document or registration) and run again, or write its policy by hand")
			continue
		}
		sel := wb.Labels
		if app, ok := wb.Labels["app"]; ok && len(appShared[[2]string{wb.Namespace, app}]) == 1 {
			sel = map[string]string{"app": app}
		}
		k := [2]string{wb.Namespace, wb.Workload}
		if g := byName[k]; g != nil {
			if !equalLabels(g.selector, sel) {
				warn("registered under %s with labels that differ from those under %s: no policy for %s; give both the same labels, or write its policy by hand",
					wb.SPIFFEID, g.baselines[0].SPIFFEID, wb.SPIFFEID)
				continue
			}
			g.baselines = append(g.baselines, wb)
			continue
		}
		g := &group{namespace: wb.Namespace, workload: wb.Workload, name: policyName(wb.Workload), selector: sel, baselines: []insights.WorkloadBaseline{wb}}
		byName[k] = g
		out = append(out, g)
	}
	// Two policies with one selector would each select both workloads,
	// and so allow each one's callers to the other.
	for i, a := range out {
		for _, b := range out[i+1:] {
			if a.namespace == b.namespace && equalLabels(a.selector, b.selector) {
				res.Warnings = append(res.Warnings, Warning{Namespace: b.namespace, Workload: b.workload,
					Message: fmt.Sprintf("has the same labels as %s/%s: the policies of both select both workloads and allow the callers of each to the other; give them distinct labels", a.namespace, a.workload)})
			}
		}
	}
	return out
}

// policyName is "<workload>-recommended", the workload part shortened to
// keep the name a DNS label.
func policyName(workload string) string {
	const maxLabel = 63
	if len(workload)+len(NameSuffix) > maxLabel {
		workload = strings.TrimRight(workload[:maxLabel-len(NameSuffix)], "-")
	}
	return workload + NameSuffix
}

// callerRules is what one caller identity was seen doing, merged over the
// baselines of a group.
type callerRules struct {
	id string
	// opaque: traffic without routes; overflow: routes not all kept.
	opaque, overflow bool
	routes           []insights.Route
}

// recommendFor makes the policy of one group.
func recommendFor(g *group, opts Options, res *Result) (Recommendation, error) {
	warn := func(caller, format string, args ...any) {
		res.Warnings = append(res.Warnings, Warning{Namespace: g.namespace, Workload: g.workload, Caller: caller, Message: fmt.Sprintf(format, args...)})
	}
	callers := map[string]*callerRules{}
	var ids []string
	for _, wb := range g.baselines {
		if wb.CallersOverflow {
			warn("", "had more callers than the baseline keeps: callers past the bound are not in the policy, which will deny them; list them with rampart edges and add rules by hand")
		}
		for _, c := range wb.Callers {
			if c.SPIFFEID == "" {
				who := "a caller outside the mesh"
				if c.Workload != "" {
					who = c.Workload
				}
				warn("plaintext", "%d requests from %s without mutual TLS: no rule, since a plaintext caller has no identity to allow; the policy will deny it once enforced: move the caller into the mesh, or allow its addresses (from.ipBlocks) by hand", c.Requests, who)
				continue
			}
			if _, err := spiffeid.FromString(c.SPIFFEID); err != nil {
				warn(c.SPIFFEID, "not a valid SPIFFE ID (%v): no rule", err)
				continue
			}
			if c.Requests > 0 && c.Denied >= c.Requests {
				warn(c.SPIFFEID, "all %d requests were denied by the policy in force: no rule", c.Requests)
				continue
			}
			cr := callers[c.SPIFFEID]
			if cr == nil {
				cr = &callerRules{id: c.SPIFFEID}
				callers[c.SPIFFEID] = cr
				ids = append(ids, c.SPIFFEID)
			}
			cr.overflow = cr.overflow || c.RoutesOverflow
			cr.opaque = cr.opaque || len(c.Routes) == 0
			cr.routes = append(cr.routes, c.Routes...)
		}
	}
	sort.Strings(ids)

	// Keep the routes that were answered at least once, and learn the
	// templates from them.
	var paths []string
	for _, id := range ids {
		cr := callers[id]
		if cr.overflow || cr.opaque {
			continue // its rule allows every route
		}
		kept := cr.routes[:0]
		for _, r := range cr.routes {
			if !strings.HasPrefix(r.Path, "/") {
				warn(id, "%s %q is not an origin-form path: not allowed", r.Method, r.Path)
				continue
			}
			if r.Requests > 0 && r.Refused >= r.Requests {
				warn(id, "%s %s was refused (403 or 404) every time, %d requests: not allowed", r.Method, r.Path, r.Requests)
				continue
			}
			kept = append(kept, r)
			paths = append(paths, r.Path)
		}
		cr.routes = kept
	}
	tmpl := newTemplater(paths)

	var rules []v1alpha1.AuthorizationRule
	for _, id := range ids {
		cr := callers[id]
		from := []v1alpha1.RuleFrom{{Principals: []string{id}}}
		switch {
		case cr.overflow:
			warn(id, "used more routes than the baseline keeps (or requests the proxies could not attribute to a route): its rule allows every method and path")
			rules = append(rules, v1alpha1.AuthorizationRule{From: from})
			continue
		case cr.opaque:
			warn(id, "sent traffic without HTTP routes (opaque TCP): its rule allows every port, method and path")
			rules = append(rules, v1alpha1.AuthorizationRule{From: from})
			continue
		}
		to := operations(cr.routes, tmpl, func(format string, args ...any) { warn(id, format, args...) })
		if len(to) == 0 {
			warn(id, "no route left to allow: no rule; the policy will deny this caller once enforced")
			continue
		}
		rules = append(rules, v1alpha1.AuthorizationRule{From: from, To: to})
	}
	if len(rules) == 0 {
		warn("", "no caller to allow: the policy allows nothing, and will deny every request to the workload once enforced")
	}

	mode := v1alpha1.ModeAudit
	if opts.Enforce {
		mode = v1alpha1.ModeEnforce
	}
	p := &v1alpha1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: v1alpha1.KindAuthorizationPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: g.name, Namespace: g.namespace},
		Spec: v1alpha1.AuthorizationPolicySpec{
			Selector: &v1alpha1.WorkloadSelector{MatchLabels: g.selector},
			Action:   v1alpha1.ActionAllow,
			Mode:     mode,
			Rules:    rules,
		},
	}
	if err := p.Validate(); err != nil {
		return Recommendation{}, fmt.Errorf("recommend: the policy made for %s/%s does not validate: %w", g.namespace, g.workload, err)
	}
	return Recommendation{Policy: p, Workloads: g.baselines}, nil
}

// operations returns the to entries allowing routes: each route's path
// template (with "/**" when the proxies truncated it), methods grouped by
// the set of paths they share. A route whose entry does not validate is
// left out with a warning.
func operations(routes []insights.Route, tmpl *templater, warn func(string, ...any)) []v1alpha1.RuleTo {
	const anyMethod = "*"
	methods := map[string]map[string]struct{}{} // path entry -> methods
	for _, r := range routes {
		entry := tmpl.template(r.Path)
		if r.Truncated {
			entry = strings.TrimSuffix(entry, "/") + "/**"
		}
		m := r.Method
		if m == "OTHER" {
			m = anyMethod
		}
		check := authz.Rule{To: []authz.Operation{{Paths: []string{entry}}}}
		if m != anyMethod {
			check.To[0].Methods = []string{m}
		}
		if errs := authz.CheckRule(&check); len(errs) > 0 {
			warn("%s %s cannot be written as a rule (%v): not allowed", r.Method, r.Path, errs)
			continue
		}
		if m == anyMethod {
			warn("%s used a method the proxies do not name: its rule allows every method on %s", r.Path, entry)
		}
		if methods[entry] == nil {
			methods[entry] = map[string]struct{}{}
		}
		methods[entry][m] = struct{}{}
	}
	// An exact path that a template of the same caller already allows
	// with every one of its methods adds nothing.
	for entry, ms := range methods {
		if strings.ContainsAny(entry, "{*") {
			continue
		}
		for other, oms := range methods {
			if other != entry && strings.ContainsAny(other, "{*") && templateMatches(other, entry) && covers(oms, ms) {
				delete(methods, entry)
				break
			}
		}
	}
	// Group the paths by their set of methods.
	byMethods := map[string][]string{}
	for entry, ms := range methods {
		key := anyMethod
		if _, all := ms[anyMethod]; !all {
			key = strings.Join(sortedKeys(ms), ",")
		}
		byMethods[key] = append(byMethods[key], entry)
	}
	var out []v1alpha1.RuleTo
	for _, key := range sortedKeys(byMethods) {
		ps := byMethods[key]
		sort.Strings(ps)
		to := v1alpha1.RuleTo{Paths: ps}
		if key != anyMethod {
			to.Methods = strings.Split(key, ",")
		}
		out = append(out, to)
	}
	return out
}

// templateMatches reports whether the template t matches the exact path p.
func templateMatches(t, p string) bool {
	rest := strings.HasSuffix(t, "/**")
	ts := splitPath(strings.TrimSuffix(t, "/**"))
	ps := splitPath(p)
	if len(ps) < len(ts) || !rest && len(ps) != len(ts) {
		return false
	}
	for i, s := range ts {
		if strings.HasPrefix(s, "{") {
			if ps[i] == "" {
				return false
			}
			continue
		}
		if s != ps[i] {
			return false
		}
	}
	return true
}

// covers reports whether the methods of a include those of b.
func covers(a, b map[string]struct{}) bool {
	if _, all := a["*"]; all {
		return true
	}
	for m := range b {
		if _, ok := a[m]; !ok {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
