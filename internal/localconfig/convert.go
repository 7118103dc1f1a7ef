package localconfig

import (
	"fmt"
	"math"

	"go.yaml.in/yaml/v3"
)

// Expansion limits. Anchors and aliases let a small document stand for a
// huge one ("billion laughs"); convert refuses to expand a document past
// these many values or bytes of scalars beyond the ones written in it.
const (
	aliasNodeAllowance = 100_000
	aliasByteAllowance = 1 << 20
	aliasFactor        = 10
)

// lineMsg is a problem at a line.
type lineMsg struct {
	line int
	msg  string
}

// converter turns a yaml.Node tree into the values encoding/json handles:
// map[string]any, []any, string, int, uint64, float64, bool and nil. It
// expands aliases and merge keys ("<<"), within a budget.
type converter struct {
	nodes, bytes int                 // budget left
	expanding    map[*yaml.Node]bool // anchored nodes being converted, to catch cycles
	problems     []lineMsg
	exhausted    bool
}

func newConverter(root *yaml.Node) *converter {
	nodes, bytes := size(root)
	return &converter{
		nodes:     aliasNodeAllowance + aliasFactor*nodes,
		bytes:     aliasByteAllowance + aliasFactor*bytes,
		expanding: make(map[*yaml.Node]bool),
	}
}

// size counts the nodes of a tree and the bytes of its scalars, without
// following aliases.
func size(n *yaml.Node) (nodes, bytes int) {
	nodes, bytes = 1, len(n.Value)
	for _, c := range n.Content {
		cn, cb := size(c)
		nodes += cn
		bytes += cb
	}
	return nodes, bytes
}

func (c *converter) problem(line int, format string, args ...any) {
	c.problems = append(c.problems, lineMsg{line: line, msg: fmt.Sprintf(format, args...)})
}

// convert returns the value of n, nil after a problem with it.
func (c *converter) convert(n *yaml.Node) any {
	if c.exhausted {
		return nil
	}
	c.nodes--
	c.bytes -= len(n.Value)
	if c.nodes < 0 || c.bytes < 0 {
		c.exhausted = true
		c.problem(n.Line, "document contains excessive aliasing: its aliases expand it to more than %d times its size", aliasFactor)
		return nil
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return c.convert(n.Content[0])
	case yaml.AliasNode:
		if n.Alias == nil {
			c.problem(n.Line, "unknown anchor %s", quote(n.Value))
			return nil
		}
		if c.expanding[n.Alias] {
			c.problem(n.Line, "alias *%s refers to a value that contains it", n.Value)
			return nil
		}
		return c.convert(n.Alias)
	case yaml.ScalarNode:
		return c.scalar(n)
	}
	// An alias inside the value of its own anchor would expand forever.
	if n.Anchor != "" {
		c.expanding[n] = true
		defer delete(c.expanding, n)
	}
	switch n.Kind {
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, e := range n.Content {
			out = append(out, c.convert(e))
		}
		return out
	case yaml.MappingNode:
		return c.mapping(n)
	}
	return nil
}

func (c *converter) scalar(n *yaml.Node) any {
	switch tag := n.ShortTag(); tag {
	case "!!null":
		return nil
	case "!!bool", "!!int", "!!float":
		var v any
		if err := n.Decode(&v); err != nil {
			c.problem(n.Line, "invalid %s value %s", tag[2:], quote(n.Value))
			return nil
		}
		if f, ok := v.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
			c.problem(n.Line, "%s is not a finite number", n.Value)
			return nil
		}
		return v
	default:
		// Strings; timestamps, which stay text as in Kubernetes; base64
		// !!binary text; and values with application tags.
		return n.Value
	}
}

func (c *converter) mapping(n *yaml.Node) map[string]any {
	out := make(map[string]any, len(n.Content)/2)
	lines := make(map[string]int, len(n.Content)/2)
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kk := deref(k)
		if kk.Kind != yaml.ScalarNode {
			c.problem(k.Line, "mapping keys must be strings, not %s", nodeKind(kk))
			continue
		}
		if kk.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if first, dup := lines[kk.Value]; dup {
			c.problem(k.Line, "duplicate key %s: it is already set at line %d", quote(kk.Value), first)
			continue
		}
		lines[kk.Value] = k.Line
		out[kk.Value] = c.convert(v)
	}
	// Keys written in the mapping win over merged ones, and earlier merged
	// mappings over later ones.
	for _, m := range merges {
		switch v := c.convert(m).(type) {
		case map[string]any:
			mergeInto(out, v)
		case []any:
			bad := false
			for _, e := range v {
				if em, ok := e.(map[string]any); ok {
					mergeInto(out, em)
				} else {
					bad = true
				}
			}
			if bad && !c.exhausted {
				c.problem(m.Line, "a merge key (<<) takes a mapping or a list of mappings")
			}
		default:
			if !c.exhausted {
				c.problem(m.Line, "a merge key (<<) takes a mapping or a list of mappings")
			}
		}
	}
	return out
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if _, set := dst[k]; !set {
			dst[k] = v
		}
	}
}

// deref follows aliases, a bounded number of times.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}
