package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/rampart-mesh/rampart/internal/fsutil"
)

// maxStateFileSize bounds what is read from the state directory; real PEM
// files are a few hundred bytes.
const maxStateFileSize = 1 << 20

// writeFileAtomic replaces path atomically; see fsutil.WriteFileAtomic.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := fsutil.WriteFileAtomic(path, data, perm); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// lockPath takes an exclusive flock on path; see fsutil.Lock.
func lockPath(path string) (unlock func(), err error) {
	unlock, err = fsutil.Lock(path, syscall.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return unlock, nil
}

// exists reports whether path exists; errors other than "does not exist"
// are returned so that an unreadable directory is not mistaken for an empty
// one.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("ca: %w", err)
	}
}

// readFile reads a state file. With private set, it refuses a file that
// group or others may read or write.
func readFile(path string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	defer f.Close()
	if private {
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		if err := checkPrivateMode(path, fi.Mode()); err != nil {
			return nil, err
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("ca: read %s: %w", path, err)
	}
	if len(data) > maxStateFileSize {
		return nil, fmt.Errorf("ca: %s is larger than %d bytes; it is not a CA state file", path, maxStateFileSize)
	}
	return data, nil
}

// checkPrivateMode refuses a file that group or others may access.
func checkPrivateMode(path string, mode fs.FileMode) error {
	if err := fsutil.CheckPrivate(path, mode); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := readFile(path, false)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("ca: %s holds no PEM CERTIFICATE block", path)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("ca: %s holds more than one PEM block, want one certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: parse %s: %w", path, err)
	}
	return cert, nil
}

func readKey(path string) (crypto.Signer, error) {
	data, err := readFile(path, true)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("ca: %s holds no PEM PRIVATE KEY (PKCS#8) block", path)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("ca: %s holds more than one PEM block, want one private key", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: parse %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: %s holds a %T, which cannot sign", path, key)
	}
	return signer, nil
}

func writeCert(path string, cert *x509.Certificate) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("ca: encode %s: %w", path, err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}
