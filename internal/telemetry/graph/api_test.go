package graph

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestDocumentedJSON checks the /api/v1/stat example of
// docs/observability.md against StatResponse: every field it shows exists,
// and every field StatResponse has is shown.
func TestDocumentedJSON(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "`/api/v1/stat` answers:\n\n```json\n")
	if !ok {
		t.Fatal("docs/observability.md has no /api/v1/stat example")
	}
	example, _, _ := strings.Cut(after, "```")
	dec := json.NewDecoder(strings.NewReader(example))
	dec.DisallowUnknownFields()
	var resp StatResponse
	if err := dec.Decode(&resp); err != nil {
		t.Fatalf("the documented example does not decode as StatResponse: %v", err)
	}
	var shown, back any
	if err := json.Unmarshal([]byte(example), &shown); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(resp); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shown, back) {
		t.Errorf("the documented example lacks fields of StatResponse:\nshown %v\nfull  %v", shown, back)
	}
}
