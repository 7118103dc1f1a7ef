package identity

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Errors Consume returns, which callers map to gRPC codes and metric
// reasons. Each is wrapped with detail that never includes the secret.
var (
	// ErrTokenMalformed: the string is not shaped like a join token.
	ErrTokenMalformed = errors.New("identity: malformed join token")
	// ErrTokenUnknown: no such token, or the secret does not match; the
	// two are not told apart.
	ErrTokenUnknown = errors.New("identity: unknown join token")
	// ErrTokenUsed: the token was consumed before.
	ErrTokenUsed = errors.New("identity: join token already used")
	// ErrTokenExpired: the token expired unused.
	ErrTokenExpired = errors.New("identity: join token expired")
)

// MaxTokenTTL is the longest a join token may live.
const MaxTokenTTL = 30 * 24 * time.Hour

// PruneAfter is how long after its expiry a token, used or not, stays in the
// store. Until then consuming it reports ErrTokenUsed or ErrTokenExpired;
// after, ErrTokenUnknown.
const PruneAfter = 24 * time.Hour

// A token is rjt.<id>.<secret>: id is 8 random bytes in lower-case hex,
// secret 32 random bytes in unpadded base64url.
const (
	tokenPrefix      = "rjt"
	tokenIDBytes     = 8
	tokenSecretBytes = 32
	tokenIDLen       = 2 * tokenIDBytes
	tokenSecretLen   = (tokenSecretBytes*8 + 5) / 6
	tokenLen         = len(tokenPrefix) + 1 + tokenIDLen + 1 + tokenSecretLen
	tokenShape       = "rjt.<16 hex digits>.<43 base64url characters>"
)

// storeVersion is the version of the store file format this code writes.
const storeVersion = 1

// maxStoreSize bounds the store file: at about 300 bytes a token, it holds
// far more tokens than anyone creates in a month.
const maxStoreSize = 64 << 20

// TokenInfo describes a stored join token, without its secret.
type TokenInfo struct {
	// ID is the public part of the token, the <id> in rjt.<id>.<secret>.
	ID string
	// SPIFFEID is the identity the token admits its bearer as.
	SPIFFEID spiffeid.ID
	Created  time.Time
	Expires  time.Time
	// UsedAt is when the token was consumed; zero while unused.
	UsedAt time.Time
}

// TokenStore keeps single-use join tokens in one JSON file, shared by the
// CLI, which creates tokens, and the controller, which consumes them, across
// processes. Every change takes an exclusive flock on <path>.lock, reads the
// file, and replaces it atomically, so concurrent writers never lose each
// other's changes and a consumed token stays consumed across restarts. Only
// a SHA-256 of each secret is stored.
//
// A TokenStore is safe for concurrent use.
type TokenStore struct {
	path string
	now  func() time.Time

	// mu queues this process's callers before the flock, so that they do
	// not each block an OS thread in flock(2). The flock alone is correct.
	mu sync.Mutex
}

// storeFile is the JSON form of the store.
type storeFile struct {
	Version int           `json:"version"`
	Tokens  []tokenRecord `json:"tokens"`
}

type tokenRecord struct {
	ID           string      `json:"id"`
	SecretSHA256 string      `json:"secretSHA256"`
	SPIFFEID     spiffeid.ID `json:"spiffeID"`
	Created      time.Time   `json:"created"`
	Expires      time.Time   `json:"expires"`
	UsedAt       time.Time   `json:"usedAt,omitzero"`
}

// OpenTokenStore opens the token store kept in the file at path, which
// need not exist yet; its directory is created with mode 0700 if missing.
// now is the clock; nil means time.Now. It refuses a store file that group
// or others may access, or that it cannot parse.
func OpenTokenStore(path string, now func() time.Time) (*TokenStore, error) {
	if path == "" {
		return nil, errors.New("identity: token store path is empty")
	}
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("identity: create token store directory: %w", err)
	}
	s := &TokenStore{path: path, now: now}
	if _, err := s.List(); err != nil {
		return nil, err
	}
	return s, nil
}

