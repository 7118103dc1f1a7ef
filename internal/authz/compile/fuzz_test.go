package compile

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/ratelimit"
)

// FuzzDecodePolicy checks that Decode never panics, and that what it
// accepts is what the proxy accepts: a valid resource compiles, for a
// workload it selects, into an Engine and a Limiter. It also checks that a
// valid resource encodes to JSON and decodes back to itself.
func FuzzDecodePolicy(f *testing.F) {
	for _, b := range seedDocs() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, err := Decode(data)
		if err != nil {
			return
		}
		var res Resources
		if err := res.Add(obj); err != nil {
			t.Fatal(err)
		}
		for _, w := range workloadsOf(&res) {
			wp, err := ForWorkload(&res, w, Options{})
			if err != nil {
				t.Fatalf("valid resource does not compile: %v\n%s", err, data)
			}
			if _, err := authz.Compile(wp); err != nil {
				t.Fatalf("valid resource rejected by authz.Compile: %v\n%s", err, data)
			}
			if _, err := ratelimit.New(wp.RateLimits, ratelimit.Options{}); err != nil {
				t.Fatalf("valid resource rejected by ratelimit.New: %v\n%s", err, data)
			}
		}
		js, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(js)
		if err != nil {
			t.Fatalf("re-encoded resource does not decode: %v\n%s", err, js)
		}
		// Empty lists are dropped by omitempty: they mean what nil means.
		if diff := cmp.Diff(obj, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("resource changed through JSON (-first +second):\n%s", diff)
		}
	})
}

// seedDocs returns the docs' examples and a few more as seeds.
func seedDocs() [][]byte {
	var seeds [][]byte
	data, err := os.ReadFile(filepath.FromSlash(docsPath))
	if err == nil {
		// Every YAML block, each document of it.
		inBlock := false
		var cur []byte
		for _, line := range splitLines(data) {
			switch {
			case !inBlock && string(line) == "```yaml\n":
				inBlock, cur = true, nil
			case inBlock && string(line) == "```\n":
				inBlock = false
				for _, d := range splitDocs(string(cur)) {
					seeds = append(seeds, []byte(d))
				}
			case inBlock:
				cur = append(cur, line...)
			}
		}
	}
	seeds = append(seeds,
		[]byte(header+"kind: MeshTLSPolicy\nmetadata: {name: a}\nspec: {mode: STRICT}\n"),
		[]byte(`{"apiVersion":"rampart.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"a"},"spec":{"action":"DENY","rules":[{"to":[{"paths":["/a/{id}","/b/**"]}]}]}}`),
		[]byte(header+"kind: RateLimitPolicy\nmetadata: {name: a}\nspec: {limits: [{name: a, per: route, requestsPerSecond: 1, match: {to: [{paths: [/x]}]}}]}\n"),
	)
	return seeds
}

func splitLines(data []byte) [][]byte {
	var lines [][]byte
	for len(data) > 0 {
		i := 0
		for i < len(data) && data[i] != '\n' {
			i++
		}
		if i < len(data) {
			i++
		}
		lines = append(lines, data[:i])
		data = data[i:]
	}
	return lines
}
