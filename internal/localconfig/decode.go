package localconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/rampart-mesh/rampart/api/httproute"
	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// maxSyntaxErrors is how many YAML syntax errors loadFile reports in a file
// before it gives up on the rest.
const maxSyntaxErrors = 20

// loadFile loads every document of the current file. A YAML syntax error
// ends the document it is in; loading resumes at the next "---" line, so
// that one typo does not hide the problems of the documents after it (up to
// maxSyntaxErrors).
func (l *loader) loadFile(data []byte) {
	if bytes.IndexByte(data, '\r') >= 0 {
		// YAML also ends lines with CR alone. Make every line end with LF,
		// so that the lines counted here are those yaml.v3 counts.
		data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
		data = bytes.ReplaceAll(data, []byte("\r"), []byte("\n"))
	}
	starts := lineStarts(data)
	first := 0 // index of the first line of the part being parsed
	for syntaxErrors := 1; ; syntaxErrors++ {
		part := data[starts[first]:]
		docs, err := parseStream(part)
		for _, doc := range docs {
			shiftLines(doc, first)
			l.loadDocument(doc)
		}
		if err == nil {
			return
		}
		reported, msg := splitYAMLError(err)
		if reported > 0 {
			reported += first
		}
		line := syntaxErrorLine(data, starts, first, reported, msg)
		l.problem(line, "invalid YAML: %s", msg)

		// Resume at the first document start at or after the error that
		// is past the start of this part.
		next := -1
		for i := max(line-1, first+1); i < len(starts)-1; i++ {
			if isDocumentStart(data[starts[i]:starts[i+1]]) {
				next = i
				break
			}
		}
		if next < 0 {
			return
		}
		if syntaxErrors == maxSyntaxErrors {
			l.problem(next+1, "too many YAML syntax errors: the rest of the file is not checked")
			return
		}
		first = next
	}
}