// Create stores a new join token that admits its bearer as id until ttl
// from now, and returns it. The token is shown only here: the store keeps a
// hash of its secret.
func (s *TokenStore) Create(id spiffeid.ID, ttl time.Duration) (token string, err error) {
	if id.IsZero() {
		return "", errors.New("identity: no SPIFFE ID for the join token")
	}
	if ttl <= 0 || ttl > MaxTokenTTL {
		return "", fmt.Errorf("identity: join token ttl %s is out of range: it must be positive and at most %s", ttl, MaxTokenTTL)
	}
	var secret [tokenSecretBytes]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", fmt.Errorf("identity: generate join token: %w", err)
	}
	sum := sha256.Sum256(secret[:])
	var tokenID string
	err = s.update(func(st *storeFile, now time.Time) (bool, error) {
		for {
			var b [tokenIDBytes]byte
			if _, err := rand.Read(b[:]); err != nil {
				return false, fmt.Errorf("identity: generate join token: %w", err)
			}
			tokenID = hex.EncodeToString(b[:])
			if st.find(tokenID) < 0 {
				break
			}
		}
		st.Tokens = append(st.Tokens, tokenRecord{
			ID:           tokenID,
			SecretSHA256: hex.EncodeToString(sum[:]),
			SPIFFEID:     id,
			Created:      now,
			Expires:      now.Add(ttl),
		})
		return true, nil
	})
	if err != nil {
		return "", err
	}
	return tokenPrefix + "." + tokenID + "." + base64.RawURLEncoding.EncodeToString(secret[:]), nil
}

