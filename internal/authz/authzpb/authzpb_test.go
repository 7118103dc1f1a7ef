package authzpb

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rampart-mesh/rampart/internal/authz"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func sample() *authz.WorkloadPolicy {
	return &authz.WorkloadPolicy{
		Namespace:     "shop",
		Default:       authz.DefaultAllowSameNamespace,
		DefaultSource: "NamespacePolicy shop/default",
		TLS: authz.TLSPolicy{
			Mode:   authz.TLSPermissive,
			Ports:  []authz.PortTLS{{Port: 8080, Mode: authz.TLSStrict}, {Port: 9090, Mode: authz.TLSPermissive}},
			Source: "MeshTLSPolicy shop/migrate",
		},
		Policies: []authz.Policy{
			{Namespace: "rampart-system", Name: "block", Action: authz.ActionDeny, Rules: []authz.Rule{{
				From: []authz.Source{{NotNamespaces: []string{"shop"}, IPBlocks: []string{"10.0.0.0/8"}, NotIPBlocks: []string{"10.1.0.0/16"}}},
				To:   []authz.Operation{{Paths: []string{"/admin/**"}, NotMethods: []string{"GET"}}},
			}}},
			{Namespace: "shop", Name: "web", Action: authz.ActionAllow, Rules: []authz.Rule{
				{
					From: []authz.Source{{Principals: []string{"spiffe://td/ns/shop/sa/web"}, NotPrincipals: []string{"*/sa/bad"}, Namespaces: []string{"shop"}}},
					To:   []authz.Operation{{Ports: []uint32{8080}, NotPorts: []uint32{9}, Methods: []string{"GET"}, NotPaths: []string{"/x"}, Hosts: []string{"a.b"}, NotHosts: []string{"c.d"}}},
					When: `"y" in request.headers["x"]`,
				},
				{},
			}},
			{Namespace: "shop", Name: "watch", Action: authz.ActionAudit, Rules: []authz.Rule{{When: "true"}}},
			{Namespace: "shop", Name: "none", Action: authz.ActionAllow},
			{Namespace: "shop", Name: "recommended", Action: authz.ActionAllow, Mode: authz.ModeAudit, Rules: []authz.Rule{{To: []authz.Operation{{Methods: []string{"GET"}}}}}},
		},
		RateLimits: []authz.RateLimit{
			{Policy: "shop/rl", Name: "per-caller", Per: authz.PerSource, RequestsPerSecond: 10, Burst: 20, CoolDown: 30 * time.Second, CoolDownAfter: 3,
				From: []authz.Source{{Principals: []string{"*"}}}, To: []authz.Operation{{Paths: []string{"/api/*"}}}},
			{Policy: "shop/rl", Name: "route", Per: authz.PerRoute, RequestsPerSecond: 1, Burst: 1, To: []authz.Operation{{Paths: []string{"/a"}}, {Paths: []string{"/b"}}}},
			{Policy: "shop/rl", Name: "all", Per: authz.PerOverall, RequestsPerSecond: 100, Burst: 100},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	want := sample()
	// Through the wire, as the proxy receives it.
	b, err := proto.Marshal(ToProto(want))
	if err != nil {
		t.Fatal(err)
	}
	var m meshv1.WorkloadPolicy
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	got, err := FromProto(&m)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("round trip changed the policy (-want +got):\n%s", d)
	}
	if _, err := authz.Compile(got); err != nil {
		t.Errorf("the decoded policy does not compile: %v", err)
	}
}

func TestEnumsAgree(t *testing.T) {
	for _, m := range []authz.DefaultMode{authz.DefaultDenyAll, authz.DefaultAllowSameNamespace, authz.DefaultAllowAuthenticated} {
		name := strings.ToUpper(strings.ReplaceAll(m.String(), "-", "_"))
		if got := meshv1.DefaultAuthorization(m).String(); got != "DEFAULT_AUTHORIZATION_"+name {
			t.Errorf("default %s encodes as %s", m, got)
		}
	}
	for _, m := range []authz.TLSMode{authz.TLSStrict, authz.TLSPermissive} {
		if got := meshv1.TLSMode(m).String(); got != "TLS_MODE_"+m.String() {
			t.Errorf("TLS mode %s encodes as %s", m, got)
		}
	}
	for _, a := range []authz.Action{authz.ActionAllow, authz.ActionDeny, authz.ActionAudit} {
		if got := meshv1.PolicyAction(a).String(); got != "POLICY_ACTION_"+a.String() {
			t.Errorf("action %s encodes as %s", a, got)
		}
	}
	for _, k := range []authz.RateLimitKey{authz.PerSource, authz.PerRoute, authz.PerOverall} {
		if got := meshv1.RateLimitKey(k).String(); got != "RATE_LIMIT_KEY_"+strings.ToUpper(k.String()) {
			t.Errorf("rate limit key %s encodes as %s", k, got)
		}
	}
}

