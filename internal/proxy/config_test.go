package proxy

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/authzpb"
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
		Inbound:       []*meshv1.InboundPort{{Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		Authorization: authzpb.ToProto(goodPolicy()),
	}
}

func goodPolicy() *authz.WorkloadPolicy {
	return &authz.WorkloadPolicy{
		Namespace: "shop", Default: authz.DefaultAllowAuthenticated, DefaultSource: "built-in",
		TLS: authz.TLSPolicy{Mode: authz.TLSStrict, Source: "built-in"},
		Policies: []authz.Policy{{Namespace: "shop", Name: "no-admin", Action: authz.ActionDeny, Rules: []authz.Rule{
			{To: []authz.Operation{{Paths: []string{"/admin/**"}}}},
		}}},
		RateLimits: []authz.RateLimit{{Policy: "shop/limits", Name: "all", Per: authz.PerOverall, RequestsPerSecond: 100, Burst: 100}},
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*meshv1.ProxyConfig)
		wantErr    string
		wantReason string
	}{
		{"good", func(*meshv1.ProxyConfig) {}, "", ""},
		{"for another proxy", func(c *meshv1.ProxyConfig) { c.SpiffeId = "spiffe://example.org/ns/shop/sa/orders" }, "configuration is for", "spiffe_id"},
		{"port zero", func(c *meshv1.ProxyConfig) { c.Services[0].Ports[0].Port = 0 }, "out of range", "services"},
		{"target port too big", func(c *meshv1.ProxyConfig) { c.Services[0].Ports[0].TargetPort = 70000 }, "out of range", "services"},
		{"no protocol", func(c *meshv1.ProxyConfig) { c.Services[0].Ports[0].Protocol = 0 }, "no known protocol", "services"},
		{"unknown protocol", func(c *meshv1.ProxyConfig) { c.Services[0].Ports[0].Protocol = 42 }, "no known protocol", "services"},
		{"bad endpoint identity", func(c *meshv1.ProxyConfig) { c.Services[0].Endpoints[0].SpiffeId = "orders" }, "endpoint", "services"},
		{"bad endpoint address", func(c *meshv1.ProxyConfig) { c.Services[0].Endpoints[0].Address = "127.0.0.1" }, "not host:port", "services"},
		{"inbound port zero", func(c *meshv1.ProxyConfig) { c.Inbound[0].Port = 0 }, "inbound port", "inbound"},
		{"inbound without protocol", func(c *meshv1.ProxyConfig) { c.Inbound[0].Protocol = 0 }, "inbound port 8080 has no known protocol", "inbound"},
		{"addresses", func(c *meshv1.ProxyConfig) {
			c.Services[0].Addresses = []string{"10.96.0.10", "fd00::10"}
			c.Services[0].Endpoints[0].Ip = "10.0.0.7"
			c.Settings = &meshv1.Settings{Egress: meshv1.EgressMode_EGRESS_MESH_ONLY}
		}, "", ""},
		{"service address not an IP", func(c *meshv1.ProxyConfig) { c.Services[0].Addresses = []string{"orders"} }, "not a unicast", "services"},
		{"loopback service address", func(c *meshv1.ProxyConfig) { c.Services[0].Addresses = []string{"127.0.0.1"} }, "not a unicast", "services"},
		{"zoned endpoint ip", func(c *meshv1.ProxyConfig) { c.Services[0].Endpoints[0].Ip = "fe80::1%eth0" }, "not a unicast", "services"},
		{"unspecified endpoint ip", func(c *meshv1.ProxyConfig) { c.Services[0].Endpoints[0].Ip = "0.0.0.0" }, "not a unicast", "services"},
		{"unknown egress mode", func(c *meshv1.ProxyConfig) { c.Settings = &meshv1.Settings{Egress: 7} }, "unknown egress mode", "settings"},
		{"bad bundle", func(c *meshv1.ProxyConfig) { c.TrustBundle = [][]byte{[]byte("junk")} }, "trust bundle", "trust_bundle"},
		{"no authorization", func(c *meshv1.ProxyConfig) { c.Authorization = nil }, "", ""},
		{"authorization without a default", func(c *meshv1.ProxyConfig) { c.Authorization.DefaultAuthorization = 0 },
			"authorization.default_authorization", "authorization"},
		{"authorization without tls", func(c *meshv1.ProxyConfig) { c.Authorization.Tls = nil }, "authorization.tls: missing", "authorization"},
		{"authorization with an unknown action", func(c *meshv1.ProxyConfig) { c.Authorization.Policies[0].Action = 9 },
			"authorization.policies[0].action", "authorization"},
		{"authorization that does not compile", func(c *meshv1.ProxyConfig) { c.Authorization.Policies[0].Rules[0].To[0].Paths = []string{"/a//b"} },
			"authorization.policies[0].rules[0].to[0].paths[0]", "authorization"},
		{"rate limit that does not compile", func(c *meshv1.ProxyConfig) { c.Authorization.RateLimits[0].Burst = 0 },
			"authorization.rateLimits[0].burst", "authorization"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodConfig()
			tt.mutate(c)
			v, err := validateConfig(c, self)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if (v.engine != nil) != (c.Authorization != nil) {
					t.Fatalf("engine %v for authorization %v", v.engine, c.Authorization)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if got := rejectReason(err); got != tt.wantReason {
				t.Fatalf("reason %q, want %q", got, tt.wantReason)
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
