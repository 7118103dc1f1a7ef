package main

import (
	"os"
	"strings"
	"testing"
)

func TestAppCommandLineIsChecked(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		// A bare argument first used to index args[-1].
		{[]string{"myapp"}, `unexpected argument "myapp"`},
		{[]string{"--workload", "web", "myapp"}, `unexpected argument "myapp"`},
		{[]string{"--workload", "web", "--outbound-listen", "127.0.0.1:15001", "--", "true"}, "needs --app-uid"},
		{[]string{"--workload", "web", "--app-gid", "5", "--", "true"}, "--app-gid needs --app-uid"},
		{[]string{"--workload", "web", "--app-uid", "-7", "--", "true"}, "must be user and group IDs"},
	} {
		code, err := run(tt.args)
		if code != 2 || err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %d, %v; want 2 and an error with %q", tt.args, code, err, tt.want)
		}
	}
}

func TestAppCredential(t *testing.T) {
	if c, err := appCredential(-1, -1, false); c != nil || err != nil {
		t.Errorf("no --app-uid outside transparent mode: %v, %v; want the proxy's own user", c, err)
	}
	if _, err := appCredential(os.Geteuid(), -1, true); err == nil || !strings.Contains(err.Error(), "the proxy's own user") {
		t.Errorf("--app-uid of the proxy's own user: %v; want a refusal", err)
	}
	other := 4242
	if os.Geteuid() == other {
		other++
	}
	c, err := appCredential(other, 77, true)
	if err != nil || c == nil || c.Uid != uint32(other) || c.Gid != 77 {
		t.Errorf("appCredential(%d, 77) = %+v, %v", other, c, err)
	}
}
