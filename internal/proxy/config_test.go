package proxy

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

var self = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")

func goodConfig() *meshv1.ProxyConfig {
	return &meshv1.ProxyConfig{
		Version:  "v1",
		SpiffeId: self.String(),
		Services: []*meshv1.Service{{
			Name: "orders", Namespace: "shop",
			Ports: []*meshv1.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
			Endpoints: []*meshv1.Endpoint{{
				Address: "127.0.0.1:15008", SpiffeId: "spiffe://example.org/ns/shop/sa/orders", Workload: "orders-1",
			}},
		}},
		Inbound: []*meshv1.InboundPort{{Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*meshv1.ProxyConfig)
		wantErr string
	}{
		{"good", func(*meshv1.ProxyConfig) {}, ""},
		{"for another proxy", func(c *meshv1.ProxyConfig) { c.SpiffeId = "spiffe://example.org/ns/shop/sa/orders" }, "configuration is for"},
		{"port zero", func(c *meshv1.ProxyConfig) { c.Services[0].Ports[0].Port = 0 }, "out of range"},
		{"target port too big", func(c *meshv1.ProxyConfig) { c.Services[0].Ports[0].TargetPort = 70000 }, "out of range"},
		{"no protocol", func(c *meshv1.ProxyConfig) { c.Services[0].Ports[0].Protocol = 0 }, "no known protocol"},
		{"unknown protocol", func(c *meshv1.ProxyConfig) { c.Services[0].Ports[0].Protocol = 42 }, "no known protocol"},
		{"bad endpoint identity", func(c *meshv1.ProxyConfig) { c.Services[0].Endpoints[0].SpiffeId = "orders" }, "endpoint"},
		{"bad endpoint address", func(c *meshv1.ProxyConfig) { c.Services[0].Endpoints[0].Address = "127.0.0.1" }, "not host:port"},
		{"inbound port zero", func(c *meshv1.ProxyConfig) { c.Inbound[0].Port = 0 }, "inbound port"},
		{"inbound without protocol", func(c *meshv1.ProxyConfig) { c.Inbound[0].Protocol = 0 }, "inbound port 8080 has no known protocol"},
		{"addresses", func(c *meshv1.ProxyConfig) {
			c.Services[0].Addresses = []string{"10.96.0.10", "fd00::10"}
			c.Services[0].Endpoints[0].Ip = "10.0.0.7"
			c.Settings = &meshv1.Settings{Egress: meshv1.EgressMode_EGRESS_MESH_ONLY}
		}, ""},
		{"service address not an IP", func(c *meshv1.ProxyConfig) { c.Services[0].Addresses = []string{"orders"} }, "not a unicast"},
		{"loopback service address", func(c *meshv1.ProxyConfig) { c.Services[0].Addresses = []string{"127.0.0.1"} }, "not a unicast"},
		{"zoned endpoint ip", func(c *meshv1.ProxyConfig) { c.Services[0].Endpoints[0].Ip = "fe80::1%eth0" }, "not a unicast"},
		{"unspecified endpoint ip", func(c *meshv1.ProxyConfig) { c.Services[0].Endpoints[0].Ip = "0.0.0.0" }, "not a unicast"},
		{"unknown egress mode", func(c *meshv1.ProxyConfig) { c.Settings = &meshv1.Settings{Egress: 7} }, "unknown egress mode"},
		{"bad bundle", func(c *meshv1.ProxyConfig) { c.TrustBundle = [][]byte{[]byte("junk")} }, "trust bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodConfig()
			tt.mutate(c)
			_, err := validateConfig(c, self)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// FuzzValidateConfig feeds arbitrary control-plane messages to the check
// that guards the proxy: it must never panic.
func FuzzValidateConfig(f *testing.F) {
	b, _ := proto.Marshal(goodConfig())
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c meshv1.ProxyConfig
		if proto.Unmarshal(data, &c) != nil {
			return
		}
		validateConfig(&c, self) //nolint:errcheck // only panics matter
	})
}

func TestBackoffStaysWithinBounds(t *testing.T) {
	b := backoff{min: 100, max: 1000}
	for i := range 20 {
		d := b.next()
		if d < 50 || d > 1000 {
			t.Fatalf("step %d: %v out of [min/2, max]", i, d)
		}
	}
	b.reset()
	if d := b.next(); d > 100 {
		t.Fatalf("after reset: %v, want <= min", d)
	}
}
