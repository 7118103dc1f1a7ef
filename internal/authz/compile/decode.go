package compile

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// MaxDocumentSize bounds the documents Decode reads.
const MaxDocumentSize = 1 << 20

// Object is a policy resource: *v1alpha1.AuthorizationPolicy,
// *v1alpha1.MeshTLSPolicy, *v1alpha1.NamespacePolicy or
// *v1alpha1.RateLimitPolicy.
type Object interface {
	GetName() string
	GetNamespace() string
	Default()
	Validate() error
}

var (
	_ Object = (*v1alpha1.AuthorizationPolicy)(nil)
	_ Object = (*v1alpha1.MeshTLSPolicy)(nil)
	_ Object = (*v1alpha1.NamespacePolicy)(nil)
	_ Object = (*v1alpha1.RateLimitPolicy)(nil)
)

// kinds maps each policy kind to a function returning a new, empty one.
var kinds = map[string]func() Object{
	v1alpha1.KindAuthorizationPolicy: func() Object { return new(v1alpha1.AuthorizationPolicy) },
	v1alpha1.KindMeshTLSPolicy:       func() Object { return new(v1alpha1.MeshTLSPolicy) },
	v1alpha1.KindNamespacePolicy:     func() Object { return new(v1alpha1.NamespacePolicy) },
	v1alpha1.KindRateLimitPolicy:     func() Object { return new(v1alpha1.RateLimitPolicy) },
}

// Decode decodes one policy document, YAML or JSON, strictly: the
// document must be one mapping with a supported apiVersion and kind; a
// field that the kind does not have (field names are case-sensitive), a
// duplicate key, a value of the wrong type or a second document is an
// error. The resource is then defaulted and validated; an invalid one is
// returned with the error (v1alpha1.FieldErrors), so that callers can say
// which resource it is.
func Decode(data []byte) (Object, error) {
	if len(data) > MaxDocumentSize {
		return nil, fmt.Errorf("compile: document of %d bytes is larger than %d", len(data), MaxDocumentSize)
	}
	tree, err := parseYAML(data)
	if err != nil {
		return nil, err
	}
	m, ok := tree.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("compile: a policy document must be a mapping with apiVersion, kind, metadata and spec")
	}
	if v, _ := m["apiVersion"].(string); v != v1alpha1.GroupVersion {
		return nil, fmt.Errorf("compile: apiVersion: must be %q", v1alpha1.GroupVersion)
	}
	kind, _ := m["kind"].(string)
	newObj, ok := kinds[kind]
	if !ok {
		names := make([]string, 0, len(kinds))
		for k := range kinds {
			names = append(names, k)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("compile: kind: %q is not a policy kind: use one of %s", kind, strings.Join(names, ", "))
	}
	obj := newObj()
	if err := checkFields(m, reflect.TypeOf(obj).Elem(), ""); err != nil {
		return nil, fmt.Errorf("compile: %s: %w", kind, err)
	}
	js, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("compile: %s: %w", kind, err)
	}
	obj.Default()
	if err := obj.Validate(); err != nil {
		return obj, err
	}
	return obj, nil
}

// parseYAML parses exactly one YAML (or JSON) document into maps, slices
// and scalars.
func parseYAML(data []byte) (v any, err error) {
	defer func() {
		// The parser reads untrusted input: should it panic, fail closed.
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("compile: YAML parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("compile: empty document")
		}
		return nil, fmt.Errorf("compile: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("compile: more than one document: decode one policy at a time")
	}
	return v, nil
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// checkFields checks that every key of the maps in v names a field of t,
// exactly (encoding/json would match keys case-insensitively, so that
// "Action" and "action" in one document would both set the action).
func checkFields(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return nil // metav1.Time, metav1.Duration: their own format
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type error, which encoding/json reports
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				return fmt.Errorf("%s: unknown field %q", fieldPath(path, k), k)
			}
			if err := checkFields(m[k], ft, fieldPath(path, k)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, e := range s {
			if err := checkFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		for k, e := range m {
			if err := checkFields(e, t.Elem(), fmt.Sprintf("%s[%s]", path, k)); err != nil {
				return err
			}
		}
	}
	return nil
}

func fieldPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// jsonFields returns the JSON names of t's fields, with embedded structs
// without a name inlined, as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
