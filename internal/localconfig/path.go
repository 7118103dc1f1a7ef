package localconfig

import (
	"strconv"

	"go.yaml.in/yaml/v3"
)

// maxMergeDepth bounds how deep lookup follows merge keys ("<<"), which can
// form cycles through aliases.
const maxMergeDepth = 10

// lines finds the lines of fields in a document.
type lines struct {
	root *yaml.Node // the document's root mapping
	// keys indexes the keys of the mappings searched so far, so that
	// finding many fields of a big mapping does not take quadratic time.
	keys map[*yaml.Node]map[string]int
}

func newLines(root *yaml.Node) *lines {
	return &lines{root: root, keys: make(map[*yaml.Node]map[string]int)}
}

// lineOf returns the line of the field at path in the document whose root
// mapping is root. See lines.of.
func lineOf(root *yaml.Node, path string) int {
	return newLines(root).of(path)
}

// of returns the line of the field at path, a JSON-style path such as
// "spec.ports[1].port" or "metadata.labels[app.kubernetes.io/name]". A
// field in a mapping is at the line of its key, an item of a list at its
// own line. If the field is missing, of returns the line of its nearest
// parent that is there.
func (ls *lines) of(path string) int {
	line, n := ls.root.Line, ls.root
	for _, seg := range splitPath(path) {
		l, child := ls.lookup(n, seg, 0)
		if child == nil {
			break
		}
		line, n = l, child
	}
	return line
}

// lookup returns the line and node of seg in n: a key of a mapping (also
// merged in with "<<"), or an index of a list.
func (ls *lines) lookup(n *yaml.Node, seg string, depth int) (int, *yaml.Node) {
	n = deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		if i, ok := ls.index(n)[seg]; ok {
			return n.Content[i].Line, n.Content[i+1]
		}
		if depth >= maxMergeDepth {
			return 0, nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := deref(n.Content[i]); k.Kind != yaml.ScalarNode || k.ShortTag() != "!!merge" {
				continue
			}
			m := deref(n.Content[i+1])
			sources := []*yaml.Node{m}
			if m.Kind == yaml.SequenceNode {
				sources = m.Content
			}
			for _, src := range sources {
				if l, child := ls.lookup(src, seg, depth+1); child != nil {
					return l, child
				}
			}
		}
	case yaml.SequenceNode:
		if i, err := strconv.Atoi(seg); err == nil && i >= 0 && i < len(n.Content) {
			return n.Content[i].Line, n.Content[i]
		}
	}
	return 0, nil
}

// index returns where each key of mapping n is in its Content: the first
// place, as convert keeps the first of duplicate keys.
func (ls *lines) index(n *yaml.Node) map[string]int {
	if idx, ok := ls.keys[n]; ok {
		return idx
	}
	idx := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			continue
		}
		if _, dup := idx[k.Value]; !dup {
			idx[k.Value] = i
		}
	}
	ls.keys[n] = idx
	return idx
}

// splitPath splits "spec.ports[1].port" into "spec", "ports", "1", "port".
// A bracketed segment (an index or a map key, which may hold dots) runs to
// the "]" that ends the path or is followed by "." or "[".
func splitPath(path string) []string {
	var segs []string
	for i := 0; i < len(path); {
		switch path[i] {
		case '.':
			i++
		case '[':
			end := -1
			for k := i + 1; k < len(path); k++ {
				if path[k] == ']' && (k+1 == len(path) || path[k+1] == '.' || path[k+1] == '[') {
					end = k
					break
				}
			}
			if end < 0 {
				return append(segs, path[i+1:])
			}
			segs = append(segs, path[i+1:end])
			i = end + 1
		default:
			j := i
			for j < len(path) && path[j] != '.' && path[j] != '[' {
				j++
			}
			segs = append(segs, path[i:j])
			i = j
		}
	}
	return segs
}

// findKey returns the line of the first mapping key called name in the
// tree at n, in document order, or def if there is none.
func findKey(n *yaml.Node, name string, def int) int {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == name {
				return k.Line
			}
			if l := findKey(n.Content[i+1], name, 0); l != 0 {
				return l
			}
		}
		return def
	}
	for _, c := range n.Content {
		if l := findKey(c, name, 0); l != 0 {
			return l
		}
	}
	return def
}
