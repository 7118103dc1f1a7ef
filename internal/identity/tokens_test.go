package identity

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	t0      = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	checkID = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/checkout")
	adminID = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/admin")
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newStore(t testing.TB) (*TokenStore, *clock, string) {
	t.Helper()
	clk := &clock{now: t0}
	path := filepath.Join(t.TempDir(), "state", "tokens.json")
	s, err := OpenTokenStore(path, clk.Now)
	if err != nil {
		t.Fatalf("OpenTokenStore: %v", err)
	}
	return s, clk, path
}

func mustCreate(t testing.TB, s *TokenStore, id spiffeid.ID, ttl time.Duration) string {
	t.Helper()
	tok, err := s.Create(id, ttl)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return tok
}

func wantIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

func TestTokenCreateConsume(t *testing.T) {
	s, _, path := newStore(t)
	tok := mustCreate(t, s, checkID, time.Hour)

	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[0] != "rjt" || len(parts[1]) != 16 || len(parts[2]) != 43 {
		t.Fatalf("token %q is not rjt.<16>.<43>", tok)
	}
	if secret, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil || len(secret) != 32 {
		t.Fatalf("secret does not decode to 32 bytes: %v", err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), parts[2]) {
		t.Error("store file holds the secret")
	}
	for _, p := range []string{path, path + ".lock"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %04o, want 0600", p, fi.Mode().Perm())
		}
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("store directory mode %04o, want 0700", fi.Mode().Perm())
	}

	id, err := s.Consume(tok)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if id != checkID {
		t.Errorf("Consume = %v, want %v", id, checkID)
	}
	_, err = s.Consume(tok)
	wantIs(t, err, ErrTokenUsed)
	if !strings.Contains(err.Error(), parts[1]) || strings.Contains(err.Error(), parts[2]) {
		t.Errorf("error %q should name the token id and not its secret", err)
	}
}

func TestTokensAreDistinct(t *testing.T) {
	s, _, _ := newStore(t)
	a := mustCreate(t, s, checkID, time.Hour)
	b := mustCreate(t, s, adminID, time.Hour)
	if a == b || a[:20] == b[:20] {
		t.Fatalf("tokens %q and %q share an id", a, b)
	}
	if id, err := s.Consume(b); err != nil || id != adminID {
		t.Errorf("Consume(b) = %v, %v; want %v", id, err, adminID)
	}
	if id, err := s.Consume(a); err != nil || id != checkID {
		t.Errorf("Consume(a) = %v, %v; want %v", id, err, checkID)
	}
}

func TestTokenWrongSecret(t *testing.T) {
	s, _, _ := newStore(t)
	tok := mustCreate(t, s, checkID, time.Hour)
	// Same id, another well-formed secret.
	forged := tok[:len(tok)-43] + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	_, err := s.Consume(forged)
	wantIs(t, err, ErrTokenUnknown)
	// An id that does not exist reads the same.
	_, errNoID := s.Consume("rjt.0123456789abcdef." + tok[len(tok)-43:])
	wantIs(t, errNoID, ErrTokenUnknown)
	// The real token still works: a failed guess does not burn it.
	if _, err := s.Consume(tok); err != nil {
		t.Fatalf("Consume after a wrong guess: %v", err)
	}
	// A used token with a wrong secret is unknown, not used.
	_, err = s.Consume(forged)
	wantIs(t, err, ErrTokenUnknown)
}

func TestTokenExpiry(t *testing.T) {
	s, clk, _ := newStore(t)
	tok := mustCreate(t, s, checkID, time.Hour)
	clk.Advance(time.Hour)
	_, err := s.Consume(tok)
	wantIs(t, err, ErrTokenExpired)
	if !strings.Contains(err.Error(), "expired at 2030-01-02T04:04:05Z") {
		t.Errorf("error %q does not say when", err)
	}

	// Just before expiry it works.
	tok = mustCreate(t, s, checkID, time.Hour)
	clk.Advance(time.Hour - time.Nanosecond)
	if _, err := s.Consume(tok); err != nil {
		t.Fatalf("Consume just before expiry: %v", err)
	}
	// A used token reports used even once expired.
	clk.Advance(time.Hour)
	_, err = s.Consume(tok)
	wantIs(t, err, ErrTokenUsed)
}

