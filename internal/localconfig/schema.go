package localconfig

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// fieldProblem is a problem with the field at a JSON-style path.
type fieldProblem struct {
	path string
	msg  string
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// checkSchema checks that v, a value from convert at path, fits the Go type
// t as encoding/json would decode it, and appends every field that does not
// to out: unknown fields (matched case-sensitively, as Kubernetes does,
// where encoding/json would accept any case) and values of the wrong type.
// Unlike encoding/json, it finds all of them, and gives each its path.
func checkSchema(v any, t reflect.Type, path string, out *[]fieldProblem) {
	if v == nil {
		return // null leaves the field at its zero value
	}
	report := func(format string, args ...any) {
		*out = append(*out, fieldProblem{path: path, msg: fmt.Sprintf(format, args...)})
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// The type parses itself (a timestamp, say): let it try.
		data, err := json.Marshal(v)
		if err == nil {
			err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(data)
		}
		if err != nil {
			report("%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		checkSchema(v, t.Elem(), path, out)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			report("must be a mapping, got %s", describe(v))
			return
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(m) {
			p := joinField(path, k)
			ft, known := fields[k]
			if !known {
				*out = append(*out, fieldProblem{path: p, msg: unknownFieldMsg(k, fields)})
				continue
			}
			checkSchema(m[k], ft, p, out)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			report("must be a mapping, got %s", describe(v))
			return
		}
		if t.Key().Kind() != reflect.String {
			return
		}
		for _, k := range sortedKeys(m) {
			checkSchema(m[k], t.Elem(), path+"["+k+"]", out)
		}
	case reflect.Slice, reflect.Array:
		s, ok := v.([]any)
		if !ok {
			report("must be a list, got %s", describe(v))
			return
		}
		for i, e := range s {
			checkSchema(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", out)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			hint := ""
			if _, isMap := v.(map[string]any); !isMap {
				if _, isList := v.([]any); !isList {
					hint = ": quote it to make it a string"
				}
			}
			report("must be a string, got %s%s", describe(v), hint)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			report("must be true or false, got %s", describe(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := integer(v)
		if !ok {
			report("must be an integer, got %s", describe(v))
			return
		}
		bits := t.Bits()
		lo, hi := -1<<(bits-1), 1<<(bits-1)-1
		if n.neg && n.abs > uint64(-(lo+1))+1 || !n.neg && n.abs > uint64(hi) {
			report("must be an integer between %d and %d, got %s", lo, hi, describe(v))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := integer(v)
		if !ok {
			report("must be an integer, got %s", describe(v))
			return
		}
		if hi := uint64(1)<<(t.Bits()-1)<<1 - 1; n.neg && n.abs != 0 || n.abs > hi {
			report("must be an integer between 0 and %d, got %s", hi, describe(v))
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := number(v); !ok {
			report("must be a number, got %s", describe(v))
		}
	}
}

// bigint is an integer as a sign and magnitude, to compare any int, uint64
// or integral float64 with the range of a Go integer type.
type bigint struct {
	neg bool
	abs uint64
}

func integer(v any) (bigint, bool) {
	switch n := v.(type) {
	case int:
		if n < 0 {
			return bigint{neg: true, abs: uint64(-(n + 1)) + 1}, true
		}
		return bigint{abs: uint64(n)}, true
	case uint64:
		return bigint{abs: n}, true
	case float64:
		// encoding/json accepts 80.0 for an integer only if it is written
		// 80; convert writes an integral float that way.
		if n != math.Trunc(n) || math.Abs(n) >= 1<<64 {
			return bigint{}, false
		}
		if n < 0 {
			return bigint{neg: true, abs: uint64(-n)}, true
		}
		return bigint{abs: uint64(n)}, true
	}
	return bigint{}, false
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// maxQuoted is how much of a value an error message quotes.
const maxQuoted = 64

// quote quotes s for an error message, cut short if long.
func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}

// maxPath is how much of a field's path an error message shows.
const maxPath = 200

// shorten cuts a field's path short for an error message, if long (a
// hostile label key, say).
func shorten(path string) string {
	if len(path) > maxPath {
		return path[:maxPath] + "..."
	}
	return path
}

// describe describes a value from convert for error messages.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "the string " + quote(v)
	case bool:
		return fmt.Sprintf("the boolean %t", v)
	case int, uint64, float64:
		return fmt.Sprintf("the number %v", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

// jsonFields returns the fields encoding/json decodes into a struct of
// type t, by JSON name, including those of embedded structs without a
// name of their own (metav1.TypeMeta's `json:",inline"`).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type)
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous && name == "" {
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					add(ft)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := fields[name]; !dup {
				fields[name] = f.Type
			}
		}
	}
	add(t)
	return fields
}

// maxListedFields is how many fields an unknown-field message lists.
const maxListedFields = 6

// unknownFieldMsg says that key is not one of fields, and what it might be.
func unknownFieldMsg(key string, fields map[string]reflect.Type) string {
	names := sortedKeys(fields)
	best, bestDist := "", 3 // suggest names at most 2 edits away
	for _, name := range names {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf("unknown field: did you mean %q? (field names are case-sensitive)", name)
		}
		if len(key) > 2*len(name) {
			continue // too far, and keeps editDistance cheap
		}
		if d := editDistance(strings.ToLower(key), strings.ToLower(name)); d < bestDist {
			best, bestDist = name, d
		}
	}
	switch {
	case best != "":
		return fmt.Sprintf("unknown field: did you mean %q?", best)
	case len(names) <= maxListedFields:
		return "unknown field: the fields here are " + strings.Join(names, ", ")
	}
	return "unknown field"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// joinField appends a struct field to a path.
func joinField(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
