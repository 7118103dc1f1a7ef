package localconfig

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const docsPath = "../../docs/local-config.md"

// docBlock is a fenced code block of the docs, with the marker comment
// right above it, if any.
type docBlock struct {
	line   int    // of the opening fence
	lang   string // after the fence: yaml, text...
	marker string // "testdata" or "load-error"
	arg    string // the marker's argument, a path under testdata
	body   string
}

var markerRE = regexp.MustCompile(`^<!-- (testdata|load-error): (\S+) -->$`)

func docBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		blocks       []docBlock
		cur          *docBlock
		marker, arg  string
		body         strings.Builder
		prevNonBlank string
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
			if m := markerRE.FindStringSubmatch(prevNonBlank); m != nil {
				marker, arg = m[1], m[2]
				cur.marker, cur.arg = marker, arg
			}
			body.Reset()
		}
		if strings.TrimSpace(line) != "" {
			prevNonBlank = line
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s:%d: code block not closed", path, cur.line)
	}
	return blocks
}

// TestDocs keeps docs/local-config.md true: every YAML block in it must be
// a file of testdata (marked <!-- testdata: path -->), and every error
// output shown (marked <!-- load-error: dir -->) what loading that
// testdata directory says. The worked example must be the whole of
// testdata/load/example, which TestLoad loads.
func TestDocs(t *testing.T) {
	blocks := docBlocks(t, docsPath)
	shown, loadErrors := checkMarkedBlocks(t, docsPath)
	for _, b := range blocks {
		if b.lang == "yaml" && b.marker != "testdata" {
			t.Errorf("%s:%d: YAML block without a <!-- testdata: path --> marker right above it", docsPath, b.line)
		}
	}

	example, err := filepath.Glob(filepath.Join("testdata", "load", "example", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(example) == 0 {
		t.Fatal("no files in testdata/load/example")
	}
	for _, path := range example {
		rel := filepath.ToSlash(strings.TrimPrefix(path, "testdata"+string(filepath.Separator)))
		if !shown[rel] {
			t.Errorf("the docs' worked example does not show testdata/%s", rel)
		}
	}
	if loadErrors == 0 {
		t.Errorf("the docs show no error output")
	}
	if !slices.ContainsFunc(blocks, func(b docBlock) bool { return b.lang == "yaml" }) {
		t.Errorf("the docs show no YAML")
	}
}

const trafficDocsPath = "../../docs/traffic.md"

// TestTrafficDocs keeps the routing section of docs/traffic.md true: its
// YAML blocks marked <!-- testdata: path --> are those files, its error
// output marked <!-- load-error: dir --> is what loading that directory
// says, and its worked example is the whole of testdata/load/routing,
// which TestLoad loads. Blocks without a marker are other sections' and
// are not checked here.
func TestTrafficDocs(t *testing.T) {
	shown, loadErrors := checkMarkedBlocks(t, trafficDocsPath)
	example, err := filepath.Glob(filepath.Join("testdata", "load", "routing", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(example) == 0 {
		t.Fatal("no files in testdata/load/routing")
	}
	for _, path := range example {
		rel := filepath.ToSlash(strings.TrimPrefix(path, "testdata"+string(filepath.Separator)))
		if !shown[rel] {
			t.Errorf("the routing example of %s does not show testdata/%s", trafficDocsPath, rel)
		}
	}
	if loadErrors == 0 {
		t.Errorf("%s shows no error output", trafficDocsPath)
	}
}

// checkMarkedBlocks checks the blocks of the document at path that carry
// a marker: a YAML block marked <!-- testdata: file --> must be that file,
// and output marked <!-- load-error: dir --> what loading that directory
// says. It returns the testdata files shown and how many load errors.
func checkMarkedBlocks(t *testing.T, path string) (shown map[string]bool, loadErrors int) {
	t.Helper()
	shown = map[string]bool{}
	for _, b := range docBlocks(t, path) {
		where := path + ":" + itoa(b.line)
		switch b.marker {
		case "testdata":
			want, err := os.ReadFile(filepath.Join("testdata", filepath.FromSlash(b.arg)))
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if diff := cmp.Diff(string(want), b.body); diff != "" {
				t.Errorf("%s: block differs from testdata/%s (-testdata +docs):\n%s", where, b.arg, diff)
			}
			shown[b.arg] = true
		case "load-error":
			loadErrors++
			_, err := Load(filepath.Join("testdata", filepath.FromSlash(b.arg)))
			if err == nil {
				t.Errorf("%s: loading testdata/%s succeeded, the docs show an error", where, b.arg)
				continue
			}
			if diff := cmp.Diff(err.Error()+"\n", b.body); diff != "" {
				t.Errorf("%s: error differs from loading testdata/%s (-Load +docs):\n%s", where, b.arg, diff)
			}
		}
	}
	return shown, loadErrors
}