func TestTokenPruning(t *testing.T) {
	s, clk, path := newStore(t)
	expired := mustCreate(t, s, checkID, time.Hour)
	used := mustCreate(t, s, checkID, time.Hour)
	if _, err := s.Consume(used); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour + PruneAfter - time.Second)
	// Not yet pruned.
	if infos, err := s.List(); err != nil || len(infos) != 2 {
		t.Fatalf("List = %d tokens, %v; want 2", len(infos), err)
	}
	_, err := s.Consume(expired)
	wantIs(t, err, ErrTokenExpired)

	clk.Advance(time.Second)
	// Listing leaves them out at once; the next write drops them.
	if infos, err := s.List(); err != nil || len(infos) != 0 {
		t.Fatalf("List = %v, %v; want none", infos, err)
	}
	fresh := mustCreate(t, s, adminID, time.Hour)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `"id"`); n != 1 {
		t.Errorf("store holds %d tokens after pruning, want 1:\n%s", n, data)
	}
	for _, tok := range []string{expired, used} {
		_, err := s.Consume(tok)
		wantIs(t, err, ErrTokenUnknown)
	}
	if _, err := s.Consume(fresh); err != nil {
		t.Fatal(err)
	}
}

func TestTokenCreateArguments(t *testing.T) {
	s, _, _ := newStore(t)
	tests := []struct {
		name    string
		id      spiffeid.ID
		ttl     time.Duration
		wantErr string
	}{
		{name: "max ttl", id: checkID, ttl: MaxTokenTTL},
		{name: "one second", id: checkID, ttl: time.Second},
		{name: "zero ttl", id: checkID, ttl: 0, wantErr: "out of range"},
		{name: "negative ttl", id: checkID, ttl: -time.Hour, wantErr: "out of range"},
		{name: "too long", id: checkID, ttl: MaxTokenTTL + time.Second, wantErr: "at most 720h0m0s"},
		{name: "no id", ttl: time.Hour, wantErr: "no SPIFFE ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := s.Create(tt.id, tt.ttl)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Create: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Create = %q, %v; want error containing %q", tok, err, tt.wantErr)
			}
			if tok != "" {
				t.Errorf("got token %q with the error", tok)
			}
		})
	}
}

func TestTokenMalformed(t *testing.T) {
	s, _, _ := newStore(t)
	valid := mustCreate(t, s, checkID, time.Hour)
	id, secret := valid[4:20], valid[21:]
	tests := []struct {
		name, token string
	}{
		{"empty", ""},
		{"whitespace", "   "},
		{"prefix only", "rjt."},
		{"no secret", "rjt." + id},
		{"trailing newline", valid + "\n"},
		{"leading space", " " + valid},
		{"wrong prefix", "rjx." + id + "." + secret},
		{"upper-case prefix", "RJT." + id + "." + secret},
		{"upper-case id", "rjt." + strings.ToUpper(id) + "." + secret},
		{"id not hex", "rjt.0123456789abcdeg." + secret},
		{"short id", "rjt." + id[:15] + "." + secret + "A"},
		{"long id", "rjt." + id + "0." + secret[:42]},
		{"short secret", "rjt." + id + "." + secret[:42]},
		{"long secret", "rjt." + id + "." + secret + "A"},
		{"padded secret", "rjt." + id + "." + secret[:42] + "="},
		{"std base64 secret", "rjt." + id + "." + secret[:42] + "+"},
		{"non-canonical secret", "rjt." + id + "." + secret[:42] + "B"},
		{"newline in secret", "rjt." + id + "." + secret[:20] + "\n" + secret[21:]},
		{"extra dot", "rjt." + id + "." + secret[:20] + "." + secret[21:]},
		{"missing dot", "rjt" + id + "." + secret + "A"},
		{"non-ASCII", "rjt." + id + "." + secret[:41] + "é"},
		{"huge", strings.Repeat("a", 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Consume(tt.token)
			if !got.IsZero() {
				t.Errorf("Consume returned %v", got)
			}
			wantIs(t, err, ErrTokenMalformed)
			if len(tt.token) > 8 && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error %q quotes the token", err)
			}
		})
	}
	// None of that touched the real token.
	if _, err := s.Consume(valid); err != nil {
		t.Fatal(err)
	}
}