// parseStream parses every document of data into a yaml.Node, stopping at
// the first syntax error.
func parseStream(data []byte) (docs []*yaml.Node, err error) {
	defer func() {
		// The parser handles untrusted input: should it have a bug, report
		// the file as broken instead of crashing the controller.
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		doc := new(yaml.Node)
		err := dec.Decode(doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		docs = append(docs, doc)
	}
}

// lineStarts returns the offset in data of the start of each line, and
// len(data) last, so that line i (0-based) is data[s[i]:s[i+1]].
func lineStarts(data []byte) []int {
	starts := []int{0}
	for i, b := range data {
		if b == '\n' && i+1 < len(data) {
			starts = append(starts, i+1)
		}
	}
	return append(starts, len(data))
}

// isDocumentStart reports whether line is a "---" document marker.
func isDocumentStart(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("---"))
	return ok && (len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\r' || rest[0] == '\n')
}

// shiftLines moves every node of the tree at n down by offset lines.
func shiftLines(n *yaml.Node, offset int) {
	if offset == 0 {
		return
	}
	n.Line += offset
	for _, c := range n.Content {
		shiftLines(c, offset)
	}
}

var yamlErrorPrefix = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// splitYAMLError splits a yaml.v3 syntax error, "yaml: line 3: did not find
// expected key", into its line (0 if none) and message.
func splitYAMLError(err error) (line int, msg string) {
	s := err.Error()
	m := yamlErrorPrefix.FindStringSubmatch(s)
	if m == nil {
		return 0, s
	}
	line, _ = strconv.Atoi(m[1])
	return line, s[len(m[0]):]
}

// maxRefineBytes bounds the parsing syntaxErrorLine does for one error.
const maxRefineBytes = 8 << 20

// syntaxErrorLine returns the line of the syntax error, with message msg,
// that parsing data from line first+1 on gave; starts is lineStarts(data).
// The line yaml.v3 reports is where the construct holding the error starts
// (and, for parser errors, one less), which can be far above it: the error
// is on the first line L such that the lines up to L alone give the same
// error. The line reported is a lower bound, and the error is in the
// document holding it, so only that document is parsed again, up to lines
// further and further down, then bisecting.
func syntaxErrorLine(data []byte, starts []int, first, reported int, msg string) int {
	lines := len(starts) - 1
	lo := max(reported, first+1)
	if lo > lines {
		return lines
	}
	from := first // index of the first line of the document holding the error
	for i := lo - 1; i > first; i-- {
		if isDocumentStart(data[starts[i]:starts[i+1]]) {
			from = i
			break
		}
	}
	budget := maxRefineBytes
	same := func(upTo int) bool {
		part := data[starts[from]:starts[upTo]]
		budget -= len(part)
		_, err := parseStream(part)
		if err == nil {
			return false
		}
		_, m := splitYAMLError(err)
		return m == msg
	}
	// Find a prefix that gives the error, doubling the step each time.
	last, k := lo-1, lo // lines up to last do not give the error
	for step := 1; !same(k); step *= 2 {
		if k == lines || budget < 0 {
			return lo // should not happen: all of data gives the error
		}
		last, k = k, min(k+step, lines)
	}
	// Bisect: lines up to last do not give the error, up to k do.
	for last+1 < k && budget >= 0 {
		mid := last + (k-last)/2
		if same(mid) {
			k = mid
		} else {
			last = mid
		}
	}
	return k
}

// object is what Service and Workload have in common.
type object interface {
	GetName() string
	GetNamespace() string
	Default()
	Validate() error
}

// loadDocument checks one document and, if it is good, adds its resource.
func (l *loader) loadDocument(doc *yaml.Node) {
	if len(doc.Content) == 0 {
		return
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return // an empty document, such as a trailing "---"
	}
	if root.Kind != yaml.MappingNode {
		l.problem(root.Line, "a document must be a mapping with apiVersion, kind, metadata and spec, not %s", nodeKind(root))
		return
	}
	before := len(l.problems)

	c := newConverter(root)
	m, _ := c.convert(root).(map[string]any)
	for _, p := range c.problems {
		l.problem(p.line, "%s", p.msg)
	}
	if c.exhausted || m == nil {
		return
	}

	ls := newLines(root)
	kind, ok := l.checkType(ls, m)
	if !ok {
		return
	}
	obj := kinds[kind].new()
	// After a problem in the YAML itself, such as a duplicate key, the
	// document may not say what its author meant: report the fields that
	// do not fit the schema, but not what validating would make of it.
	if !l.decode(ls, m, obj, len(c.problems) == 0) {
		return
	}

	if obj.GetName() != "" {
		id := fmt.Sprintf("%s %s/%s", kind, obj.GetNamespace(), obj.GetName())
		if first, dup := l.defined[id]; dup {
			l.problem(root.Line, "%s is also defined at %v", shorten(id), first)
		} else {
			l.defined[id] = position{file: l.file, line: root.Line}
		}
	}
	if svc, ok := obj.(*v1alpha1.Service); ok {
		// Two services at one address would leave a transparent proxy
		// guessing which one a connection is for.
		for _, a := range svc.Spec.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				continue // reported by validation
			}
			key := "address " + ip.Unmap().String()
			if first, dup := l.defined[key]; dup {
				l.problem(root.Line, "service address %s is also used by the Service defined at %v", a, first)
			} else {
				l.defined[key] = position{file: l.file, line: root.Line}
			}
		}
	}
	if len(l.problems) > before {
		return
	}
	switch o := obj.(type) {
	case *httpRoute:
		l.res.HTTPRoutes = append(l.res.HTTPRoutes, o.HTTPRoute)
		l.routeRefs = append(l.routeRefs, routeRefsOf(&o.HTTPRoute, l.file, ls)...)
	case *v1alpha1.Service:
		l.res.Services = append(l.res.Services, *o)
	case *v1alpha1.Workload:
		l.res.Workloads = append(l.res.Workloads, *o)
	case *v1alpha1.AuthorizationPolicy:
		l.res.AuthorizationPolicies = append(l.res.AuthorizationPolicies, *o)
	case *v1alpha1.MeshTLSPolicy:
		l.res.MeshTLSPolicies = append(l.res.MeshTLSPolicies, *o)
	case *v1alpha1.NamespacePolicy:
		l.res.NamespacePolicies = append(l.res.NamespacePolicies, *o)
	case *v1alpha1.RateLimitPolicy:
		l.res.RateLimitPolicies = append(l.res.RateLimitPolicies, *o)
	case *v1alpha1.WorkloadAttestationPolicy:
		l.res.WorkloadAttestationPolicies = append(l.res.WorkloadAttestationPolicies, *o)
	case *v1alpha1.EgressPolicy:
		l.res.EgressPolicies = append(l.res.EgressPolicies, *o)
	case *v1alpha1.TrafficPolicy:
		l.res.TrafficPolicies = append(l.res.TrafficPolicies, *o)
		l.trafficRefs = append(l.trafficRefs, trafficRefsOf(o, l.file, ls)...)
	case *v1alpha1.DetectionPolicy:
		l.res.DetectionPolicies = append(l.res.DetectionPolicies, *o)
	}
}

