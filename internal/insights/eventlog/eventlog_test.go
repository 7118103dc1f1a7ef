package eventlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/internal/insights"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func event(i int, d insights.Detection) insights.Event {
	return insights.Event{
		ID:        fmt.Sprintf("%016x", i+1),
		Time:      t0.Add(time.Duration(i) * time.Minute),
		Detection: d,
		Severity:  insights.SeverityHigh,
		Source:    insights.Party{SPIFFEID: "spiffe://rampart.local/ns/shop/sa/web", Namespace: "shop", Workload: "web"},
		Summary:   "test event",
		Action:    insights.ActionAlert,
	}
}

func ids(es []insights.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestAppendListReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := Open(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	dets := []insights.Detection{insights.NewEdge, insights.RouteScan}
	for i := range 4 {
		if err := l.Append(event(i, dets[i%2])); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"all, newest first", Query{}, []string{"0000000000000004", "0000000000000003", "0000000000000002", "0000000000000001"}},
		{"detection", Query{Detection: insights.RouteScan}, []string{"0000000000000004", "0000000000000002"}},
		{"since", Query{Since: t0.Add(2 * time.Minute)}, []string{"0000000000000004", "0000000000000003"}},
		{"limit", Query{Limit: 1}, []string{"0000000000000004"}},
		{"nothing", Query{Since: t0.Add(time.Hour)}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ids(l.List(tt.q))); diff != "" {
				t.Errorf("List (-want +got):\n%s", diff)
			}
		})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := l.Append(event(9, insights.NewEdge)); err == nil {
		t.Error("Append after Close succeeded")
	}

	l2, err := Open(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if diff := cmp.Diff(l.List(Query{}), l2.List(Query{})); diff != "" {
		t.Errorf("reopened log differs (-before +after):\n%s", diff)
	}
}

// TestBound: the log keeps the newest max events, in memory and, once
// rewritten, in the file.
func TestBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	const max = 16
	l, err := Open(path, max)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		if err := l.Append(event(i, insights.DenialBurst)); err != nil {
			t.Fatal(err)
		}
		if l.Len() > max {
			t.Fatalf("after %d appends the log holds %d events, more than %d", i+1, l.Len(), max)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if lines := bytes.Count(data, []byte("\n")); lines > max+max/8 {
			t.Fatalf("after %d appends the file holds %d lines, more than %d", i+1, lines, max+max/8)
		}
	}
	got := l.List(Query{})
	if len(got) != max || got[0].ID != fmt.Sprintf("%016x", n) || got[max-1].ID != fmt.Sprintf("%016x", n-max+1) {
		t.Errorf("List = %v, want the newest %d", ids(got), max)
	}
	l.Close()
	l2, err := Open(path, max)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if diff := cmp.Diff(ids(got), ids(l2.List(Query{}))); diff != "" {
		t.Errorf("reopened (-want +got):\n%s", diff)
	}
}

// TestLoadSkipsBadLines: lines that are not a valid event are skipped,
// counted and dropped from the file.
func TestLoadSkipsBadLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	good := func(i int) string {
		b, _ := json.Marshal(event(i, insights.Plaintext))
		return string(b)
	}
	bad := []string{
		`{"id":"xyz"`,
		`not json`,
		strings.Replace(good(7), `"plaintext_on_strict"`, `"made_up"`, 1),
		strings.Replace(good(8), `"high"`, `"extreme"`, 1),
		strings.Replace(good(9), `"summary"`, `"unknownField"`, 1),
		good(10) + good(11),
		`{"id":"` + strings.Repeat("a", MaxLine) + `"}`,
	}
	content := good(1) + "\n" + strings.Join(bad, "\n") + "\n\n" + good(2) + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Skipped() != len(bad) {
		t.Errorf("Skipped = %d, want %d", l.Skipped(), len(bad))
	}
	if diff := cmp.Diff([]string{"0000000000000003", "0000000000000002"}, ids(l.List(Query{}))); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("\n")); n != 2 {
		t.Errorf("file holds %d lines after load, want the 2 good ones", n)
	}
}

func TestOpenRefusesPublicFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if l, err := Open(path, 0); err == nil {
		l.Close()
		t.Fatal("Open accepted a file readable by others")
	}
}

func TestAppendRefusesInvalid(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "events.jsonl"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := event(1, insights.NewEdge)
	e.ID = "ABC"
	if err := l.Append(e); err == nil {
		t.Error("Append accepted an event with a bad id")
	}
	if l.Len() != 0 {
		t.Errorf("Len = %d after a refused Append", l.Len())
	}
}

// FuzzLoad: whatever the file holds, Open keeps only valid events, at
// most max, and what it keeps reads back the same.
func FuzzLoad(f *testing.F) {
	b, _ := json.Marshal(event(1, insights.RouteScan))
	f.Add(append(b, '\n'))
	f.Add([]byte("{}\n\n" + string(b)))
	f.Add([]byte(`{"id":"00000000000000ff","time":"2026-01-01T00:00:00Z","detection":"code_changed","severity":"low","source":{},"summary":"","evidence":{},"action":"Quarantine","quarantinedUntil":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		const max = 4
		l, err := Open(path, max)
		if err != nil {
			t.Fatal(err)
		}
		got := l.List(Query{})
		l.Close()
		if len(got) > max {
			t.Fatalf("%d events kept, more than %d", len(got), max)
		}
		for _, e := range got {
			if err := Validate(e); err != nil {
				t.Fatalf("invalid event kept: %v", err)
			}
		}
		l2, err := Open(path, max)
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Close()
		if l2.Skipped() != 0 {
			t.Errorf("reopening skipped %d lines of a file Open rewrote", l2.Skipped())
		}
		if diff := cmp.Diff(ids(got), ids(l2.List(Query{}))); diff != "" {
			t.Errorf("reopened (-first +second):\n%s", diff)
		}
	})
}
