package quarantine

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	payments = "spiffe://rampart.local/ns/shop/sa/payments"
	web      = "spiffe://rampart.local/ns/shop/sa/web"
)

func entry(id string, since time.Time, d time.Duration) Entry {
	return Entry{SPIFFEID: id, Since: since, Until: since.Add(d), Reason: "scanning", By: ByOperator}
}

func TestEntryValidate(t *testing.T) {
	tests := []struct {
		name string
		e    Entry
		want string // substring of the error; empty: valid
	}{
		{"operator", entry(payments, t0, time.Hour), ""},
		{"detection", Entry{SPIFFEID: payments, Since: t0, Until: t0.Add(time.Minute), By: ByDetection}, ""},
		{"event id", Entry{SPIFFEID: payments, Since: t0, Until: t0.Add(time.Minute), By: "0123456789abcdef"}, ""},
		{"seven days", entry(payments, t0, MaxDuration), ""},
		{"controller", entry("spiffe://rampart.local/ns/rampart-system/sa/rampart-controller", t0, time.Hour), "controller's own identity"},
		{"not spiffe", entry("https://x", t0, time.Hour), "spiffe_id"},
		{"not canonical", entry("spiffe://Rampart.local/ns/shop/sa/web", t0, time.Hour), "spiffe_id"},
		{"not a workload", entry("spiffe://rampart.local/web", t0, time.Hour), "not a workload identity"},
		{"too long", entry(payments, t0, MaxDuration+time.Second), "more than the"},
		{"ends before", entry(payments, t0, 0), "not after since"},
		{"no since", Entry{SPIFFEID: payments, Until: t0, By: ByOperator}, "since is missing"},
		{"bad by", Entry{SPIFFEID: payments, Since: t0, Until: t0.Add(time.Minute), By: "someone"}, "by"},
		{"upper-case event id", Entry{SPIFFEID: payments, Since: t0, Until: t0.Add(time.Minute), By: "0123456789ABCDEF"}, "by"},
		{"control character", Entry{SPIFFEID: payments, Since: t0, Until: t0.Add(time.Minute), By: ByOperator, Reason: "a\nb"}, "control character"},
		{"long reason", Entry{SPIFFEID: payments, Since: t0, Until: t0.Add(time.Minute), By: ByOperator, Reason: strings.Repeat("x", MaxReasonLen+1)}, "reason is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.e.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want an ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	good := `{"version":1,"identities":[{"spiffe_id":"` + payments + `","since":"2026-03-01T12:00:00Z","until":"2026-03-01T13:00:00Z","by":"operator"}]}`
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("Parse(good) = %v", err)
	}
	for name, data := range map[string]string{
		"unknown field": strings.Replace(good, `"by"`, `"who":"x","by"`, 1),
		"two values":    good + good,
		"version":       strings.Replace(good, `"version":1`, `"version":2`, 1),
		"duplicate":     strings.Replace(good, `]}`, `,{"spiffe_id":"`+payments+`","since":"2026-03-01T12:00:00Z","until":"2026-03-01T13:00:00Z","by":"operator"}]}`, 1),
		"too large":     strings.Repeat(" ", MaxFileSize+1),
	} {
		if _, err := Parse([]byte(data)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Parse() = %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"identities":[{"spiffe_id":"` + payments + `","since":"2026-03-01T12:00:00Z","until":"2026-03-01T13:00:00Z","by":"operator"}]}`))
	f.Add([]byte(`{"version":1,"identities":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(data)
		if err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("Parse accepted a list Validate refuses: %v", err)
		}
		if len(l.Proto().GetIdentities()) != len(l.Identities) {
			t.Fatal("Proto lost entries")
		}
	})
}

func TestUpdateAddReplacePruneRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "quarantine.json")
	if _, err := Update(path, t0, func(l *List) error {
		if err := l.Add(entry(payments, t0, time.Hour)); err != nil {
			return err
		}
		return l.Add(entry(web, t0, time.Minute))
	}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", st.Mode().Perm())
	}

	// Adding again replaces: the new end and reason apply.
	later := entry(payments, t0.Add(time.Second), 2*time.Hour)
	later.Reason, later.By = "again", "0123456789abcdef"
	l, err := Update(path, t0.Add(time.Second), func(l *List) error { return l.Add(later) })
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Identities) != 2 || l.Identities[0] != later {
		t.Fatalf("after a second add: %+v, want %+v first of two", l.Identities, later)
	}

	// Reading ignores what expired; the next write drops it.
	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if a := loaded.Active(t0.Add(time.Minute)); len(a.Identities) != 1 || a.Identities[0].SPIFFEID != payments {
		t.Fatalf("Active after web expired: %+v", a.Identities)
	}
	if got := loaded.NextExpiry(); !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("NextExpiry() = %s, want %s", got, t0.Add(time.Minute))
	}
	l, err = Update(path, t0.Add(time.Minute), func(*List) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Identities) != 1 {
		t.Fatalf("expired entry not pruned on write: %+v", l.Identities)
	}

	if _, err := Update(path, t0.Add(2*time.Minute), func(l *List) error {
		_, err := l.Release(web)
		return err
	}); !errors.Is(err, ErrNotQuarantined) {
		t.Errorf("releasing an expired identity: %v, want ErrNotQuarantined", err)
	}
	l, err = Update(path, t0.Add(2*time.Minute), func(l *List) error {
		e, err := l.Release(payments)
		if err == nil && e.Reason != "again" {
			t.Errorf("Release returned %+v", e)
		}
		return err
	})
	if err != nil || len(l.Identities) != 0 {
		t.Fatalf("release: %v, %+v", err, l)
	}
	if l, err := Load(path); err != nil || len(l.Identities) != 0 {
		t.Fatalf("Load after release: %v, %+v", err, l)
	}
}

func TestUpdateRefusesAndKeepsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quarantine.json")
	if _, err := Update(path, t0, func(l *List) error { return l.Add(entry(payments, t0, time.Hour)) }); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	_, err := Update(path, t0, func(l *List) error {
		return l.Add(entry("spiffe://rampart.local/ns/rampart-system/sa/rampart-controller", t0, time.Hour))
	})
	if err == nil || !strings.Contains(err.Error(), "controller's own identity") {
		t.Fatalf("quarantining the controller: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("a refused change rewrote the file")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("Load of a file readable by others = %v, want a chmod hint", err)
	}
}

func TestAddBounded(t *testing.T) {
	l := &List{Version: FormatVersion}
	for i := range MaxEntries {
		id := "spiffe://rampart.local/ns/shop/sa/w" + strconv.Itoa(i)
		if err := l.Add(entry(id, t0, time.Hour)); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	if err := l.Add(entry(payments, t0, time.Hour)); !errors.Is(err, ErrFull) {
		t.Fatalf("entry %d: %v, want ErrFull", MaxEntries+1, err)
	}
	// Replacing an entry of a full list works.
	if err := l.Add(entry(l.Identities[0].SPIFFEID, t0, 2*time.Hour)); err != nil {
		t.Fatalf("replacing in a full list: %v", err)
	}
}

// TestConcurrentUpdates: editors under the lock never lose each other's
// entries.
func TestConcurrentUpdates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quarantine.json")
	var wg sync.WaitGroup
	const n = 20
	for i := range n {
		wg.Go(func() {
			id := "spiffe://rampart.local/ns/shop/sa/w" + strconv.Itoa(i)
			if _, err := Update(path, t0, func(l *List) error { return l.Add(entry(id, t0, time.Hour)) }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	l, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Identities) != n {
		t.Errorf("%d entries, want %d", len(l.Identities), n)
	}
}
