package insights

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/rampart-mesh/rampart/internal/fsutil"
)

// MaxStateBytes bounds the file a FileStore reads or writes. A full
// baseline (MaxWorkloads × MaxCallersPerWorkload callers) would not fit,
// but meshes of thousands of edges do, with a week of ledger.
const MaxStateBytes = 64 << 20

// BoundedStore is a Store that refuses states larger than MaxBytes
// bytes (FileStore: MaxStateBytes). The engine then skips, rather than
// builds, a state it estimates larger.
type BoundedStore interface {
	Store
	MaxBytes() int
}

// FileStore keeps the State in one JSON file, mode 0600, replaced
// atomically at every save.
type FileStore struct {
	path string
}

var _ BoundedStore = (*FileStore)(nil)

// MaxBytes is MaxStateBytes.
func (s *FileStore) MaxBytes() int { return MaxStateBytes }

// NewFileStore returns a FileStore at path (in the controller's state
// directory: insights.json).
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

// Load reads the saved state; (nil, nil) when there is none. It refuses a
// file that others may read, a file over MaxStateBytes, one that is not
// the JSON of a State and one of another version.
func (s *FileStore) Load() (*State, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("insights: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("insights: %w", err)
	}
	if err := fsutil.CheckPrivate(s.path, fi.Mode()); err != nil {
		return nil, fmt.Errorf("insights: %w", err)
	}
	if fi.Size() > MaxStateBytes {
		return nil, fmt.Errorf("insights: %s is %d bytes, more than the %d a baseline may take; move it away to learn afresh", s.path, fi.Size(), MaxStateBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("insights: read %s: %w", s.path, err)
	}
	if len(data) > MaxStateBytes {
		return nil, fmt.Errorf("insights: %s grew past %d bytes while read", s.path, MaxStateBytes)
	}
	return decodeState(s.path, data)
}

// decodeState parses a saved state read from name.
func decodeState(name string, data []byte) (*State, error) {
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("insights: %s is not a saved baseline (%w); move it away to learn afresh", name, err)
	}
	if st.Baseline.Version != snapshotVersion {
		return nil, fmt.Errorf("insights: %s has version %d, this controller reads version %d; move it away to learn afresh", name, st.Baseline.Version, snapshotVersion)
	}
	return &st, nil
}

// Save replaces the file with st.
func (s *FileStore) Save(st *State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("insights: %w", err)
	}
	if len(data) > MaxStateBytes {
		return fmt.Errorf("insights: baseline of %d bytes exceeds %d; not saved", len(data), MaxStateBytes)
	}
	if err := fsutil.WriteFileAtomic(s.path, data, 0o600); err != nil {
		return fmt.Errorf("insights: %w", err)
	}
	return nil
}
