package main

import (
	"strings"
	"testing"
)

func TestTracingFlagsAreChecked(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string // "" : the flags are accepted
	}{
		{[]string{"--otlp-endpoint", "collector:4317"}, ""},
		{[]string{"--otlp-endpoint", "127.0.0.1:4317", "--otlp-insecure", "--trace-sample-ratio", "0.25", "--access-log", "json"}, ""},
		{[]string{"--access-log", "json"}, ""},
		{[]string{"--trace-sample-ratio", "0.5"}, "need --otlp-endpoint"},
		{[]string{"--otlp-insecure"}, "need --otlp-endpoint"},
		{[]string{"--otlp-endpoint", "collector"}, "give host:port"},
		{[]string{"--otlp-endpoint", "collector:4317", "--trace-sample-ratio", "2"}, "out of range"},
		{[]string{"--access-log", "text"}, `the only format is "json"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// Without a trust bundle, run stops right after the flags
			// it accepted.
			code, err := run(append([]string{"--workload", "web"}, tt.args...))
			want := tt.wantErr
			if want == "" {
				want = "--trust-bundle is required"
			}
			if code != 2 || err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("exit %d, %v; want 2 and an error with %q", code, err, want)
			}
		})
	}
}
