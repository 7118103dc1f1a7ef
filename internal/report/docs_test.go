package report

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsExample decodes the JSON example of docs/insights.md strictly
// into Report, so that it names no field the report does not have, and
// checks its figures agree with each other and its periods are accepted.
func TestDocsExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "insights.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## The compliance report\n")
	if !ok {
		t.Fatal(`docs/insights.md has no "## The compliance report" section`)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	_, block, ok := strings.Cut(section, "```json\n")
	if !ok {
		t.Fatal("the section has no JSON example")
	}
	block, _, _ = strings.Cut(block, "```")
	dec := json.NewDecoder(bytes.NewReader([]byte(block)))
	dec.DisallowUnknownFields()
	var r Report
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("the JSON example does not decode as a report: %v", err)
	}
	if r.Version != Version {
		t.Errorf("the example's version is %d, want %d", r.Version, Version)
	}
	if s := r.Summary; s.MTLSShare == nil || *s.MTLSShare != float64(s.MTLSRequests)/float64(s.Requests) {
		t.Errorf("the example's mTLS share %v does not follow from %d of %d requests", s.MTLSShare, s.MTLSRequests, s.Requests)
	}
	if got := len(r.Summary.Findings); got == 0 {
		t.Error("the example shows no finding")
	}
	for _, p := range []string{"1h", "7d", "24h", "36h"} {
		if !strings.Contains(section, "`"+p+"`") {
			continue
		}
		if _, err := ParsePeriod(p); err != nil {
			t.Errorf("the section gives period %s, which is refused: %v", p, err)
		}
	}
}