func TestFromProtoRejects(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*meshv1.WorkloadPolicy)
		field string
	}{
		{"unset default", func(m *meshv1.WorkloadPolicy) { m.DefaultAuthorization = 0 }, "authorization.default_authorization"},
		{"unknown default", func(m *meshv1.WorkloadPolicy) { m.DefaultAuthorization = 9 }, "authorization.default_authorization"},
		{"no tls", func(m *meshv1.WorkloadPolicy) { m.Tls = nil }, "authorization.tls"},
		{"unset tls mode", func(m *meshv1.WorkloadPolicy) { m.Tls.Mode = 0 }, "authorization.tls.mode"},
		{"unknown port tls mode", func(m *meshv1.WorkloadPolicy) { m.Tls.Ports[1].Mode = 3 }, "authorization.tls.ports[1].mode"},
		{"nil port", func(m *meshv1.WorkloadPolicy) { m.Tls.Ports[0] = nil }, "authorization.tls.ports[0]"},
		{"nil policy", func(m *meshv1.WorkloadPolicy) { m.Policies[2] = nil }, "authorization.policies[2]"},
		{"unknown action", func(m *meshv1.WorkloadPolicy) { m.Policies[0].Action = -1 }, "authorization.policies[0].action"},
		{"unknown mode", func(m *meshv1.WorkloadPolicy) { m.Policies[4].Mode = 3 }, "authorization.policies[4].mode"},
		{"nil rule", func(m *meshv1.WorkloadPolicy) { m.Policies[1].Rules[1] = nil }, "authorization.policies[1].rules[1]"},
		{"nil source", func(m *meshv1.WorkloadPolicy) { m.Policies[1].Rules[0].From[0] = nil }, "authorization.policies[1].rules[0].from[0]"},
		{"nil operation", func(m *meshv1.WorkloadPolicy) { m.Policies[1].Rules[0].To[0] = nil }, "authorization.policies[1].rules[0].to[0]"},
		{"nil limit", func(m *meshv1.WorkloadPolicy) { m.RateLimits[1] = nil }, "authorization.rate_limits[1]"},
		{"unset per", func(m *meshv1.WorkloadPolicy) { m.RateLimits[0].Per = 0 }, "authorization.rate_limits[0].per"},
		{"negative cool-down", func(m *meshv1.WorkloadPolicy) { m.RateLimits[0].CoolDown = durationpb.New(-time.Second) }, "authorization.rate_limits[0].cool_down"},
		{"invalid cool-down", func(m *meshv1.WorkloadPolicy) {
			m.RateLimits[0].CoolDown = &durationpb.Duration{Seconds: 1, Nanos: -1}
		}, "authorization.rate_limits[0].cool_down"},
		{"nil limit source", func(m *meshv1.WorkloadPolicy) { m.RateLimits[0].From[0] = nil }, "authorization.rate_limits[0].from[0]"},
		{"nil limit operation", func(m *meshv1.WorkloadPolicy) { m.RateLimits[0].To[0] = nil }, "authorization.rate_limits[0].to[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ToProto(sample())
			tt.edit(m)
			_, err := FromProto(m)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), tt.field+":") {
				t.Errorf("error %q does not start with %q", err, tt.field+":")
			}
		})
	}
	if _, err := FromProto(nil); err == nil {
		t.Error("a missing policy was accepted")
	}
	if ToProto(nil) != nil {
		t.Error("ToProto(nil) is not nil")
	}
}

// TestFromProtoRejectsUnknownFields: a field added by a newer controller
// may restrict a rule; a proxy that does not know it must refuse the
// policy rather than enforce a broader one.
func TestFromProtoRejectsUnknownFields(t *testing.T) {
	// Field 99 of Operation, as a newer controller might send it.
	unknown := protowire.AppendTag(nil, 99, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "/only-this")
	for _, tt := range []struct {
		name string
		edit func(*meshv1.WorkloadPolicy)
		path string
	}{
		{"top level", func(m *meshv1.WorkloadPolicy) { m.ProtoReflect().SetUnknown(unknown) }, "authorization:"},
		{"in an operation", func(m *meshv1.WorkloadPolicy) {
			m.Policies[1].Rules[0].To[0].ProtoReflect().SetUnknown(unknown)
		}, "authorization.policies[1].rules[0].to[0]:"},
		{"in a rate limit", func(m *meshv1.WorkloadPolicy) { m.RateLimits[2].ProtoReflect().SetUnknown(unknown) }, "authorization.rate_limits[2]:"},
		{"in the TLS policy", func(m *meshv1.WorkloadPolicy) { m.Tls.Ports[0].ProtoReflect().SetUnknown(unknown) }, "authorization.tls.ports[0]:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := ToProto(sample())
			tt.edit(m)
			// Through the wire, as the proxy receives it.
			b, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var got meshv1.WorkloadPolicy
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			_, err = FromProto(&got)
			if err == nil || !strings.HasPrefix(err.Error(), tt.path) {
				t.Errorf("FromProto = %v, want an error at %s", err, tt.path)
			}
		})
	}
}

// TestModeOnTheWire: ENFORCE is left unset, so that a proxy that predates
// the mode field accepts the policies it enforces; ENFORCE sent explicitly
// decodes as ENFORCE.
func TestModeOnTheWire(t *testing.T) {
	m := ToProto(sample())
	for i, p := range m.GetPolicies() {
		want := meshv1.PolicyMode_POLICY_MODE_UNSPECIFIED
		if p.GetName() == "recommended" {
			want = meshv1.PolicyMode_POLICY_MODE_AUDIT
		}
		if p.GetMode() != want {
			t.Errorf("policies[%d] (%s): mode %v, want %v", i, p.GetName(), p.GetMode(), want)
		}
	}
	m.Policies[0].Mode = meshv1.PolicyMode_POLICY_MODE_ENFORCE
	got, err := FromProto(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.Policies[0].Mode != authz.ModeEnforce || got.Policies[4].Mode != authz.ModeAudit {
		t.Errorf("modes decoded as %v and %v, want ENFORCE and AUDIT", got.Policies[0].Mode, got.Policies[4].Mode)
	}
}