// kindInfo is what loading needs to know of a kind.
type kindInfo struct {
	// apiVersion is the one apiVersion documents of the kind have.
	apiVersion string
	// new returns a new, empty resource of the kind.
	new func() object
}

// kinds maps each supported kind to its apiVersion and constructor.
var kinds = map[string]kindInfo{
	v1alpha1.KindService:                   {v1alpha1.GroupVersion, func() object { return new(v1alpha1.Service) }},
	v1alpha1.KindWorkload:                  {v1alpha1.GroupVersion, func() object { return new(v1alpha1.Workload) }},
	v1alpha1.KindAuthorizationPolicy:       {v1alpha1.GroupVersion, func() object { return new(v1alpha1.AuthorizationPolicy) }},
	v1alpha1.KindMeshTLSPolicy:             {v1alpha1.GroupVersion, func() object { return new(v1alpha1.MeshTLSPolicy) }},
	v1alpha1.KindNamespacePolicy:           {v1alpha1.GroupVersion, func() object { return new(v1alpha1.NamespacePolicy) }},
	v1alpha1.KindRateLimitPolicy:           {v1alpha1.GroupVersion, func() object { return new(v1alpha1.RateLimitPolicy) }},
	v1alpha1.KindWorkloadAttestationPolicy: {v1alpha1.GroupVersion, func() object { return new(v1alpha1.WorkloadAttestationPolicy) }},
	v1alpha1.KindEgressPolicy:              {v1alpha1.GroupVersion, func() object { return new(v1alpha1.EgressPolicy) }},
	v1alpha1.KindTrafficPolicy:             {v1alpha1.GroupVersion, func() object { return new(v1alpha1.TrafficPolicy) }},
	v1alpha1.KindDetectionPolicy:           {v1alpha1.GroupVersion, func() object { return new(v1alpha1.DetectionPolicy) }},
	httproute.Kind:                         {httproute.APIVersion, func() object { return new(httpRoute) }},
}

// httpRoute is a Gateway API HTTPRoute as an object: its defaults and
// validation are those of api/httproute. The embedded route has no JSON
// name, so that the document's fields are its fields.
type httpRoute struct {
	gatewayv1.HTTPRoute
}

func (r *httpRoute) Default()        { httproute.Default(&r.HTTPRoute) }
func (r *httpRoute) Validate() error { return httproute.Validate(&r.HTTPRoute) }

// otherAPIVersions is how a message about an unknown kind's apiVersion
// names the apiVersions of the kinds not in rampart.dev/v1alpha1.
var otherAPIVersions = func() string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(kinds)) {
		if k := kinds[name]; k.apiVersion != v1alpha1.GroupVersion {
			out = append(out, fmt.Sprintf(", or %q for %s", k.apiVersion, name))
		}
	}
	return strings.Join(out, "")
}()

// supportedKinds lists the kinds for messages: "A, B, C and D".
var supportedKinds = func() string {
	names := slices.Sorted(maps.Keys(kinds))
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}()

