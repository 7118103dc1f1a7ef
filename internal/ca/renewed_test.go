package ca

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestLeavesRenewedFrom: the record keeps which certificates a leaf was
// renewed from, and a record written before the field existed still reads.
func TestLeavesRenewedFrom(t *testing.T) {
	dir := t.TempDir()
	c := mustOpen(t, testConfig(dir, newClock(t0)))
	at := t0.Add(time.Hour).UTC()
	leaves := []Leaf{
		{Serial: "c2", SPIFFEID: workloadID.String(), NotAfter: at, RenewedFrom: []Renewal{{Serial: "c1", NotAfter: at}, {Serial: "c0", NotAfter: at}}},
		{Serial: "d1", SPIFFEID: workloadID.String(), NotAfter: at},
	}
	if err := c.PublishLeaves(leaves); err != nil {
		t.Fatal(err)
	}
	got, err := c.RecordedLeaves()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(leaves, got); diff != "" {
		t.Errorf("recorded leaves (-published +read):\n%s", diff)
	}
	if !got[0].DescendsFrom("c0") || !got[0].DescendsFrom("c1") || got[0].DescendsFrom("d1") || got[1].DescendsFrom("c0") {
		t.Errorf("DescendsFrom wrong for %+v", got)
	}

	old := `{"issuer":"1","written":"2026-05-01T12:00:00Z","leaves":[{"serial":"e1","spiffe_id":"` + workloadID.String() +
		`","not_after":"2026-05-01T13:00:00Z","issuer":"1","root":"2"}]}`
	if err := os.WriteFile(filepath.Join(dir, leavesFile), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = c.RecordedLeaves()
	if err != nil || len(got) != 1 || got[0].Serial != "e1" || got[0].RenewedFrom != nil {
		t.Fatalf("a record without renewed_from = %+v, %v", got, err)
	}
}
