package compile

import (
	"bufio"
	"bytes"
	"maps"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/ratelimit"
)

const docsPath = "../../../docs/authorization.md"

// docBlock is a fenced code block of the docs with the marker comment right
// above it, if any.
type docBlock struct {
	line   int
	lang   string
	marker string // "rejected", "explain" or ""
	arg    string
	body   string
}

var markerRE = regexp.MustCompile(`^<!-- (rejected|explain): (.+) -->$`)

func docBlocks(t *testing.T) []docBlock {
	t.Helper()
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	var (
		blocks []docBlock
		cur    *docBlock
		body   strings.Builder
		prev   string
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && line == "```":
			cur.body = body.String()
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(line + "\n")
		case strings.HasPrefix(line, "```"):
			cur = &docBlock{line: n, lang: strings.TrimPrefix(line, "```")}
			if m := markerRE.FindStringSubmatch(prev); m != nil {
				cur.marker, cur.arg = m[1], m[2]
			}
			body.Reset()
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: code block not closed", docsPath, cur.line)
	}
	return blocks
}

// splitDocs splits a YAML stream at its "---" lines.
func splitDocs(s string) []string {
	var docs []string
	var cur strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if strings.TrimSpace(l) == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(l)
	}
	return append(docs, cur.String())
}

// TestDocs keeps docs/authorization.md true: every YAML example decodes
// strictly, validates and compiles for the workloads it selects; every
// example marked rejected fails with the message shown; every explain
// block is what Explain prints for that request.
func TestDocs(t *testing.T) {
	var res Resources
	var explains []docBlock
	yamlBlocks := 0
	for _, b := range docBlocks(t) {
		switch {
		case b.marker == "explain":
			explains = append(explains, b)
		case b.lang != "yaml":
		case b.marker == "rejected":
			yamlBlocks++
			_, err := Decode([]byte(b.body))
			if err == nil || !strings.Contains(err.Error(), b.arg) {
				t.Errorf("%s:%d: rejected example: error %v, want one containing %q", docsPath, b.line, err, b.arg)
			}
		default:
			yamlBlocks++
			for _, doc := range splitDocs(b.body) {
				obj, err := Decode([]byte(doc))
				if err != nil {
					t.Errorf("%s:%d: %v", docsPath, b.line, err)
					continue
				}
				if err := res.Add(obj); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if yamlBlocks < 10 || len(explains) == 0 {
		t.Fatalf("found %d YAML examples and %d explain blocks; is the parser broken?", yamlBlocks, len(explains))
	}

	// Every example compiles for each workload it could select.
	for _, w := range workloadsOf(&res) {
		wp, err := ForWorkload(&res, w, Options{})
		if err != nil {
			t.Errorf("ForWorkload(%v): %v", w, err)
			continue
		}
		if _, err := authz.Compile(wp); err != nil {
			t.Errorf("Compile for %v: %v", w, err)
		}
		if _, err := ratelimit.New(wp.RateLimits, ratelimit.Options{}); err != nil {
			t.Errorf("ratelimit.New for %v: %v", w, err)
		}
	}

	for _, b := range explains {
		args := map[string]string{}
		for f := range strings.FieldsSeq(b.arg) {
			k, v, _ := strings.Cut(f, "=")
			args[k] = v
		}
		labels := map[string]string{}
		if l := args["labels"]; l != "" {
			for kv := range strings.SplitSeq(l, ",") {
				k, v, _ := strings.Cut(kv, "=")
				labels[k] = v
			}
		}
		e, err := Engine(&res, Workload{Namespace: args["namespace"], Labels: labels}, Options{})
		if err != nil {
			t.Fatalf("%s:%d: %v", docsPath, b.line, err)
		}
		port, _ := strconv.Atoi(args["port"])
		r := &authz.Request{
			Source: args["from"], Authenticated: args["from"] != "",
			SourceIP: netip.MustParseAddr("10.0.0.7"), Port: uint16(port),
			Protocol: authz.ProtocolHTTP, Method: args["method"], Path: args["path"], Host: "orders.shop",
			Time: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC),
		}
		if got := e.Explain(r).String(); got != b.body {
			t.Errorf("%s:%d: explain block differs; Explain prints:\n%s", docsPath, b.line, got)
		}
	}
}

// workloadsOf returns a workload for each namespace and selector of the
// resources.
func workloadsOf(res *Resources) []Workload {
	seen := map[string]Workload{}
	add := func(ns string, sel *v1alpha1.WorkloadSelector) {
		w := Workload{Namespace: ns}
		if sel != nil {
			w.Labels = sel.MatchLabels
		}
		if ns == v1alpha1.RootNamespace {
			w.Namespace = "elsewhere"
		}
		keys := slices.Sorted(maps.Keys(w.Labels))
		k := w.Namespace
		for _, l := range keys {
			k += "," + l + "=" + w.Labels[l]
		}
		seen[k] = w
	}
	for _, p := range res.AuthorizationPolicies {
		add(p.Namespace, p.Spec.Selector)
	}
	for _, p := range res.MeshTLSPolicies {
		add(p.Namespace, p.Spec.Selector)
	}
	for _, p := range res.RateLimitPolicies {
		add(p.Namespace, p.Spec.Selector)
	}
	for _, p := range res.NamespacePolicies {
		add(p.Namespace, nil)
	}
	return slices.Collect(maps.Values(seen))
}
