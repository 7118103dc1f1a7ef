package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type doc struct {
	Version int      `json:"version"`
	Names   []string `json:"names"`
}

var errBadDoc = errors.New("doc: invalid")

var docFile = &JSONFile[doc]{
	Name:    "doc",
	What:    "doc list",
	MaxSize: 64,
	Invalid: errBadDoc,
	Empty:   func() *doc { return &doc{Version: 1} },
	Validate: func(d *doc) error {
		if d.Version != 1 {
			return errBadDoc
		}
		return nil
	},
	Fix: "fix or restore the file",
}

func TestJSONFileParse(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{`{"version":1,"names":["a"]}`, ""},
		{`names: a`, "not a doc list"},
		{`{"version":1,"extra":1}`, "not a doc list"},
		{`{"version":1} {}`, "data after the doc list"},
		{`{"version":1,"names":["` + strings.Repeat("a", 64) + `"]}`, "more than the 64 allowed"},
		{`{"version":2}`, "doc: invalid"},
	} {
		_, err := docFile.Parse([]byte(tc.data))
		if tc.want == "" && err != nil || tc.want != "" && (!errors.Is(err, errBadDoc) || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Parse(%s) = %v, want %q", tc.data, err, tc.want)
		}
	}
}

func TestJSONFileUpdate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "doc.json")
	if d, err := docFile.Load(path); err != nil || d.Version != 1 || d.Names != nil {
		t.Fatalf("Load of a missing file = %+v, %v; want the empty document", d, err)
	}
	add := func(d *doc) error { d.Names = append(d.Names, "a"); return nil }
	if _, err := docFile.Update(path, add); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat %s: %v, %v; want mode 0600", path, fi, err)
	}
	// A change that fails or leaves the document invalid writes nothing.
	refuse := errors.New("refused")
	if _, err := docFile.Update(path, func(*doc) error { return refuse }); err != refuse {
		t.Errorf("Update with a failing change = %v, want its error as it is", err)
	}
	if _, err := docFile.Update(path, func(d *doc) error { d.Version = 2; return nil }); !errors.Is(err, errBadDoc) {
		t.Errorf("Update to an invalid document = %v, want %v", err, errBadDoc)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "{\n  \"version\": 1,\n  \"names\": [\n    \"a\"\n  ]\n}\n" {
		t.Errorf("file holds %q, %v", b, err)
	}
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := docFile.Load(path); err == nil || !strings.HasPrefix(err.Error(), "doc: "+path+": ") || !strings.HasSuffix(err.Error(), "; fix or restore the file") {
		t.Errorf("Load of an invalid file = %v, want an error naming it and saying what to do", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := docFile.Load(path); err == nil || !strings.Contains(err.Error(), "accessible by group or others") {
		t.Errorf("Load of a file others can read = %v, want a refusal", err)
	}
}
