// Package fsutil holds the few file-system operations that Rampart's state
// (CA keys, join tokens, the published trust bundle, the revocation and
// quarantine lists) depends on for integrity: atomic replacement,
// inter-process locks, the check that a secret file is private, and the
// private JSON state files built on them (JSONFile).
//
// It depends on the standard library only.
package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFileAtomic replaces path with data: it writes a temporary file in
// the same directory with mode perm, fsyncs it, renames it over path and
// fsyncs the directory, so that readers see the old content or the new,
// never a mix, and a write that returned survives a crash.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Lock takes a flock of the given kind (syscall.LOCK_EX or LOCK_SH) on path,
// creating it (0600) if needed, and returns the function that releases it.
// It blocks until the lock is granted. flock locks belong to the open file,
// so they also exclude other goroutines of this process that lock the same
// path.
func Lock(path string, how int) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	fd := int(f.Fd())
	for {
		err = syscall.Flock(fd, how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(fd, syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

// CheckPrivate refuses a file whose mode grants any permission to group or
// others, saying how to fix it.
func CheckPrivate(path string, mode fs.FileMode) error {
	if mode.Perm()&0o077 != 0 {
		return fmt.Errorf("%s is accessible by group or others (mode %04o); run chmod 600 %s", path, mode.Perm(), path)
	}
	return nil
}
