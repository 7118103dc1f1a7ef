package identity

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzConsume feeds arbitrary strings to Consume on a store holding real
// tokens. It must never panic and never succeed: without a secret from
// Create there is nothing to consume. Every refusal wraps one of the
// exported sentinels and never quotes the input.
func FuzzConsume(f *testing.F) {
	s, _, _ := newStore(f)
	tok := mustCreate(f, s, checkID, time.Hour)
	used := mustCreate(f, s, adminID, time.Hour)
	if _, err := s.Consume(used); err != nil {
		f.Fatal(err)
	}
	id, secret := tok[4:20], tok[21:]
	for _, seed := range []string{
		"",
		"rjt.",
		"rjt." + id + "." + strings.Repeat("A", 43),
		"rjt." + id + "." + secret[:42] + "B",
		"rjt." + id + "." + secret[:42],
		"rjt." + used[4:20] + "." + strings.Repeat("_", 42) + "w",
		"rjt.0123456789abcdef." + secret,
		"RJT." + id + "." + secret,
		strings.Repeat(".", 64),
	} {
		f.Add(seed)
	}
	sentinels := []error{ErrTokenMalformed, ErrTokenUnknown, ErrTokenUsed, ErrTokenExpired}
	f.Fuzz(func(t *testing.T, in string) {
		if in == tok || in == used {
			t.Skip("the real tokens")
		}
		got, err := s.Consume(in)
		if err == nil {
			t.Fatalf("Consume(%q) succeeded with %v", in, got)
		}
		if !got.IsZero() {
			t.Fatalf("Consume(%q) returned %v with its error", in, got)
		}
		known := false
		for _, target := range sentinels {
			known = known || errors.Is(err, target)
		}
		if !known {
			t.Fatalf("Consume(%q): %v wraps no sentinel", in, err)
		}
		if len(in) >= 20 && strings.Contains(err.Error(), in) {
			t.Fatalf("error %q quotes the input", err)
		}
	})
}