// checkType checks the document's apiVersion and kind and returns the kind.
// The apiVersion must be that of the kind; when the kind is unknown or
// missing, any apiVersion of a supported kind passes (the kind is the
// mistake reported).
func (l *loader) checkType(ls *lines, m map[string]any) (kind string, ok bool) {
	ok = true
	name, _ := m["kind"].(string)
	info, known := kinds[name]
	want := fmt.Sprintf("%q", info.apiVersion)
	if !known {
		want = fmt.Sprintf("%q%s", v1alpha1.GroupVersion, otherAPIVersions)
	}
	switch v, set := m["apiVersion"]; {
	case !set || v == nil:
		l.problem(ls.root.Line, "apiVersion: is required: set it to %s", want)
		ok = false
	case known && v != info.apiVersion, !known && !knownAPIVersion(v):
		l.problem(ls.of("apiVersion"), "apiVersion: %s is not supported: use %s", quoted(v), want)
		ok = false
	}
	supported := "supported kinds are " + supportedKinds
	switch v, set := m["kind"]; {
	case !set || v == nil:
		l.problem(ls.root.Line, "kind: is required: %s", supported)
		ok = false
	case !known:
		l.problem(ls.of("kind"), "kind: %s is not supported: %s", quoted(v), supported)
		ok = false
	default:
		kind = name
	}
	return kind, ok
}

// knownAPIVersion reports whether v is the apiVersion of a supported kind.
func knownAPIVersion(v any) bool {
	for _, k := range kinds {
		if v == k.apiVersion {
			return true
		}
	}
	return false
}

// decode decodes m, the document whose lines ls finds, into obj, defaults
// it and, if validate, validates it. It reports whether obj holds the
// document.
func (l *loader) decode(ls *lines, m map[string]any, obj object, validate bool) bool {
	var found []fieldProblem
	checkSchema(m, reflect.TypeOf(obj).Elem(), "", &found)
	bad := make(map[string]bool, len(found))
	// holders are the objects that hold a bad field: what validation says
	// of them (that they are empty, say) follows from the field being
	// dropped, and is not reported.
	holders := make(map[string]bool, len(found))
	for _, p := range found {
		l.problem(ls.of(p.path), "%s: %s", shorten(p.path), p.msg)
		bad[p.path] = true
		if i := strings.LastIndexByte(p.path, '.'); i > 0 {
			holders[p.path[:i]] = true
		}
	}

	data, err := json.Marshal(m)
	if err != nil {
		// convert produces only values that JSON can hold.
		l.problem(ls.root.Line, "cannot convert the document to JSON: %v", err)
		return false
	}
	if len(found) == 0 {
		// checkSchema found nothing, so this should not fail. If it does,
		// report what encoding/json says.
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			l.jsonProblem(ls, err)
			return false
		}
	} else {
		// Decode what can be, to report the problems of the other fields.
		_ = json.Unmarshal(data, obj)
	}

	obj.Default()
	if !validate {
		return true
	}
	err = obj.Validate()
	var fes v1alpha1.FieldErrors
	if err != nil && !errors.As(err, &fes) {
		l.problem(ls.root.Line, "%v", err)
	}
	for _, fe := range fes {
		if under(fe.Path, bad) || holders[fe.Path] {
			continue // already reported as the wrong type or an unknown field
		}
		l.problem(ls.of(fe.Path), "%s: %s", shorten(fe.Path), fe.Msg)
	}
	return true
}

// under reports whether path is, or is inside, one of the fields in bad.
func under(path string, bad map[string]bool) bool {
	if bad[path] {
		return true
	}
	inKey := false // map keys, in brackets, may hold dots
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case inKey:
			inKey = c != ']'
		case c == '.' || c == '[':
			if bad[path[:i]] {
				return true
			}
			inKey = c == '['
		}
	}
	return false
}

var unknownField = regexp.MustCompile(`^json: unknown field "(.*)"$`)

// jsonProblem reports an error of encoding/json at the line of the field.
func (l *loader) jsonProblem(ls *lines, err error) {
	var te *json.UnmarshalTypeError
	switch m := unknownField.FindStringSubmatch(err.Error()); {
	case m != nil:
		l.problem(findKey(ls.root, m[1], ls.root.Line), "unknown field %s", quote(m[1]))
	case errors.As(err, &te) && te.Field != "":
		l.problem(ls.of(te.Field), "%s: cannot use a JSON %s as %v", te.Field, te.Value, te.Type)
	default:
		l.problem(ls.root.Line, "%v", err)
	}
}

// nodeKind describes a node for error messages.
func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		return "the scalar " + quote(n.Value)
	}
	return "an empty document"
}

// quoted is a value from convert for error messages: a string in quotes.
func quoted(v any) string {
	if s, ok := v.(string); ok {
		return quote(s)
	}
	return describe(v)
}
