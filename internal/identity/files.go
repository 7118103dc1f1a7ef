package identity

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/rampart-mesh/rampart/internal/fsutil"
)

// writeFileAtomic replaces path atomically; see fsutil.WriteFileAtomic.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := fsutil.WriteFileAtomic(path, data, perm); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// lockPath takes a flock on path; see fsutil.Lock.
func lockPath(path string, how int) (unlock func(), err error) {
	unlock, err = fsutil.Lock(path, how)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return unlock, nil
}

// checkPrivateMode refuses a file that group or others may access.
func checkPrivateMode(path string, mode fs.FileMode) error {
	if err := fsutil.CheckPrivate(path, mode); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}
