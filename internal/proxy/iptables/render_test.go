package iptables

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the current output")

// TestRenderGolden compares Render's output with testdata/<case>.v4 and
// testdata/<case>.v6, which are iptables-restore input as they stand.
// Refresh them with: go test ./internal/proxy/iptables -run TestRenderGolden -update
func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"default", Config{ProxyUID: 1337}},
		{"gid-only", Config{ProxyGID: 1337}},
		{"full", Config{
			OutboundPort:      16001,
			InboundPort:       16006,
			TunnelPort:        16008,
			AdminPort:         16000,
			ProxyUID:          1337,
			ProxyGID:          1338,
			InboundSkipPorts:  []uint16{22, 9090, 22},
			OutboundSkipPorts: []uint16{5432},
			InboundSkipCIDRs:  []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fd00:1::/64")},
			OutboundSkipCIDRs: []netip.Prefix{
				netip.MustParsePrefix("10.96.0.0/12"),
				netip.MustParsePrefix("169.254.169.254/32"),
				netip.MustParsePrefix("fd00:10::/108"),
				netip.MustParsePrefix("10.96.0.0/12"),
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			v4, v6 := Render(tt.cfg)
			golden(t, tt.name+".v4", v4)
			golden(t, tt.name+".v6", v6)
		})
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got); run with -update if the change is intended:\n%s", path, diff)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"uid", Config{ProxyUID: 1337}, false},
		{"gid", Config{ProxyGID: 1337}, false},
		{"no owner", Config{}, true},
		{"same ports", Config{ProxyUID: 1, OutboundPort: 15006}, true},
		{"inbound is admin", Config{ProxyUID: 1, InboundPort: 15000}, true},
		{"zero skip port", Config{ProxyUID: 1, OutboundSkipPorts: []uint16{0}}, true},
		{"invalid prefix", Config{ProxyUID: 1, InboundSkipCIDRs: []netip.Prefix{{}}}, true},
		{"mapped prefix", Config{ProxyUID: 1, OutboundSkipCIDRs: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}}, true},
		{"both families", Config{ProxyUID: 1, OutboundSkipCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error: %v", err, tt.wantErr)
			}
		})
	}
}
