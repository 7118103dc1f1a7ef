package fsutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// JSONFile is the format of a private state file (mode 0600) that holds
// one JSON document of type T: bounded in size, parsed strictly and
// validated on every read, and replaced atomically under an exclusive lock
// (UpdatePrivateFile). Its fields name the document in errors and say what
// makes one valid.
type JSONFile[T any] struct {
	// Name prefixes the errors of Load and Update: "quarantine".
	Name string
	// What names the document in the errors of Parse: "quarantine list".
	What string
	// MaxSize bounds the file, in bytes.
	MaxSize int
	// Invalid is the error that every problem with a document wraps.
	Invalid error
	// Empty is the document of a missing file.
	Empty func() *T
	// Validate reports the first problem with a document.
	Validate func(*T) error
	// Fix ends the error of a file that Load cannot parse, saying what to
	// do: "fix or restore the file".
	Fix string
}

// Parse decodes and validates the content of a file. More than MaxSize
// bytes, unknown fields, a second JSON value and what Validate refuses are
// errors.
func (f *JSONFile[T]) Parse(data []byte) (*T, error) {
	if len(data) > f.MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", f.Invalid, len(data), f.MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var v T
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: not a %s: %v", f.Invalid, f.What, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the %s", f.Invalid, f.What)
	}
	if err := f.Validate(&v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Load reads (ReadPrivateFile) and parses the file at path. A missing file
// is Empty. Errors name the file.
func (f *JSONFile[T]) Load(path string) (*T, error) {
	data, err := ReadPrivateFile(path, int64(f.MaxSize))
	if errors.Is(err, os.ErrNotExist) {
		return f.Empty(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	v, err := f.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w; %s", f.Name, path, err, f.Fix)
	}
	return v, nil
}

// Update applies change to the document at path under an exclusive lock
// and writes the result, indented, atomically (mode 0600), so that
// concurrent editors never lose each other's changes. A change that fails
// or leaves the document invalid writes nothing, and its error is returned
// as it is.
func (f *JSONFile[T]) Update(path string, change func(*T) error) (*T, error) {
	var v *T
	var docErr error // a problem with the document, already prefixed
	err := UpdatePrivateFile(path, func() ([]byte, error) {
		var data []byte
		v, data, docErr = f.updated(path, change)
		return data, docErr
	})
	switch {
	case docErr != nil:
		return nil, docErr
	case err != nil:
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	return v, nil
}

// updated is the document at path with change applied, and its encoding.
func (f *JSONFile[T]) updated(path string, change func(*T) error) (*T, []byte, error) {
	v, err := f.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if err := change(v); err != nil {
		return nil, nil, err
	}
	if err := f.Validate(v); err != nil {
		return nil, nil, err
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: encode: %w", f.Name, err)
	}
	return v, append(data, '\n'), nil
}
