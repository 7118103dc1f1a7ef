package controller

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// AttestSocketMode is the mode of the attestation socket: its owner and
// group may connect. Give the proxies' users the controller's group, or
// create the socket in a set-group-ID directory of the proxies' group.
const AttestSocketMode = 0o660

// maxSocketPath is the longest path a Unix socket can be bound at
// (sun_path holds 108 bytes, with the terminating NUL).
const maxSocketPath = 107

// bindSuffix is what the temporary directory and name the socket is first
// bound at add to its directory: "/.rampart-attest-<digits>/s".
const bindSuffix = len("/.rampart-attest-") + 20 + len("/s")

func checkSocketPath(path string) error {
	dir := filepath.Dir(path)
	switch {
	case len(path) > maxSocketPath:
		return fmt.Errorf("controller: attestation socket path %q is %d bytes long; a Unix socket path holds at most %d", path, len(path), maxSocketPath)
	case len(dir)+bindSuffix > maxSocketPath:
		return fmt.Errorf("controller: attestation socket directory %q is too long to bind a socket in (at most %d bytes)", dir, maxSocketPath-bindSuffix)
	case filepath.Base(path) == "." || filepath.Base(path) == "/" || path == "":
		return fmt.Errorf("controller: attestation socket path %q names no file", path)
	}
	return nil
}

// listenAttestSocket binds the attestation socket at path with mode
// AttestSocketMode. So that no process can connect before the mode is set,
// the socket is bound in a private (0700) directory beside path, given its
// mode, and then renamed into place. A socket already at path is replaced
// when nothing answers on it (left by a controller that died), and refused
// when something does; any other file there is refused. The returned
// listener removes path when closed.
func listenAttestSocket(path string) (net.Listener, error) {
	if err := checkSocketPath(path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("controller: attestation socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("controller: %s exists and is not a socket; remove it or choose another --attest-socket", path)
		}
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil, fmt.Errorf("controller: attestation socket %s is in use by another process (another controller?)", path)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("controller: attestation socket: %w", err)
	}

	tmpDir, err := os.MkdirTemp(dir, ".rampart-attest-")
	if err != nil {
		return nil, fmt.Errorf("controller: attestation socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("controller: attestation socket: %w", err)
	}
	// The bound name goes away with tmpDir; path is removed on Close.
	lis.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		lis.Close()
		return nil, fmt.Errorf("controller: attestation socket: %w", err)
	}
	if err := os.Chmod(tmp, AttestSocketMode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &socketListener{UnixListener: lis, path: path}, nil
}

// socketListener removes its socket file when closed.
type socketListener struct {
	*net.UnixListener
	path string
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	if rmErr := os.Remove(l.path); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) && err == nil {
		err = rmErr
	}
	return err
}

func (l *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }
