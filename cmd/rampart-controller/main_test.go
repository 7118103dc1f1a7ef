package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestRunRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"bad log level", []string{"--log-level", "loud"}, "level"},
		{"bad log format", []string{"--log-format", "xml"}, "format"},
		{"unknown flag", []string{"--nope"}, "not defined"},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
		{"bad trust domain", []string{"--state-dir", t.TempDir(), "--trust-domain", "Not Valid"}, "trust domain"},
		{"attestation socket path too long", []string{"--state-dir", t.TempDir(), "--attest-socket", "/run/" + strings.Repeat("x", 120)}, "attestation socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("run(%q) = %v, want an error mentioning %q", tt.args, err, tt.wantErr)
			}
		})
	}
	if err := run([]string{"--help"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run(--help) = %v, want flag.ErrHelp", err)
	}
}
