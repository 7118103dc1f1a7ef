// Package authzpb converts between the compiled authorization policy of a
// workload (authz.WorkloadPolicy) and its control-plane message
// (meshv1.WorkloadPolicy). The controller encodes with ToProto; the proxy
// decodes with FromProto, which rejects what it does not understand (an
// unknown enum value, a missing part) instead of guessing: the proxy then
// keeps its last good policy.
//
// Like internal/authz, it is linked into the proxy: it must not depend on
// Kubernetes packages, api/ or controller packages.
package authzpb

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rampart-mesh/rampart/internal/authz"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// ToProto encodes p. It encodes any value, valid or not; FromProto and
// authz.Compile judge it.
func ToProto(p *authz.WorkloadPolicy) *meshv1.WorkloadPolicy {
	if p == nil {
		return nil
	}
	m := &meshv1.WorkloadPolicy{
		Namespace:            p.Namespace,
		DefaultAuthorization: meshv1.DefaultAuthorization(p.Default),
		DefaultSource:        p.DefaultSource,
		Tls: &meshv1.TLSPolicy{
			Mode:   meshv1.TLSMode(p.TLS.Mode),
			Source: p.TLS.Source,
		},
	}
	for _, pt := range p.TLS.Ports {
		m.Tls.Ports = append(m.Tls.Ports, &meshv1.PortTLS{Port: pt.Port, Mode: meshv1.TLSMode(pt.Mode)})
	}
	for i := range p.Policies {
		pol := &p.Policies[i]
		mp := &meshv1.AuthorizationPolicy{
			Namespace: pol.Namespace,
			Name:      pol.Name,
			Action:    meshv1.PolicyAction(pol.Action),
		}
		if pol.Mode == authz.ModeAudit {
			// ENFORCE stays unset: a proxy that predates the field
			// then accepts every policy but those in AUDIT mode.
			mp.Mode = meshv1.PolicyMode_POLICY_MODE_AUDIT
		}
		for j := range pol.Rules {
			r := &pol.Rules[j]
			mp.Rules = append(mp.Rules, &meshv1.Rule{From: sourcesToProto(r.From), To: operationsToProto(r.To), When: r.When})
		}
		m.Policies = append(m.Policies, mp)
	}
	for i := range p.RateLimits {
		l := &p.RateLimits[i]
		ml := &meshv1.RateLimit{
			Policy:            l.Policy,
			Name:              l.Name,
			From:              sourcesToProto(l.From),
			To:                operationsToProto(l.To),
			Per:               meshv1.RateLimitKey(l.Per),
			RequestsPerSecond: l.RequestsPerSecond,
			Burst:             l.Burst,
			CoolDownAfter:     l.CoolDownAfter,
		}
		if l.CoolDown != 0 {
			ml.CoolDown = durationpb.New(l.CoolDown)
		}
		m.RateLimits = append(m.RateLimits, ml)
	}
	return m
}

func sourcesToProto(in []authz.Source) []*meshv1.Source {
	out := make([]*meshv1.Source, 0, len(in))
	for i := range in {
		s := &in[i]
		out = append(out, &meshv1.Source{
			Principals: s.Principals, NotPrincipals: s.NotPrincipals,
			Namespaces: s.Namespaces, NotNamespaces: s.NotNamespaces,
			IpBlocks: s.IPBlocks, NotIpBlocks: s.NotIPBlocks,
		})
	}
	return out
}

func operationsToProto(in []authz.Operation) []*meshv1.Operation {
	out := make([]*meshv1.Operation, 0, len(in))
	for i := range in {
		o := &in[i]
		out = append(out, &meshv1.Operation{
			Ports: o.Ports, NotPorts: o.NotPorts,
			Methods: o.Methods, NotMethods: o.NotMethods,
			Paths: o.Paths, NotPaths: o.NotPaths,
			Hosts: o.Hosts, NotHosts: o.NotHosts,
		})
	}
	return out
}

