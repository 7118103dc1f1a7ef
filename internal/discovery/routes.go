package discovery

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/rampart-mesh/rampart/api/httproute"
	"github.com/rampart-mesh/rampart/api/v1alpha1"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// compileRoutesLocked compiles the HTTPRoutes of the resources into the
// routes of each service they attach to, in Gateway API's order of
// precedence for ties (httproute.Compare). It runs once per SetResources;
// configFor copies the result into every configuration carrying a service.
//
// A route that does not validate (localconfig validates what it loads, so
// this is a bug or a caller that skipped it) is not dropped, which would
// send its service's requests where its author did not mean: it becomes
// one rule that matches every request and has no backend, so that the
// proxies answer 500 (fail closed), and it is logged. A backend that names
// an unknown service, or a port its service does not have, is kept as
// written: the proxies answer 500 for its share of the requests, as Gateway
// API requires of an invalid backendRef.
func (m *Model) compileRoutesLocked() map[serviceKey][]*meshv1.Route {
	routes := make([]*gatewayv1.HTTPRoute, 0, len(m.resources.HTTPRoutes))
	for i := range m.resources.HTTPRoutes {
		r := m.resources.HTTPRoutes[i].DeepCopy()
		httproute.Default(r)
		routes = append(routes, r)
	}
	slices.SortStableFunc(routes, httproute.Compare)

	out := make(map[serviceKey][]*meshv1.Route)
	for _, r := range routes {
		ns := namespaceOf(r.Namespace)
		err := httproute.Validate(r)
		if err != nil {
			m.warnOnceLocked("bad-route/"+ns+"/"+r.Name, "HTTPRoute is invalid; the services it attaches to answer 500 to every HTTP request until it is fixed",
				"namespace", ns, "route", r.Name, "error", err)
		}
		parents := httproute.Parents(r)
		for _, name := range slices.Sorted(maps.Keys(parents)) {
			k := serviceKey{namespace: ns, name: name}
			if m.findServiceLocked(k) == nil {
				m.warnOnceLocked("route-parent/"+ns+"/"+r.Name+"/"+name, "HTTPRoute attaches to a service that does not exist; it applies to nothing",
					"namespace", ns, "route", r.Name, "service", name)
				continue
			}
			ports := portsOf(parents[name].Ports)
			var mr *meshv1.Route
			if err != nil {
				mr = failClosedRoute(ns, r.Name, ports)
			} else {
				mr = toRoute(r, ns, ports)
				m.checkBackendsLocked(mr)
			}
			out[k] = append(out[k], mr)
		}
	}
	return out
}

