// Package httproute is Rampart's support of the Gateway API HTTPRoute
// (sigs.k8s.io/gateway-api/apis/v1) attached to a Service, as service meshes
// use it (GAMMA): the defaults the CRD would fill in, the validation that
// accepts exactly what Rampart implements and rejects the rest field by
// field (fail closed: an unsupported match or filter is an error, never
// ignored), the order of precedence between routes, and how a route
// attaches to a service. One Go type serves local mode (YAML files) and,
// later, Kubernetes.
//
// The proxy never imports this package: the controller compiles routes into
// the control-plane protocol (internal/meshapi), and internal/proxy/route
// matches requests against that.
package httproute

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// APIVersion and Kind of an HTTPRoute document.
const (
	APIVersion = gatewayv1.GroupName + "/v1"
	Kind       = "HTTPRoute"
)

// MaxWeight is the largest weight of a backend, as Gateway API allows.
const MaxWeight = 1_000_000

// Limits, those of the Gateway API CRD: a route is written by hand and
// small, and every proxy that reaches its service holds it.
const (
	maxParentRefs   = 32
	maxRules        = 16
	maxRuleMatches  = 64
	maxMatches      = 128 // across the rules of a route
	maxHeaders      = 16  // header matches of a match, entries of set, add or remove
	maxFilters      = 16
	maxBackendRefs  = 16
	maxPathLength   = 1024
	maxHeaderName   = 256
	maxHeaderValue  = 4096
	maxSectionName  = 253
	serviceKind     = "Service"
	coreGroupAlias  = "core"
	supportedFilter = gatewayv1.HTTPRouteFilterRequestHeaderModifier
)