// FromProto decodes m. It fails, naming the field, on a nil message or
// part, an unspecified or unknown enum value, or a negative or out of range
// duration; whether the rules themselves make sense is authz.Compile's to
// say.
func FromProto(m *meshv1.WorkloadPolicy) (*authz.WorkloadPolicy, error) {
	if m == nil {
		return nil, errors.New("authorization: missing")
	}
	if path := unknownFields(m.ProtoReflect(), "authorization"); path != "" {
		// A field this proxy does not know may restrict what a rule
		// matches: dropping it could allow more than the policy says.
		return nil, fmt.Errorf("%s: has fields this proxy does not know (a controller newer than this proxy?): upgrade the proxy", path)
	}
	p := &authz.WorkloadPolicy{
		Namespace:     m.GetNamespace(),
		DefaultSource: m.GetDefaultSource(),
	}
	var err error
	if p.Default, err = enumOf[authz.DefaultMode]("authorization.default_authorization", int32(m.GetDefaultAuthorization()), authz.DefaultAllowAuthenticated); err != nil {
		return nil, err
	}
	if m.GetTls() == nil {
		return nil, errors.New("authorization.tls: missing")
	}
	p.TLS.Source = m.GetTls().GetSource()
	if p.TLS.Mode, err = enumOf[authz.TLSMode]("authorization.tls.mode", int32(m.GetTls().GetMode()), authz.TLSPermissive); err != nil {
		return nil, err
	}
	for i, pt := range m.GetTls().GetPorts() {
		if pt == nil {
			return nil, fmt.Errorf("authorization.tls.ports[%d]: missing", i)
		}
		mode, err := enumOf[authz.TLSMode](fmt.Sprintf("authorization.tls.ports[%d].mode", i), int32(pt.GetMode()), authz.TLSPermissive)
		if err != nil {
			return nil, err
		}
		p.TLS.Ports = append(p.TLS.Ports, authz.PortTLS{Port: pt.GetPort(), Mode: mode})
	}
	for i, mp := range m.GetPolicies() {
		path := fmt.Sprintf("authorization.policies[%d]", i)
		if mp == nil {
			return nil, errors.New(path + ": missing")
		}
		action, err := enumOf[authz.Action](path+".action", int32(mp.GetAction()), authz.ActionAudit)
		if err != nil {
			return nil, err
		}
		pol := authz.Policy{Namespace: mp.GetNamespace(), Name: mp.GetName(), Action: action}
		switch mp.GetMode() {
		case meshv1.PolicyMode_POLICY_MODE_UNSPECIFIED, meshv1.PolicyMode_POLICY_MODE_ENFORCE:
		case meshv1.PolicyMode_POLICY_MODE_AUDIT:
			pol.Mode = authz.ModeAudit
		default:
			return nil, fmt.Errorf("%s.mode: unknown value %d (a controller newer than this proxy?)", path, mp.GetMode())
		}
		for j, r := range mp.GetRules() {
			rpath := fmt.Sprintf("%s.rules[%d]", path, j)
			if r == nil {
				return nil, errors.New(rpath + ": missing")
			}
			from, err := sourcesFromProto(rpath+".from", r.GetFrom())
			if err != nil {
				return nil, err
			}
			to, err := operationsFromProto(rpath+".to", r.GetTo())
			if err != nil {
				return nil, err
			}
			pol.Rules = append(pol.Rules, authz.Rule{From: from, To: to, When: r.GetWhen()})
		}
		p.Policies = append(p.Policies, pol)
	}
	for i, ml := range m.GetRateLimits() {
		path := fmt.Sprintf("authorization.rate_limits[%d]", i)
		if ml == nil {
			return nil, errors.New(path + ": missing")
		}
		per, err := enumOf[authz.RateLimitKey](path+".per", int32(ml.GetPer()), authz.PerOverall)
		if err != nil {
			return nil, err
		}
		from, err := sourcesFromProto(path+".from", ml.GetFrom())
		if err != nil {
			return nil, err
		}
		to, err := operationsFromProto(path+".to", ml.GetTo())
		if err != nil {
			return nil, err
		}
		l := authz.RateLimit{
			Policy: ml.GetPolicy(), Name: ml.GetName(),
			From: from, To: to, Per: per,
			RequestsPerSecond: ml.GetRequestsPerSecond(),
			Burst:             ml.GetBurst(),
			CoolDownAfter:     ml.GetCoolDownAfter(),
		}
		if d := ml.GetCoolDown(); d != nil {
			if err := d.CheckValid(); err != nil {
				return nil, fmt.Errorf("%s.cool_down: %w", path, err)
			}
			if l.CoolDown = d.AsDuration(); l.CoolDown < 0 {
				return nil, fmt.Errorf("%s.cool_down: negative", path)
			}
		}
		p.RateLimits = append(p.RateLimits, l)
	}
	return p, nil
}

