package main

import (
	"strings"
	"testing"
)

func TestTelemetryIntervalFlagIsChecked(t *testing.T) {
	for _, v := range []string{"1ms", "999ms", "-5s", "61s", "1h"} {
		code, err := run([]string{"--workload", "web", "--telemetry-interval", v})
		if code != 2 || err == nil || !strings.Contains(err.Error(), "--telemetry-interval") {
			t.Errorf("--telemetry-interval %s: exit %d, %v; want 2 and an error naming the flag", v, code, err)
		}
	}
}