// Default fills in what an HTTPRoute may leave out, as the Gateway API CRD
// would on Kubernetes: the namespace ("default"); a rule's matches (a
// PathPrefix match on "/"); a match's path (PathPrefix "/"), path type
// (PathPrefix) and header match type (Exact); a backend's group (core),
// kind (Service) and weight (1). A parentRef's group and kind are not
// filled in: left out, Gateway API means a Gateway, which Validate
// refuses.
func Default(r *gatewayv1.HTTPRoute) {
	if r.Namespace == "" {
		r.Namespace = v1alpha1.DefaultNamespace
	}
	for i := range r.Spec.Rules {
		rule := &r.Spec.Rules[i]
		if len(rule.Matches) == 0 {
			rule.Matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		for j := range rule.Matches {
			m := &rule.Matches[j]
			if m.Path == nil {
				m.Path = &gatewayv1.HTTPPathMatch{}
			}
			if m.Path.Type == nil {
				m.Path.Type = ptr(gatewayv1.PathMatchPathPrefix)
			}
			if m.Path.Value == nil {
				m.Path.Value = ptr("/")
			}
			for k := range m.Headers {
				if m.Headers[k].Type == nil {
					m.Headers[k].Type = ptr(gatewayv1.HeaderMatchExact)
				}
			}
			for k := range m.QueryParams {
				if m.QueryParams[k].Type == nil {
					m.QueryParams[k].Type = ptr(gatewayv1.QueryParamMatchExact)
				}
			}
		}
		for j := range rule.BackendRefs {
			b := &rule.BackendRefs[j]
			if b.Group == nil {
				b.Group = ptr(gatewayv1.Group(""))
			}
			if b.Kind == nil {
				b.Kind = ptr(gatewayv1.Kind(serviceKind))
			}
			if b.Weight == nil {
				b.Weight = ptr(int32(1))
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// Validate reports, as v1alpha1.FieldErrors, every field of r that Rampart
// does not support or that is invalid. What it accepts:
//
//   - parentRefs: Services (group "" or "core", kind Service) in the
//     route's own namespace (producer routes), optionally one port of
//     each; not sectionName.
//   - rules[].matches: path Exact or PathPrefix, method, headers Exact.
//   - rules[].filters and backendRefs[].filters: RequestHeaderModifier.
//   - rules[].backendRefs: at least one; Services of the route's namespace,
//     with a port, weights 0 to 1,000,000.
//   - rules[].timeouts: request and backendRequest.
//   - metadata.annotations[rampart.dev/idle-timeout]: the idle timeout of
//     every rule (IdleTimeout).
//
// It refuses hostnames, query parameter matches, regular expressions, the
// other filters, retry, sessionPersistence, useDefaultGateways and status.
// Validate checks r alone: whether the services it names exist is for the
// caller. Fields Default fills may be left empty.
func Validate(r *gatewayv1.HTTPRoute) error {
	var errs v1alpha1.FieldErrors
	if r.APIVersion != "" && r.APIVersion != APIVersion {
		errs.Add("apiVersion", "must be %q, not %s", APIVersion, quote(r.APIVersion))
	}
	if r.Kind != "" && r.Kind != Kind {
		errs.Add("kind", "must be %q, not %s", Kind, quote(r.Kind))
	}
	v1alpha1.ValidateObjectMeta(&errs, &r.ObjectMeta)
	validateAnnotations(&errs, r.Annotations)
	ns := r.Namespace
	if ns == "" {
		ns = v1alpha1.DefaultNamespace
	}
	spec := &r.Spec
	if spec.UseDefaultGateways != "" {
		errs.Add("spec.useDefaultGateways", "is not supported: Rampart attaches routes to Services, named in parentRefs")
	}
	if len(spec.Hostnames) > 0 {
		errs.Add("spec.hostnames", "is not supported: a route attached to a Service applies to every request sent to the Service, whatever its Host (GAMMA); remove it")
	}
	validateParents(&errs, spec.ParentRefs, ns)

	switch n := len(spec.Rules); {
	case n == 0:
		errs.Add("spec.rules", "is required: at least one rule, with the backends the requests go to")
	case n > maxRules:
		errs.Add("spec.rules", "has %d rules, at most %d are allowed", n, maxRules)
	}
	matches := 0
	names := make(map[string]int)
	for i := range spec.Rules {
		rule := &spec.Rules[i]
		p := fmt.Sprintf("spec.rules[%d]", i)
		if rule.Name != nil {
			if msg := sectionName(string(*rule.Name)); msg != "" {
				errs.Add(p+".name", "%s", msg)
			} else if first, dup := names[string(*rule.Name)]; dup {
				errs.Add(p+".name", "%s is also the name of rules[%d]: rule names are unique within a route", quote(string(*rule.Name)), first)
			} else {
				names[string(*rule.Name)] = i
			}
		}
		if n := len(rule.Matches); n > maxRuleMatches {
			errs.Add(p+".matches", "has %d matches, at most %d are allowed", n, maxRuleMatches)
		}
		matches += len(rule.Matches)
		for j := range rule.Matches {
			validateMatch(&errs, fmt.Sprintf("%s.matches[%d]", p, j), &rule.Matches[j])
		}
		validateFilters(&errs, p+".filters", rule.Filters)
		validateBackends(&errs, p+".backendRefs", rule.BackendRefs, ns)
		validateTimeouts(&errs, p+".timeouts", rule.Timeouts)
		if rule.Retry != nil {
			errs.Add(p+".retry", "is not supported yet: the proxy retries connection failures by itself; remove it")
		}
		if rule.SessionPersistence != nil {
			errs.Add(p+".sessionPersistence", "is not supported: remove it")
		}
	}
	if matches > maxMatches {
		errs.Add("spec.rules", "have %d matches in all, at most %d are allowed", matches, maxMatches)
	}
	if len(r.Status.Parents) > 0 {
		errs.Add("status", "is written by a controller, not in a config file: remove it")
	}
	return errs.ErrOrNil()
}

func validateParents(errs *v1alpha1.FieldErrors, refs []gatewayv1.ParentReference, ns string) {
	switch n := len(refs); {
	case n == 0:
		errs.Add("spec.parentRefs", "is required: the Service the route applies to, as {group: \"\", kind: Service, name: <service>}")
		return
	case n > maxParentRefs:
		errs.Add("spec.parentRefs", "has %d entries, at most %d are allowed", n, maxParentRefs)
	}
	type seen struct {
		index   int
		allPort bool
	}
	first := make(map[string]seen) // service name -> first ref naming it
	ports := make(map[string]int)  // "name:port" -> first ref
	for i := range refs {
		ref := &refs[i]
		p := fmt.Sprintf("spec.parentRefs[%d]", i)
		switch {
		case ref.Group == nil:
			errs.Add(p+".group", "is required for a Service: set it to \"\" (left out, it means %s, the group of Gateways, which Rampart does not support)", gatewayv1.GroupName)
		case !coreGroup(*ref.Group):
			errs.Add(p+".group", "must be \"\" (the core group of Service), not %s: Rampart attaches routes to Services only", quote(string(*ref.Group)))
		}
		switch {
		case ref.Kind == nil:
			errs.Add(p+".kind", "is required: set it to Service (left out, it means Gateway, which Rampart does not support)")
		case *ref.Kind != serviceKind:
			errs.Add(p+".kind", "must be Service, not %s: Rampart attaches routes to Services only", quote(string(*ref.Kind)))
		}
		if ref.Namespace != nil && string(*ref.Namespace) != ns {
			errs.Add(p+".namespace", "must be the route's own namespace %q, not %s: routes for a Service of another namespace (GAMMA consumer routes) are not supported yet", ns, quote(string(*ref.Namespace)))
		}
		name := string(ref.Name)
		if name == "" {
			errs.Add(p+".name", "is required: the name of the Service")
		} else if msg := label(name); msg != "" {
			errs.Add(p+".name", "%s", msg)
		}
		if ref.SectionName != nil {
			errs.Add(p+".sectionName", "is not supported: name the service port by number with port")
		}
		if ref.Port != nil && (*ref.Port < 1 || *ref.Port > 65535) {
			errs.Add(p+".port", "must be between 1 and 65535")
		}
		if name == "" {
			continue
		}
		all := ref.Port == nil
		if s, ok := first[name]; !ok {
			first[name] = seen{index: i, allPort: all}
		} else if s.allPort || all {
			errs.Add(p, "names Service %s again, as parentRefs[%d] does: name it once without port for every port, or once per port with port", quote(name), s.index)
			continue
		}
		if !all {
			key := name + ":" + strconv.Itoa(int(*ref.Port))
			if j, dup := ports[key]; dup {
				errs.Add(p, "is the same as parentRefs[%d]", j)
			} else {
				ports[key] = i
			}
		}
	}
}

func coreGroup(g gatewayv1.Group) bool { return g == "" || g == coreGroupAlias }

func validateMatch(errs *v1alpha1.FieldErrors, p string, m *gatewayv1.HTTPRouteMatch) {
	if m.Path != nil {
		typ := gatewayv1.PathMatchPathPrefix
		if m.Path.Type != nil {
			typ = *m.Path.Type
		}
		switch typ {
		case gatewayv1.PathMatchExact, gatewayv1.PathMatchPathPrefix:
			value := "/"
			if m.Path.Value != nil {
				value = *m.Path.Value
			}
			if msg := pathValue(value); msg != "" {
				errs.Add(p+".path.value", "%s", msg)
			}
		case gatewayv1.PathMatchRegularExpression:
			errs.Add(p+".path.type", "RegularExpression is not supported yet: use Exact or PathPrefix")
		default:
			errs.Add(p+".path.type", "must be Exact or PathPrefix, not %s", quote(string(typ)))
		}
	}
	if m.Method != nil && !validMethod(string(*m.Method)) {
		errs.Add(p+".method", "must be one of %s, not %s", methodList, quote(string(*m.Method)))
	}
	if n := len(m.Headers); n > maxHeaders {
		errs.Add(p+".headers", "has %d entries, at most %d are allowed", n, maxHeaders)
	}
	names := make(map[string]int)
	for k := range m.Headers {
		h := &m.Headers[k]
		hp := fmt.Sprintf("%s.headers[%d]", p, k)
		if h.Type != nil {
			switch *h.Type {
			case gatewayv1.HeaderMatchExact:
			case gatewayv1.HeaderMatchRegularExpression:
				errs.Add(hp+".type", "RegularExpression is not supported yet: use Exact")
			default:
				errs.Add(hp+".type", "must be Exact, not %s", quote(string(*h.Type)))
			}
		}
		name := string(h.Name)
		if msg := headerName(name); msg != "" {
			errs.Add(hp+".name", "%s", msg)
		} else if strings.EqualFold(name, "host") {
			errs.Add(hp+".name", "matching the Host is not supported yet")
		} else if j, dup := names[strings.ToLower(name)]; dup {
			errs.Add(hp+".name", "%s is also matched by headers[%d]: match a header once", quote(name), j)
		} else {
			names[strings.ToLower(name)] = k
		}
		if msg := matchValue(h.Value); msg != "" {
			errs.Add(hp+".value", "%s", msg)
		}
	}
	if len(m.QueryParams) > 0 {
		errs.Add(p+".queryParams", "is not supported yet: match on the path, method and headers")
	}
}

// methodList is the methods a match may name, for messages.
const methodList = "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE and PATCH"

func validMethod(m string) bool {
	switch gatewayv1.HTTPMethod(m) {
	case gatewayv1.HTTPMethodGet, gatewayv1.HTTPMethodHead, gatewayv1.HTTPMethodPost, gatewayv1.HTTPMethodPut,
		gatewayv1.HTTPMethodDelete, gatewayv1.HTTPMethodConnect, gatewayv1.HTTPMethodOptions,
		gatewayv1.HTTPMethodTrace, gatewayv1.HTTPMethodPatch:
		return true
	}
	return false
}

// pathChars is what an Exact or PathPrefix value may hold, as the Gateway
// API CRD says.
var pathChars = regexp.MustCompile(`^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$`)

// pathValue returns why v is not a valid Exact or PathPrefix value, or "".
func pathValue(v string) string {
	switch {
	case !strings.HasPrefix(v, "/"):
		return fmt.Sprintf("must be an absolute path, starting with \"/\", not %s", quote(v))
	case len(v) > maxPathLength:
		return fmt.Sprintf("is %d bytes long, at most %d are allowed", len(v), maxPathLength)
	case !pathChars.MatchString(v):
		return fmt.Sprintf("%s holds a character that is not allowed in a path: percent-encode it", quote(v))
	case strings.Contains(v, "//"):
		return fmt.Sprintf("%s must not contain \"//\"", quote(v))
	case strings.Contains(v, "/./"), strings.HasSuffix(v, "/."),
		strings.Contains(v, "/../"), strings.HasSuffix(v, "/.."):
		return fmt.Sprintf("%s must not contain \".\" or \"..\" segments", quote(v))
	case strings.Contains(strings.ToLower(v), "%2f"):
		return fmt.Sprintf("%s must not contain an encoded \"/\" (%%2F)", quote(v))
	}
	return ""
}

// headerName returns why n is not an HTTP header name, or "".
func headerName(n string) string {
	switch {
	case n == "":
		return "is required"
	case len(n) > maxHeaderName:
		return fmt.Sprintf("is %d bytes long, at most %d are allowed", len(n), maxHeaderName)
	}
	for i := 0; i < len(n); i++ {
		if !isTokenChar(n[i]) {
			return fmt.Sprintf("%s is not an HTTP header name: use letters, digits and !#$%%&'*+-.^_`|~", quote(n))
		}
	}
	return ""
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// matchValue returns why v is not a value a header match may compare with,
// or "": printable ASCII, single spaces or tabs between words, as the
// Gateway API CRD says.
func matchValue(v string) string {
	switch {
	case v == "":
		return "is required"
	case len(v) > maxHeaderValue:
		return fmt.Sprintf("is %d bytes long, at most %d are allowed", len(v), maxHeaderValue)
	case !headerMatchValue.MatchString(v):
		return fmt.Sprintf("%s must be printable ASCII, with single spaces or tabs between words", quote(v))
	}
	return ""
}

var headerMatchValue = regexp.MustCompile(`^[!-~]+(?:[\t ]?[!-~]+)*$`)

// fieldValue returns why v may not be set as a header's value, or "": no
// control characters but tab, as RFC 9110 says.
func fieldValue(v string) string {
	switch {
	case v == "":
		return "is required"
	case len(v) > maxHeaderValue:
		return fmt.Sprintf("is %d bytes long, at most %d are allowed", len(v), maxHeaderValue)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Sprintf("%s holds a control character", quote(v))
		}
	}
	if v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t' {
		return fmt.Sprintf("%s must not start or end with a space", quote(v))
	}
	return ""
}

// ReservedHeader returns why a route may not modify the request header
// called name, or "" if it may: Rampart's own headers (and their
// lookalikes with "_"), which the proxies set; hop-by-hop headers and
// Content-Length, which belong to each connection; and Host, which is not
// a header field in HTTP/2. internal/proxy/route refuses the same names.
func ReservedHeader(name string) string {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	switch {
	case strings.HasPrefix(n, "rampart-"):
		return "is Rampart's own: the proxies set it"
	case n == "host":
		return "is not supported: the Host is not a header field in HTTP/2"
	case n == "content-length":
		return "belongs to the message: the proxy sets it"
	case n == "forwarded" || strings.HasPrefix(n, "x-forwarded-") || n == "proxy-authorization" || n == "proxy-authenticate":
		return "is removed by the proxies on every hop: setting it would have no effect"
	}
	switch n {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade":
		return "is a hop-by-hop header: it belongs to each connection"
	}
	return ""
}

func validateFilters(errs *v1alpha1.FieldErrors, p string, filters []gatewayv1.HTTPRouteFilter) {
	if n := len(filters); n > maxFilters {
		errs.Add(p, "has %d entries, at most %d are allowed", n, maxFilters)
	}
	modifier := -1
	for i := range filters {
		f := &filters[i]
		fp := fmt.Sprintf("%s[%d]", p, i)
		switch f.Type {
		case "":
			errs.Add(fp+".type", "is required: RequestHeaderModifier is the filter Rampart supports")
			continue
		case supportedFilter:
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier, gatewayv1.HTTPRouteFilterRequestRedirect,
			gatewayv1.HTTPRouteFilterURLRewrite, gatewayv1.HTTPRouteFilterRequestMirror,
			gatewayv1.HTTPRouteFilterCORS, gatewayv1.HTTPRouteFilterExternalAuth, gatewayv1.HTTPRouteFilterExtensionRef:
			errs.Add(fp+".type", "%s is not supported yet: RequestHeaderModifier is the filter Rampart supports", f.Type)
			continue
		default:
			errs.Add(fp+".type", "unknown filter type %s: RequestHeaderModifier is the filter Rampart supports", quote(string(f.Type)))
			continue
		}
		if modifier >= 0 {
			errs.Add(fp, "repeats the RequestHeaderModifier of %s[%d]: put every change in one", p, modifier)
		} else {
			modifier = i
		}
		for _, other := range []struct {
			field string
			set   bool
		}{
			{"responseHeaderModifier", f.ResponseHeaderModifier != nil},
			{"requestMirror", f.RequestMirror != nil},
			{"requestRedirect", f.RequestRedirect != nil},
			{"urlRewrite", f.URLRewrite != nil},
			{"cors", f.CORS != nil},
			{"externalAuth", f.ExternalAuth != nil},
			{"extensionRef", f.ExtensionRef != nil},
		} {
			if other.set {
				errs.Add(fp+"."+other.field, "must not be set when type is RequestHeaderModifier")
			}
		}
		if f.RequestHeaderModifier == nil {
			errs.Add(fp+".requestHeaderModifier", "is required when type is RequestHeaderModifier")
			continue
		}
		validateHeaderFilter(errs, fp+".requestHeaderModifier", f.RequestHeaderModifier)
	}
}

func validateHeaderFilter(errs *v1alpha1.FieldErrors, p string, hf *gatewayv1.HTTPHeaderFilter) {
	if len(hf.Set)+len(hf.Add)+len(hf.Remove) == 0 {
		errs.Add(p, "changes nothing: give set, add or remove")
	}
	used := make(map[string]string) // lower-case name -> the entry changing it
	// use checks the name of the entry at p+"."+entry, which is at field.
	use := func(entry, field, name string) {
		if msg := headerName(name); msg != "" {
			errs.Add(field, "%s", msg)
			return
		}
		if msg := ReservedHeader(name); msg != "" {
			errs.Add(field, "%s %s", quote(name), msg)
			return
		}
		key := strings.ToLower(name)
		if first, dup := used[key]; dup {
			errs.Add(field, "%s is also changed by %s: change a header once", quote(name), first)
			return
		}
		used[key] = entry
	}
	for _, list := range []struct {
		field   string
		headers []gatewayv1.HTTPHeader
	}{{"set", hf.Set}, {"add", hf.Add}} {
		if n := len(list.headers); n > maxHeaders {
			errs.Add(p+"."+list.field, "has %d entries, at most %d are allowed", n, maxHeaders)
		}
		for i, h := range list.headers {
			entry := fmt.Sprintf("%s[%d]", list.field, i)
			hp := p + "." + entry
			use(entry, hp+".name", string(h.Name))
			if msg := fieldValue(h.Value); msg != "" {
				errs.Add(hp+".value", "%s", msg)
			}
		}
	}
	if n := len(hf.Remove); n > maxHeaders {
		errs.Add(p+".remove", "has %d entries, at most %d are allowed", n, maxHeaders)
	}
	for i, name := range hf.Remove {
		entry := fmt.Sprintf("remove[%d]", i)
		use(entry, p+"."+entry, name)
	}
}

func validateBackends(errs *v1alpha1.FieldErrors, p string, refs []gatewayv1.HTTPBackendRef, ns string) {
	switch n := len(refs); {
	case n == 0:
		errs.Add(p, "is required: at least one backend; a rule without one would answer 500 to every request it matches")
		return
	case n > maxBackendRefs:
		errs.Add(p, "has %d entries, at most %d are allowed", n, maxBackendRefs)
	}
	for i := range refs {
		b := &refs[i]
		bp := fmt.Sprintf("%s[%d]", p, i)
		if b.Group != nil && !coreGroup(*b.Group) {
			errs.Add(bp+".group", "must be \"\" (the core group of Service), not %s: Rampart sends requests to Services only", quote(string(*b.Group)))
		}
		if b.Kind != nil && *b.Kind != serviceKind {
			errs.Add(bp+".kind", "must be Service, not %s: Rampart sends requests to Services only", quote(string(*b.Kind)))
		}
		if b.Namespace != nil && string(*b.Namespace) != ns {
			errs.Add(bp+".namespace", "must be the route's own namespace %q, not %s: backends in other namespaces are not supported yet", ns, quote(string(*b.Namespace)))
		}
		if b.Name == "" {
			errs.Add(bp+".name", "is required: the name of the Service")
		} else if msg := label(string(b.Name)); msg != "" {
			errs.Add(bp+".name", "%s", msg)
		}
		switch {
		case b.Port == nil:
			errs.Add(bp+".port", "is required: the port of the Service the requests go to")
		case *b.Port < 1 || *b.Port > 65535:
			errs.Add(bp+".port", "must be between 1 and 65535")
		}
		if b.Weight != nil && (*b.Weight < 0 || *b.Weight > MaxWeight) {
			errs.Add(bp+".weight", "must be between 0 and %d", MaxWeight)
		}
		validateFilters(errs, bp+".filters", b.Filters)
	}
}

func validateTimeouts(errs *v1alpha1.FieldErrors, p string, t *gatewayv1.HTTPRouteTimeouts) {
	if t == nil {
		return
	}
	var request, backend time.Duration
	var err error
	if t.Request != nil {
		if request, err = ParseDuration(*t.Request); err != nil {
			errs.Add(p+".request", "%v", err)
		}
	}
	if t.BackendRequest != nil {
		if backend, err = ParseDuration(*t.BackendRequest); err != nil {
			errs.Add(p+".backendRequest", "%v", err)
		}
	}
	if request > 0 && backend > request {
		errs.Add(p+".backendRequest", "%s is longer than the request timeout %s, which it is part of", *t.BackendRequest, *t.Request)
	}
}

// IdleTimeoutAnnotation is the annotation of an HTTPRoute that sets the
// idle timeout of the requests its rules route, overriding that of the
// service (its TrafficPolicy's idleTimeout, else the default). Gateway API
// has no field for it; Linkerd reads timeout.linkerd.io/idle likewise.
const IdleTimeoutAnnotation = "rampart.dev/idle-timeout"

// annotationPrefix is the prefix of the annotations Rampart reads: any
// other annotation under it is a mistake (a typo would otherwise be
// ignored without a word).
const annotationPrefix = "rampart.dev/"

// Bounds of the idle timeout annotation, those of a TrafficPolicy's
// idleTimeout.
const (
	MinIdleTimeout = v1alpha1.MinIdleTimeout
	MaxIdleTimeout = v1alpha1.MaxIdleTimeout
)

// IdleTimeout returns the idle timeout the route's IdleTimeoutAnnotation
// sets, or 0 when it has none: its requests then get the service's. The
// value is a Go duration ("30s", "1m30s", "2h") from 1s to 24h.
func IdleTimeout(r *gatewayv1.HTTPRoute) (time.Duration, error) {
	v, ok := r.Annotations[IdleTimeoutAnnotation]
	if !ok {
		return 0, nil
	}
	return parseIdleTimeout(v)
}

func parseIdleTimeout(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %s: want a duration from 1s to 24h, such as 30s, 5m or 1h30m", quote(v))
	}
	if d < MinIdleTimeout || d > MaxIdleTimeout {
		return 0, fmt.Errorf("%s is not within 1s..24h", quote(v))
	}
	return d, nil
}

func validateAnnotations(errs *v1alpha1.FieldErrors, annotations map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		if !strings.HasPrefix(k, annotationPrefix) {
			continue // another tool's
		}
		p := "metadata.annotations[" + k + "]"
		if k != IdleTimeoutAnnotation {
			errs.Add(p, "unknown annotation %s: the one Rampart reads on an HTTPRoute is %s (request timeouts go in rules[].timeouts): fix the name or remove it", quote(k), IdleTimeoutAnnotation)
			continue
		}
		if _, err := parseIdleTimeout(annotations[k]); err != nil {
			errs.Add(p, "%v", err)
		}
	}
}

var durationRE = regexp.MustCompile(`^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$`)

// ParseDuration parses a Gateway API duration (GEP-2257): one to four
// numbers of up to five digits, each followed by h, m, s or ms, such as
// "10s", "1m30s" or "500ms". "0s" is zero, which means no timeout.
func ParseDuration(d gatewayv1.Duration) (time.Duration, error) {
	if !durationRE.MatchString(string(d)) {
		return 0, fmt.Errorf("invalid duration %s: want numbers of up to 5 digits with units h, m, s or ms, such as 10s, 1m30s or 500ms", quote(string(d)))
	}
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %s: %w", quote(string(d)), err)
	}
	return v, nil
}

// Compare orders routes by Gateway API's precedence for ties between
// equally specific matches: the oldest (by creation time) first, then by
// "namespace/name". In local mode routes have no creation time unless a
// file sets metadata.creationTimestamp, so the names decide; a route
// without one comes after every route with one.
func Compare(a, b *gatewayv1.HTTPRoute) int {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	switch {
	case ta.IsZero() && !tb.IsZero():
		return 1
	case !ta.IsZero() && tb.IsZero():
		return -1
	}
	if c := ta.Compare(tb); c != 0 {
		return c
	}
	return cmp.Or(strings.Compare(namespaceOf(a), namespaceOf(b)), strings.Compare(a.Name, b.Name))
}

func namespaceOf(r *gatewayv1.HTTPRoute) string {
	if r.Namespace == "" {
		return v1alpha1.DefaultNamespace
	}
	return r.Namespace
}

// Attachment is how a route attaches to one Service.
type Attachment struct {
	// Index is that of the route's first parentRef naming the service.
	Index int
	// Ports are the service ports the route applies to, in the order of
	// its parentRefs; nil means every port.
	Ports []int32
}

// Parents returns the services a valid route attaches to, by name (they
// are all in the route's namespace).
func Parents(r *gatewayv1.HTTPRoute) map[string]*Attachment {
	out := make(map[string]*Attachment)
	for i := range r.Spec.ParentRefs {
		ref := &r.Spec.ParentRefs[i]
		name := string(ref.Name)
		a, ok := out[name]
		if !ok {
			a = &Attachment{Index: i}
			out[name] = a
		}
		if ref.Port == nil {
			a.Ports = nil
			continue
		}
		if ok && a.Ports == nil {
			continue // already every port
		}
		a.Ports = append(a.Ports, *ref.Port)
	}
	return out
}

// label returns why s is not a DNS-1123 label (a Rampart service name), or "".
func label(s string) string {
	if len(s) > 63 || !labelRE.MatchString(s) {
		return fmt.Sprintf("invalid name %s: use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit", quote(s))
	}
	return ""
}

var (
	labelRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	sectionRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// sectionName returns why s is not a Gateway API SectionName, or "".
func sectionName(s string) string {
	if len(s) > maxSectionName || !sectionRE.MatchString(s) {
		return fmt.Sprintf("invalid name %s: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", quote(s))
	}
	return ""
}

// maxQuoted is how much of a value an error message quotes.
const maxQuoted = 64

func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}