// TestTokenParseCanonical checks that the 43rd character of a secret
// carries two unused bits that must be zero: otherwise four strings would
// decode to the same secret.
func TestTokenParseCanonical(t *testing.T) {
	s, _, _ := newStore(t)
	valid := mustCreate(t, s, checkID, time.Hour)
	accepted := 0
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		if _, _, err := parseToken(valid[:len(valid)-1] + string(c)); err == nil {
			accepted++
		}
	}
	if accepted != 16 {
		t.Errorf("%d last characters accepted, want 16", accepted)
	}
}

// TestTokenStoresShareFile opens two stores on one file, as the CLI and the
// controller do, and checks that each sees the other's writes.
func TestTokenStoresShareFile(t *testing.T) {
	clk := &clock{now: t0}
	path := filepath.Join(t.TempDir(), "tokens.json")
	cli, err := OpenTokenStore(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	controller, err := OpenTokenStore(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}

	a := mustCreate(t, cli, checkID, time.Hour)
	b := mustCreate(t, controller, adminID, time.Hour)
	c := mustCreate(t, cli, checkID, time.Hour)
	for _, s := range []*TokenStore{cli, controller} {
		infos, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) != 3 {
			t.Fatalf("List sees %d tokens, want 3: a write was lost", len(infos))
		}
	}

	if id, err := controller.Consume(a); err != nil || id != checkID {
		t.Fatalf("controller Consume(a) = %v, %v", id, err)
	}
	if id, err := cli.Consume(b); err != nil || id != adminID {
		t.Fatalf("cli Consume(b) = %v, %v", id, err)
	}
	_, err = cli.Consume(a)
	wantIs(t, err, ErrTokenUsed)

	// A restarted controller still knows a is used and c is not.
	restarted, err := OpenTokenStore(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	_, err = restarted.Consume(a)
	wantIs(t, err, ErrTokenUsed)
	if _, err := restarted.Consume(c); err != nil {
		t.Fatal(err)
	}
}

func TestTokenConsumeRace(t *testing.T) {
	clk := &clock{now: t0}
	path := filepath.Join(t.TempDir(), "tokens.json")
	stores := make([]*TokenStore, 2)
	for i := range stores {
		s, err := OpenTokenStore(path, clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	tok := mustCreate(t, stores[0], checkID, time.Hour)

	var ok, used, other atomic.Int32
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			id, err := stores[i%2].Consume(tok)
			switch {
			case err == nil && id == checkID:
				ok.Add(1)
			case errors.Is(err, ErrTokenUsed):
				used.Add(1)
			default:
				t.Errorf("Consume: %v, %v", id, err)
				other.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || used.Load() != 9 {
		t.Errorf("%d successes, %d used, %d other; want 1, 9, 0", ok.Load(), used.Load(), other.Load())
	}
}

// TestTokenCreateRace creates tokens from two stores at once: none may be
// lost.
func TestTokenCreateRace(t *testing.T) {
	clk := &clock{now: t0}
	path := filepath.Join(t.TempDir(), "tokens.json")
	a, err := OpenTokenStore(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenTokenStore(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	toks := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() { toks[i] = mustCreate(t, s, checkID, time.Hour) })
	}
	wg.Wait()
	infos, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != n {
		t.Fatalf("List has %d tokens, want %d", len(infos), n)
	}
	for _, tok := range toks {
		if _, err := b.Consume(tok); err != nil {
			t.Errorf("Consume: %v", err)
		}
	}
}

func TestTokenList(t *testing.T) {
	s, clk, _ := newStore(t)
	if infos, err := s.List(); err != nil || len(infos) != 0 {
		t.Fatalf("List on an empty store = %v, %v", infos, err)
	}
	a := mustCreate(t, s, checkID, time.Hour)
	clk.Advance(time.Minute)
	mustCreate(t, s, adminID, 2*time.Hour)
	clk.Advance(time.Minute)
	if _, err := s.Consume(a); err != nil {
		t.Fatal(err)
	}
	infos, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("List has %d tokens, want 2", len(infos))
	}
	want := []TokenInfo{
		{ID: a[4:20], SPIFFEID: checkID, Created: t0, Expires: t0.Add(time.Hour), UsedAt: t0.Add(2 * time.Minute)},
		{ID: infos[1].ID, SPIFFEID: adminID, Created: t0.Add(time.Minute), Expires: t0.Add(time.Minute + 2*time.Hour)},
	}
	for i := range want {
		got := infos[i]
		if got.ID != want[i].ID || got.SPIFFEID != want[i].SPIFFEID || !got.Created.Equal(want[i].Created) ||
			!got.Expires.Equal(want[i].Expires) || !got.UsedAt.Equal(want[i].UsedAt) {
			t.Errorf("List[%d] = %+v, want %+v", i, got, want[i])
		}
	}
	if len(infos[1].ID) != 16 {
		t.Errorf("id %q is not 16 characters", infos[1].ID)
	}
}

func TestTokenStoreRefusesLooseMode(t *testing.T) {
	s, _, path := newStore(t)
	tok := mustCreate(t, s, checkID, time.Hour)
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		t.Run(mode.String(), func(t *testing.T) {
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := OpenTokenStore(path, nil)
			if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
				t.Fatalf("OpenTokenStore = %v, want a chmod 600 error", err)
			}
			// An open store refuses too, rather than consuming from a file
			// others could have edited.
			if _, err := s.Consume(tok); err == nil || !strings.Contains(err.Error(), "chmod 600") {
				t.Fatalf("Consume = %v, want a chmod 600 error", err)
			}
		})
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(tok); err != nil {
		t.Fatal(err)
	}
}

func TestTokenStoreRefusesBadFile(t *testing.T) {
	valid := `{"version":1,"tokens":[{"id":"0123456789abcdef","secretSHA256":"` + strings.Repeat("ab", 32) +
		`","spiffeID":"spiffe://example.org/ns/a/sa/b","created":"2030-01-01T00:00:00Z","expires":"2030-01-01T01:00:00Z"}]}`
	tests := []struct {
		name, content, wantErr string
	}{
		{name: "valid", content: valid},
		{name: "empty file", content: ""},
		{name: "not JSON", content: "hello", wantErr: "corrupt"},
		{name: "truncated", content: valid[:len(valid)-5], wantErr: "corrupt"},
		{name: "newer version", content: `{"version":2,"tokens":[]}`, wantErr: "format version 2"},
		{name: "no version", content: `{"tokens":[]}`, wantErr: "format version 0"},
		{name: "bad id", content: strings.Replace(valid, "0123456789abcdef", "xyz", 1), wantErr: `id "xyz"`},
		{name: "bad hash", content: strings.Replace(valid, strings.Repeat("ab", 32), "ab", 1), wantErr: "secretSHA256"},
		{name: "bad SPIFFE ID", content: strings.Replace(valid, "spiffe://example.org/ns/a/sa/b", "http://x", 1), wantErr: "corrupt"},
		{name: "no SPIFFE ID", content: strings.Replace(valid, "spiffe://example.org/ns/a/sa/b", "", 1), wantErr: "no SPIFFE ID"},
		{name: "expires first", content: strings.Replace(valid, "01:00:00Z", "00:00:00Z", 1), wantErr: "expires before"},
		{name: "duplicate id", content: strings.Replace(valid, "}]}", "},"+valid[strings.Index(valid, "[")+1:], 1), wantErr: "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenTokenStore(path, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("OpenTokenStore: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("OpenTokenStore = %v, want an error naming %s and containing %q", err, path, tt.wantErr)
			}
		})
	}
}

func TestOpenTokenStoreArguments(t *testing.T) {
	if _, err := OpenTokenStore("", nil); err == nil {
		t.Error("accepted an empty path")
	}
	// A nil clock means time.Now.
	s, err := OpenTokenStore(filepath.Join(t.TempDir(), "tokens.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := mustCreate(t, s, checkID, time.Minute)
	infos, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(infos[0].Created); d < 0 || d > time.Minute {
		t.Errorf("Created %v is not now", infos[0].Created)
	}
	if _, err := s.Consume(tok); err != nil {
		t.Fatal(err)
	}
}