// Consume marks token used and returns the SPIFFE ID it admits. It fails
// with an error wrapping ErrTokenMalformed, ErrTokenUnknown (also for a
// wrong secret), ErrTokenUsed or ErrTokenExpired. Whether a token is used
// or expired is told only to a caller who has its secret.
func (s *TokenStore) Consume(token string) (spiffeid.ID, error) {
	tokenID, secret, err := parseToken(token)
	if err != nil {
		return spiffeid.ID{}, err
	}
	sum := sha256.Sum256(secret)
	var id spiffeid.ID
	err = s.update(func(st *storeFile, now time.Time) (bool, error) {
		i := st.find(tokenID)
		want := make([]byte, sha256.Size) // compared against when there is no such token
		if i >= 0 {
			// Validated on load.
			want, _ = hex.DecodeString(st.Tokens[i].SecretSHA256)
		}
		if subtle.ConstantTimeCompare(sum[:], want) != 1 || i < 0 {
			return false, fmt.Errorf("%w %s.%s", ErrTokenUnknown, tokenPrefix, tokenID)
		}
		rec := &st.Tokens[i]
		switch {
		case !rec.UsedAt.IsZero():
			return false, fmt.Errorf("%w: %s.%s was used at %s", ErrTokenUsed, tokenPrefix, tokenID, rec.UsedAt.Format(time.RFC3339))
		case !now.Before(rec.Expires):
			return false, fmt.Errorf("%w: %s.%s expired at %s", ErrTokenExpired, tokenPrefix, tokenID, rec.Expires.Format(time.RFC3339))
		}
		rec.UsedAt = now
		id = rec.SPIFFEID
		return true, nil
	})
	if err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// List returns the stored tokens, oldest first, without their secrets.
// Tokens due for pruning are left out.
func (s *TokenStore) List() ([]TokenInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := lockPath(s.lockPath(), syscall.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	infos := make([]TokenInfo, 0, len(st.Tokens))
	for _, rec := range st.Tokens {
		if prunable(rec, now) {
			continue
		}
		infos = append(infos, TokenInfo{
			ID:       rec.ID,
			SPIFFEID: rec.SPIFFEID,
			Created:  rec.Created,
			Expires:  rec.Expires,
			UsedAt:   rec.UsedAt,
		})
	}
	slices.SortStableFunc(infos, func(a, b TokenInfo) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
	})
	return infos, nil
}

func (s *TokenStore) lockPath() string { return s.path + ".lock" }

// update runs fn on the stored tokens under the exclusive lock. If fn
// reports a change, tokens due for pruning are dropped and the file is
// replaced. If fn fails nothing is written.
func (s *TokenStore) update(fn func(st *storeFile, now time.Time) (changed bool, err error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := lockPath(s.lockPath(), syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	now := s.now().UTC()
	changed, err := fn(st, now)
	if err != nil || !changed {
		return err
	}
	st.Tokens = slices.DeleteFunc(st.Tokens, func(rec tokenRecord) bool { return prunable(rec, now) })
	st.Version = storeVersion
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("identity: encode token store: %w", err)
	}
	return writeFileAtomic(s.path, append(data, '\n'), 0o600)
}

// load reads the store file; a missing or empty file is an empty store.
// The caller holds the lock.
func (s *TokenStore) load() (*storeFile, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &storeFile{Version: storeVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := checkPrivateMode(s.path, fi.Mode()); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStoreSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity: read %s: %w", s.path, err)
	}
	if len(data) > maxStoreSize {
		return nil, fmt.Errorf("identity: token store %s is larger than %d bytes", s.path, maxStoreSize)
	}
	if len(data) == 0 {
		return &storeFile{Version: storeVersion}, nil
	}
	st := &storeFile{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("identity: token store %s is corrupt: %w", s.path, err)
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("identity: token store %s: %w", s.path, err)
	}
	return st, nil
}

func (st *storeFile) validate() error {
	if st.Version != storeVersion {
		return fmt.Errorf("format version %d is not %d; was it written by another version of Rampart?", st.Version, storeVersion)
	}
	seen := make(map[string]bool, len(st.Tokens))
	for i, rec := range st.Tokens {
		switch {
		case !isLowerHex(rec.ID, tokenIDLen):
			return fmt.Errorf("token %d: id %q is not %d lower-case hex digits", i, rec.ID, tokenIDLen)
		case seen[rec.ID]:
			return fmt.Errorf("token %d: id %s appears twice", i, rec.ID)
		case !isLowerHex(rec.SecretSHA256, 2*sha256.Size):
			return fmt.Errorf("token %s: secretSHA256 is not a hex SHA-256", rec.ID)
		case rec.SPIFFEID.IsZero():
			return fmt.Errorf("token %s: no SPIFFE ID", rec.ID)
		case !rec.Expires.After(rec.Created):
			return fmt.Errorf("token %s: expires before it was created", rec.ID)
		}
		seen[rec.ID] = true
	}
	return nil
}

// find returns the index of the token with the given id, or -1.
func (st *storeFile) find(tokenID string) int {
	return slices.IndexFunc(st.Tokens, func(rec tokenRecord) bool { return rec.ID == tokenID })
}

func prunable(rec tokenRecord, now time.Time) bool {
	return !now.Before(rec.Expires.Add(PruneAfter))
}

// parseToken splits a token into its id and decoded secret. Its errors wrap
// ErrTokenMalformed and never quote the token.
func parseToken(token string) (tokenID string, secret []byte, err error) {
	if len(token) != tokenLen {
		return "", nil, fmt.Errorf("%w: %d characters long, want %d: %s", ErrTokenMalformed, len(token), tokenLen, tokenShape)
	}
	prefix, rest, _ := strings.Cut(token, ".")
	tokenID, encSecret, ok := strings.Cut(rest, ".")
	switch {
	case prefix != tokenPrefix:
		return "", nil, fmt.Errorf("%w: does not start with %q: %s", ErrTokenMalformed, tokenPrefix+".", tokenShape)
	case !ok || !isLowerHex(tokenID, tokenIDLen):
		return "", nil, fmt.Errorf("%w: id is not %d lower-case hex digits: %s", ErrTokenMalformed, tokenIDLen, tokenShape)
	}
	secret, err = base64.RawURLEncoding.Strict().DecodeString(encSecret)
	if err != nil || len(secret) != tokenSecretBytes || strings.ContainsAny(encSecret, "\r\n") {
		return "", nil, fmt.Errorf("%w: secret is not %d bytes of unpadded base64url: %s", ErrTokenMalformed, tokenSecretBytes, tokenShape)
	}
	return tokenID, secret, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