// enumOf converts a protobuf enum value whose numbers match those of T's
// constants, 1 to last; 0 (unspecified) and unknown values are errors.
func enumOf[T ~uint8](field string, v int32, last T) (T, error) {
	if v <= 0 || v > int32(last) {
		return 0, fmt.Errorf("%s: unknown value %d (a controller newer than this proxy?)", field, v)
	}
	return T(v), nil
}

func sourcesFromProto(path string, in []*meshv1.Source) ([]authz.Source, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]authz.Source, len(in))
	for i, s := range in {
		if s == nil {
			return nil, fmt.Errorf("%s[%d]: missing", path, i)
		}
		out[i] = authz.Source{
			Principals: s.GetPrincipals(), NotPrincipals: s.GetNotPrincipals(),
			Namespaces: s.GetNamespaces(), NotNamespaces: s.GetNotNamespaces(),
			IPBlocks: s.GetIpBlocks(), NotIPBlocks: s.GetNotIpBlocks(),
		}
	}
	return out, nil
}

func operationsFromProto(path string, in []*meshv1.Operation) ([]authz.Operation, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]authz.Operation, len(in))
	for i, o := range in {
		if o == nil {
			return nil, fmt.Errorf("%s[%d]: missing", path, i)
		}
		out[i] = authz.Operation{
			Ports: o.GetPorts(), NotPorts: o.GetNotPorts(),
			Methods: o.GetMethods(), NotMethods: o.GetNotMethods(),
			Paths: o.GetPaths(), NotPaths: o.GetNotPaths(),
			Hosts: o.GetHosts(), NotHosts: o.GetNotHosts(),
		}
	}
	return out, nil
}

// A compile-time check that the enum numbers agree: authz's constants are
// iota-based and the protobuf enums number the same values the same way.
var _ = [1]struct{}{}[int(authz.DefaultAllowAuthenticated)-int(meshv1.DefaultAuthorization_DEFAULT_AUTHORIZATION_ALLOW_AUTHENTICATED)]
var _ = [1]struct{}{}[int(authz.TLSPermissive)-int(meshv1.TLSMode_TLS_MODE_PERMISSIVE)]
var _ = [1]struct{}{}[int(authz.ActionAudit)-int(meshv1.PolicyAction_POLICY_ACTION_AUDIT)]
var _ = [1]struct{}{}[int(authz.PerOverall)-int(meshv1.RateLimitKey_RATE_LIMIT_KEY_OVERALL)]

// unknownFields returns the path of the first message in m's tree that
// carries fields unknown to this build, or "".
func unknownFields(m protoreflect.Message, path string) string {
	if len(m.GetUnknown()) > 0 {
		return path
	}
	var found string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		name := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && found == ""; i++ {
				found = unknownFields(l.Get(i).Message(), fmt.Sprintf("%s[%d]", name, i))
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Message() != nil {
					found = unknownFields(mv.Message(), name+"["+k.String()+"]")
				}
				return found == ""
			})
		default:
			found = unknownFields(v.Message(), name)
		}
		return found == ""
	})
	return found
}
