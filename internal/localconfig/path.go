package localconfig

import (
	"strconv"

	"go.yaml.in/yaml/v3"
)

// maxMergeDepth bounds how deep lookup follows merge keys ("<<"), which can
// form cycles through aliases.
const maxMergeDepth = 10

// lineOf returns the line of the field at path, a JSON-style path such as
// "spec.ports[1].port" or "metadata.labels[app.kubernetes.io/name]", in the
// document whose root mapping is root. A field in a mapping is at the line
// of its key, an item of a list at its own line. If the field is missing,
// lineOf returns the line of its nearest parent that is there.
func lineOf(root *yaml.Node, path string) int {
	line, n := root.Line, root
	for _, seg := range splitPath(path) {
		l, child := lookup(n, seg, 0)
		if child == nil {
			break
		}
		line, n = l, child
	}
	return line
}

// lookup returns the line and node of seg in n: a key of a mapping (also
// merged in with "<<"), or an index of a list.
func lookup(n *yaml.Node, seg string, depth int) (int, *yaml.Node) {
	n = deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := deref(n.Content[i])
			if k.Kind != yaml.ScalarNode {
				continue
			}
			if k.ShortTag() == "!!merge" {
				merges = append(merges, n.Content[i+1])
				continue
			}
			if k.Value == seg {
				return n.Content[i].Line, n.Content[i+1]
			}
		}
		if depth >= maxMergeDepth {
			return 0, nil
		}
		for _, m := range merges {
			m = deref(m)
			sources := []*yaml.Node{m}
			if m.Kind == yaml.SequenceNode {
				sources = m.Content
			}
			for _, src := range sources {
				if l, child := lookup(src, seg, depth+1); child != nil {
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
