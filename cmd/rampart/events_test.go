package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/insights/eventlog"
)

func TestPrintEvents(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 3, 4, 0, time.UTC)
	until := at.Add(15 * time.Minute)
	var b bytes.Buffer
	printEvents(&b, controller.EventsResponse{Events: []insights.Event{
		{
			ID: "00000000000000a3", Time: at, Detection: insights.RouteScan, Severity: insights.SeverityHigh,
			Source:      insights.Party{SPIFFEID: "spiffe://rampart.local/ns/shop/sa/web", Namespace: "shop", Workload: "web"},
			Destination: &insights.Party{SPIFFEID: "spiffe://rampart.local/ns/shop/sa/api", Namespace: "shop", Workload: "api"},
			Summary:     "shop/web requested 31 distinct paths of shop/api in 30s, 94% refused",
			Action:      insights.ActionQuarantine, QuarantinedUntil: &until,
		},
		{
			ID: "00000000000000a2", Time: at.Add(-time.Minute), Detection: insights.UnknownCA, Severity: insights.SeverityMedium,
			Source:      insights.Party{SPIFFEID: "spiffe://evil.example/ns/shop/sa/api", IP: "10.0.0.9", Claimed: true},
			Destination: &insights.Party{Namespace: "shop", Workload: "api"},
			Summary:     "3 handshakes from 10.0.0.9\nwith a certificate of no trusted root",
			Action:      insights.ActionAlert,
		},
		{
			ID: "00000000000000a1", Time: at.Add(-2 * time.Minute), Detection: insights.Plaintext, Severity: insights.SeverityLow,
			Source: insights.Party{IP: "10.0.0.7"}, Summary: "plaintext refused on port 8080", Action: insights.ActionAlert,
		},
	}})
	golden(t, "events.golden", b.String())

	b.Reset()
	printEvents(&b, controller.EventsResponse{Events: []insights.Event{}})
	if got := b.String(); got != "No security events in the period.\n" {
		t.Errorf("no events printed %q", got)
	}
}

func TestEventsQuery(t *testing.T) {
	tests := []struct {
		since, detection, output string
		limit                    int
		want                     string // the encoded query, or the error
	}{
		{"1h", "", "table", 100, "limit=100&since=1h"},
		{"24h", "route_scan", "json", 1000, "detection=route_scan&limit=1000&since=24h"},
		{"169h", "", "table", 100, "--since"},
		{"0s", "", "table", 100, "--since"},
		{"1h", "port_scan", "table", 100, "--detection"},
		{"1h", "", "yaml", 100, "-o"},
		{"1h", "", "table", 0, "--limit"},
	}
	for _, tt := range tests {
		q, err := eventsQuery(tt.since, tt.detection, tt.output, tt.limit)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = q.Encode()
		}
		if !strings.Contains(got, tt.want) || (err == nil) != !strings.HasPrefix(tt.want, "-") {
			t.Errorf("eventsQuery(%q, %q, %q, %d) = %q, want %q", tt.since, tt.detection, tt.output, tt.limit, got, tt.want)
		}
	}
}

// TestEventsDocs keeps the worked example of docs/insights.md true: its
// table is rampart events' golden output, and its JSON event decodes as
// an insights.Event, every field known.
func TestEventsDocs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "insights.md"))
	if err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile(filepath.Join("testdata", "events.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, append([]byte("```text\n"), table...)) {
		t.Error("docs/insights.md does not show testdata/events.golden as rampart events' output")
	}
	_, rest, ok := bytes.Cut(doc, []byte("## Events and responses"))
	if !ok {
		t.Fatal("docs/insights.md has no section Events and responses")
	}
	_, block, ok := bytes.Cut(rest, []byte("```json\n"))
	block, _, ok2 := bytes.Cut(block, []byte("```"))
	if !ok || !ok2 {
		t.Fatal("the Events and responses section shows no JSON event")
	}
	dec := json.NewDecoder(bytes.NewReader(block))
	dec.DisallowUnknownFields()
	var e insights.Event
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("the JSON event of docs/insights.md: %v", err)
	}
	if err := eventlog.Validate(e); err != nil {
		t.Errorf("the JSON event of docs/insights.md is not a valid event: %v", err)
	}
}
