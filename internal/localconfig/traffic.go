package localconfig

import (
	"fmt"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// trafficRef is the Service a TrafficPolicy targets, and where.
type trafficRef struct {
	file    string
	line    int    // of the targetRef
	path    string // "spec.targetRefs[0]", for messages
	service string // "namespace/name"
}

// trafficRefsOf returns the Service a valid, defaulted TrafficPolicy
// targets, with the line ls finds it at.
func trafficRefsOf(p *v1alpha1.TrafficPolicy, file string, ls *lines) []trafficRef {
	refs := make([]trafficRef, 0, len(p.Spec.TargetRefs))
	for i, ref := range p.Spec.TargetRefs {
		path := fmt.Sprintf("spec.targetRefs[%d]", i)
		refs = append(refs, trafficRef{file: file, line: ls.of(path), path: path, service: p.Namespace + "/" + ref.Name})
	}
	return refs
}

// checkTrafficRefs checks, once every file is loaded, that the Services the
// TrafficPolicies target are defined. A Service that is defined but has
// problems of its own is not reported again.
func (l *loader) checkTrafficRefs() {
	for _, r := range l.trafficRefs {
		if _, defined := l.defined[v1alpha1.KindService+" "+r.service]; defined {
			continue
		}
		l.problems = append(l.problems, Problem{File: r.file, Line: r.line,
			Msg: fmt.Sprintf("%s: Service %s is not defined: a TrafficPolicy applies to a Service of the config directory", r.path, r.service)})
	}
}
