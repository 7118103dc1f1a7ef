package localconfig

import (
	"fmt"
	"strconv"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// routeRef is a Service an HTTPRoute names, as parent or backend, and
// where.
type routeRef struct {
	file     string
	line     int    // of the parentRef or backendRef
	portLine int    // of its port
	path     string // "spec.parentRefs[0]", for messages
	backend  bool
	service  string // "namespace/name"
	port     *int32 // nil: every port (parents only)
}

// routeRefsOf returns the services a valid, defaulted route names, with the
// lines ls finds them at.
func routeRefsOf(r *gatewayv1.HTTPRoute, file string, ls *lines) []routeRef {
	var refs []routeRef
	add := func(path, name string, port *int32, backend bool) {
		refs = append(refs, routeRef{
			file: file, line: ls.of(path), portLine: ls.of(path + ".port"), path: path,
			backend: backend, service: r.Namespace + "/" + name, port: port,
		})
	}
	for i, p := range r.Spec.ParentRefs {
		add(fmt.Sprintf("spec.parentRefs[%d]", i), string(p.Name), p.Port, false)
	}
	for i, rule := range r.Spec.Rules {
		for j, b := range rule.BackendRefs {
			add(fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), string(b.Name), b.Port, true)
		}
	}
	return refs
}

// checkRouteRefs checks, once every file is loaded, that the services the
// routes name are defined and have the ports named, and that those ports
// carry HTTP. A route is checked against the whole directory, so the order
// of files does not matter. A service that is defined but has problems of
// its own is not checked further: its problems are reported.
func (l *loader) checkRouteRefs() {
	services := make(map[string]*v1alpha1.Service, len(l.res.Services))
	for i := range l.res.Services {
		s := &l.res.Services[i]
		services[s.Namespace+"/"+s.Name] = s
	}
	for _, r := range l.routeRefs {
		report := func(line int, format string, args ...any) {
			l.problems = append(l.problems, Problem{File: r.file, Line: line, Msg: fmt.Sprintf(format, args...)})
		}
		svc, ok := services[r.service]
		if !ok {
			if _, defined := l.defined[v1alpha1.KindService+" "+r.service]; !defined {
				what := "a route attaches to a Service of the config directory"
				if r.backend {
					what = "a route sends requests to Services of the config directory"
				}
				report(r.line, "%s: Service %s is not defined: %s", r.path, r.service, what)
			}
			continue
		}
		if r.port == nil {
			allTCP := true
			for _, p := range svc.Spec.Ports {
				allTCP = allTCP && p.Protocol == v1alpha1.ProtocolTCP
			}
			if allTCP {
				report(r.line, "%s: every port of Service %s is TCP: an HTTPRoute applies to HTTP requests only", r.path, r.service)
			}
			continue
		}
		var port *v1alpha1.ServicePort
		for i := range svc.Spec.Ports {
			if svc.Spec.Ports[i].Port == *r.port {
				port = &svc.Spec.Ports[i]
			}
		}
		switch {
		case port == nil:
			report(r.portLine, "%s.port: Service %s has no port %d: %s", r.path, r.service, *r.port, portList(svc))
		case port.Protocol == v1alpha1.ProtocolTCP && r.backend:
			report(r.portLine, "%s.port: port %d of Service %s is TCP: a route sends HTTP requests, which a TCP port does not take", r.path, *r.port, r.service)
		case port.Protocol == v1alpha1.ProtocolTCP:
			report(r.portLine, "%s.port: port %d of Service %s is TCP: an HTTPRoute applies to HTTP requests only", r.path, *r.port, r.service)
		}
	}
}

// portList says what the ports of svc are: "its port is 80", "its ports
// are 80, 443 and 9090".
func portList(svc *v1alpha1.Service) string {
	ports := make([]string, len(svc.Spec.Ports))
	for i, p := range svc.Spec.Ports {
		ports[i] = strconv.Itoa(int(p.Port))
	}
	if len(ports) == 1 {
		return "its port is " + ports[0]
	}
	return "its ports are " + strings.Join(ports[:len(ports)-1], ", ") + " and " + ports[len(ports)-1]
}
