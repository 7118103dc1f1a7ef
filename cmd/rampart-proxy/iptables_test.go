package main

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rampart-mesh/rampart/internal/proxy/iptables"
)

func TestParseIPTablesFlags(t *testing.T) {
	opts := cmp.Options{cmpopts.IgnoreUnexported(iptables.Config{}), cmpopts.EquateComparable(netip.Prefix{})}
	tests := []struct {
		name          string
		args          []string
		want          iptables.Config
		wantUninstall bool
		wantErr       string
	}{
		{
			name: "defaults",
			args: []string{"--proxy-uid=1337"},
			want: iptables.Config{OutboundPort: 15001, InboundPort: 15006, TunnelPort: 15008, AdminPort: 15000, ProxyUID: 1337},
		},
		{
			name: "everything",
			args: []string{
				"--outbound-port=16001", "--inbound-port=16006", "--tunnel-port=16008", "--admin-port=16000",
				"--proxy-uid=1337", "--proxy-gid=1338",
				"--skip-inbound-ports=22, 9090", "--skip-inbound-ports=8443",
				"--skip-outbound-ports=5432",
				"--skip-outbound-cidrs=10.96.0.0/12,169.254.169.254,fd00::/8",
				"--skip-inbound-cidrs=192.168.0.0/16",
				"--dry-run",
			},
			want: iptables.Config{
				OutboundPort: 16001, InboundPort: 16006, TunnelPort: 16008, AdminPort: 16000,
				ProxyUID: 1337, ProxyGID: 1338,
				InboundSkipPorts:  []uint16{22, 9090, 8443},
				OutboundSkipPorts: []uint16{5432},
				OutboundSkipCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("fd00::/8")},
				InboundSkipCIDRs:  []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")},
				DryRun:            true,
			},
		},
		{
			name: "gid only",
			args: []string{"--proxy-gid", "1337"},
			want: iptables.Config{OutboundPort: 15001, InboundPort: 15006, TunnelPort: 15008, AdminPort: 15000, ProxyGID: 1337},
		},
		{
			name:          "uninstall needs no uid",
			args:          []string{"--uninstall", "--dry-run"},
			want:          iptables.Config{OutboundPort: 15001, InboundPort: 15006, TunnelPort: 15008, AdminPort: 15000, DryRun: true},
			wantUninstall: true,
		},
		{name: "uid required", args: nil, wantErr: "--proxy-uid is required"},
		{name: "root refused", args: []string{"--proxy-uid=0"}, wantErr: "non-root"},
		{name: "bad port", args: []string{"--proxy-uid=1", "--outbound-port=70000"}, wantErr: "not a port"},
		{name: "zero port", args: []string{"--proxy-uid=1", "--skip-outbound-ports=0"}, wantErr: "not a port"},
		{name: "bad cidr", args: []string{"--proxy-uid=1", "--skip-outbound-cidrs=10.0.0.0/33"}, wantErr: "not a CIDR"},
		{name: "host bits", args: []string{"--proxy-uid=1", "--skip-inbound-cidrs=10.1.2.3/8"}, wantErr: "did you mean 10.0.0.0/8"},
		{name: "port clash", args: []string{"--proxy-uid=1", "--inbound-port=15001"}, wantErr: "both 15001"},
		{name: "stray argument", args: []string{"--proxy-uid=1", "install"}, wantErr: `unexpected argument "install"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			got, uninstall, err := parseIPTablesFlags(tt.args, &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if uninstall != tt.wantUninstall {
				t.Errorf("uninstall = %v, want %v", uninstall, tt.wantUninstall)
			}
			if diff := cmp.Diff(tt.want, got, opts); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseIPTablesFlagsHelp(t *testing.T) {
	var out bytes.Buffer
	_, _, err := parseIPTablesFlags([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, f := range []string{"outbound-port", "inbound-port", "tunnel-port", "admin-port", "proxy-uid", "proxy-gid", "skip-inbound-ports", "skip-outbound-ports", "skip-outbound-cidrs", "skip-inbound-cidrs", "dry-run", "uninstall"} {
		if !strings.Contains(out.String(), "-"+f) {
			t.Errorf("usage does not list --%s:\n%s", f, out.String())
		}
	}
}

// TestRunIPTablesDryRun goes through the subcommand end to end without
// touching the machine.
func TestRunIPTablesDryRun(t *testing.T) {
	if err := runIPTables([]string{"--proxy-uid=1337", "--dry-run"}); err != nil {
		t.Fatal(err)
	}
	if err := runIPTables([]string{"--help"}); err != nil {
		t.Fatalf("--help: %v", err)
	}
}