// portsOf converts the ports of an attachment, sorted and without
// duplicates; nil stays nil (every port).
func portsOf(ports []int32) []uint32 {
	if ports == nil {
		return nil
	}
	out := make([]uint32, 0, len(ports))
	for _, p := range ports {
		out = append(out, uint32(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// failClosedRoute is what an invalid route becomes: every request to the
// ports it attaches to matches its one rule, which has no backend.
func failClosedRoute(ns, name string, ports []uint32) *meshv1.Route {
	return &meshv1.Route{
		Namespace: ns,
		Name:      name,
		Ports:     ports,
		Rules: []*meshv1.RouteRule{{
			Name: "invalid",
			Matches: []*meshv1.RouteMatch{{
				Path: &meshv1.PathMatch{Type: meshv1.PathMatchType_PATH_MATCH_TYPE_PREFIX, Value: "/"},
			}},
		}},
	}
}

// checkBackendsLocked logs the backends of mr that the proxies will answer
// 500 for: those naming a service or port that does not exist, or a TCP
// port.
func (m *Model) checkBackendsLocked(mr *meshv1.Route) {
	for _, rule := range mr.GetRules() {
		for _, b := range rule.GetBackends() {
			k := serviceKey{namespace: b.GetNamespace(), name: b.GetService()}
			key := "route-backend/" + mr.GetNamespace() + "/" + mr.GetName() + "/" + k.name
			svc := m.findServiceLocked(k)
			if svc == nil {
				m.warnOnceLocked(key, "HTTPRoute sends requests to a service that does not exist; they are answered 500",
					"namespace", mr.GetNamespace(), "route", mr.GetName(), "service", k.name)
				continue
			}
			i := slices.IndexFunc(svc.Spec.Ports, func(p v1alpha1.ServicePort) bool { return uint32(p.Port) == b.GetPort() })
			switch {
			case i < 0:
				m.warnOnceLocked(key, "HTTPRoute sends requests to a port its backend service does not have; they are answered 500",
					"namespace", mr.GetNamespace(), "route", mr.GetName(), "service", k.name, "port", b.GetPort())
			case svc.Spec.Ports[i].Protocol == v1alpha1.ProtocolTCP:
				m.warnOnceLocked(key, "HTTPRoute sends requests to a TCP port; they are answered 500",
					"namespace", mr.GetNamespace(), "route", mr.GetName(), "service", k.name, "port", b.GetPort())
			}
		}
	}
}

// toRoute converts a defaulted, valid route as it attaches to ports of one
// service of namespace ns. Its idle timeout annotation is set on each
// rule.
func toRoute(r *gatewayv1.HTTPRoute, ns string, ports []uint32) *meshv1.Route {
	out := &meshv1.Route{Namespace: ns, Name: r.Name, Ports: ports}
	// The annotation applies to every rule; valid, it is never an error.
	var idle *durationpb.Duration
	if d, err := httproute.IdleTimeout(r); err == nil && d > 0 {
		idle = durationpb.New(d)
	}
	for _, rule := range r.Spec.Rules {
		mr := &meshv1.RouteRule{RequestHeaders: headerModifier(rule.Filters), IdleTimeout: idle}
		if rule.Name != nil {
			mr.Name = string(*rule.Name)
		}
		for _, match := range rule.Matches {
			mr.Matches = append(mr.Matches, toMatch(match))
		}
		for _, b := range rule.BackendRefs {
			mr.Backends = append(mr.Backends, &meshv1.RouteBackend{
				Service:        string(b.Name),
				Namespace:      ns,
				Port:           uint32(deref(b.Port)),
				Weight:         uint32(deref(b.Weight)),
				RequestHeaders: headerModifier(b.Filters),
			})
		}
		if t := rule.Timeouts; t != nil {
			mr.RequestTimeout = durationOf(t.Request)
			mr.BackendRequestTimeout = durationOf(t.BackendRequest)
		}
		out.Rules = append(out.Rules, mr)
	}
	return out
}

func toMatch(match gatewayv1.HTTPRouteMatch) *meshv1.RouteMatch {
	out := &meshv1.RouteMatch{Path: &meshv1.PathMatch{Type: meshv1.PathMatchType_PATH_MATCH_TYPE_PREFIX, Value: "/"}}
	if p := match.Path; p != nil {
		if p.Type != nil && *p.Type == gatewayv1.PathMatchExact {
			out.Path.Type = meshv1.PathMatchType_PATH_MATCH_TYPE_EXACT
		}
		if p.Value != nil {
			out.Path.Value = *p.Value
		}
	}
	if match.Method != nil {
		out.Method = string(*match.Method)
	}
	for _, h := range match.Headers {
		out.Headers = append(out.Headers, &meshv1.HeaderMatch{
			Type:  meshv1.HeaderMatchType_HEADER_MATCH_TYPE_EXACT,
			Name:  string(h.Name),
			Value: h.Value,
		})
	}
	return out
}

// headerModifier returns the RequestHeaderModifier among filters, or nil.
func headerModifier(filters []gatewayv1.HTTPRouteFilter) *meshv1.HeaderModifier {
	for _, f := range filters {
		hf := f.RequestHeaderModifier
		if f.Type != gatewayv1.HTTPRouteFilterRequestHeaderModifier || hf == nil {
			continue
		}
		out := &meshv1.HeaderModifier{Remove: slices.Clone(hf.Remove)}
		for _, h := range hf.Set {
			out.Set = append(out.Set, &meshv1.Header{Name: string(h.Name), Value: h.Value})
		}
		for _, h := range hf.Add {
			out.Add = append(out.Add, &meshv1.Header{Name: string(h.Name), Value: h.Value})
		}
		return out
	}
	return nil
}

// durationOf converts a valid Gateway API duration; zero (no timeout) and
// nil are nil.
func durationOf(d *gatewayv1.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	v, err := httproute.ParseDuration(*d)
	if err != nil || v <= 0 {
		return nil
	}
	return durationpb.New(v)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// routeServicesLocked gives every service of services (a configuration's,
// sorted) the routes attached to it, and adds the services their backends
// name that are not there yet (with their endpoints but without routes of
// their own: routing is one hop), so that the proxy finds every backend in
// its configuration. A backend naming an unknown service adds nothing. It
// returns the services, sorted.
func (m *Model) routeServicesLocked(services []*meshv1.Service, workloads []workload) []*meshv1.Service {
	have := make(map[serviceKey]bool, len(services))
	for _, ms := range services {
		have[serviceKey{namespace: ms.GetNamespace(), name: ms.GetName()}] = true
	}
	var backends []serviceKey
	for _, ms := range services {
		for _, r := range m.routes[serviceKey{namespace: ms.GetNamespace(), name: ms.GetName()}] {
			ms.Routes = append(ms.Routes, proto.CloneOf(r))
			for _, rule := range r.GetRules() {
				for _, b := range rule.GetBackends() {
					k := serviceKey{namespace: b.GetNamespace(), name: b.GetService()}
					if !have[k] {
						have[k] = true
						backends = append(backends, k)
					}
				}
			}
		}
	}
	if len(backends) == 0 {
		return services
	}
	for _, k := range backends {
		if svc := m.findServiceLocked(k); svc != nil {
			services = append(services, m.serviceLocked(k, svc, workloads))
		}
	}
	slices.SortFunc(services, func(a, b *meshv1.Service) int {
		return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetName(), b.GetName()))
	})
	return services
}
