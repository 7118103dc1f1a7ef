package fsutil

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// ReadPrivateFile reads at most max+1 bytes of the file at path (so that
// the caller can tell a file larger than max) after checking that it is
// private (CheckPrivate). A missing file is an error that wraps
// os.ErrNotExist.
func ReadPrivateFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := CheckPrivate(path, st.Mode()); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// UpdatePrivateFile replaces the file at path (mode 0600, directory
// created 0700 if needed) with what compute returns, under an exclusive
// lock on path+".lock" held from before compute reads the file until it
// is replaced, so that concurrent editors never lose each other's
// changes. When compute fails nothing is written.
func UpdatePrivateFile(path string, compute func() ([]byte, error)) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	unlock, err := Lock(path+".lock", syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	data, err := compute()
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o600)
}
