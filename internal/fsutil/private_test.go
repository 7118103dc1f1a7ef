package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPrivateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if _, err := ReadPrivateFile(path, 10); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want os.ErrNotExist", err)
	}
	if err := os.WriteFile(path, []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := ReadPrivateFile(path, 10)
	if err != nil || string(data) != "0123456789a" {
		t.Fatalf("ReadPrivateFile(max 10) = %q, %v; want the first 11 bytes", data, err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivateFile(path, 10); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("file readable by group: %v, want a chmod hint", err)
	}
}

func TestUpdatePrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	if err := UpdatePrivateFile(path, func() ([]byte, error) { return []byte("one"), nil }); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("after update: %v, %v; want mode 0600", st, err)
	}
	boom := errors.New("boom")
	if err := UpdatePrivateFile(path, func() ([]byte, error) { return []byte("two"), boom }); !errors.Is(err, boom) {
		t.Fatalf("failing compute: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "one" {
		t.Errorf("a failing compute wrote %q", data)
	}
}
