package v1alpha1

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/internal/authz"
)

const spiffeWeb = "spiffe://rampart.local/ns/shop/sa/web"

func validAuthorizationPolicy() *AuthorizationPolicy {
	return &AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindAuthorizationPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: "orders-api", Namespace: "shop"},
		Spec: AuthorizationPolicySpec{
			Selector: &WorkloadSelector{MatchLabels: map[string]string{"app": "orders"}},
			Action:   ActionAllow,
			Rules: []AuthorizationRule{{
				From: []RuleFrom{{Principals: []string{spiffeWeb}}},
				To:   []RuleTo{{Methods: []string{"GET"}, Paths: []string{"/orders/{id}"}}},
				When: `request.headers["x-tenant"].exists(t, t == "acme")`,
			}},
		},
	}
}

// checkErrors compares the FieldErrors of err with want, each message by
// prefix.
func checkErrors(t *testing.T, err error, want FieldErrors) {
	t.Helper()
	got := fieldErrors(t, err)
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i := range want {
		if got[i].Path != want[i].Path || !strings.HasPrefix(got[i].Msg, want[i].Msg) {
			t.Errorf("error %d = %s: %s\nwant %s: %s...", i, got[i].Path, got[i].Msg, want[i].Path, want[i].Msg)
		}
	}
}

func TestAuthorizationPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*AuthorizationPolicy)
		want   FieldErrors
	}{
		{name: "valid", mutate: func(*AuthorizationPolicy) {}},
		{name: "valid without selector or namespace", mutate: func(p *AuthorizationPolicy) { p.Spec.Selector, p.Namespace = nil, "" }},
		{name: "allow without rules allows nothing", mutate: func(p *AuthorizationPolicy) { p.Spec.Rules = nil }},
		{name: "empty rule", mutate: func(p *AuthorizationPolicy) { p.Spec.Rules = []AuthorizationRule{{}} }},
		{name: "no action", mutate: func(p *AuthorizationPolicy) { p.Spec.Action = "" },
			want: FieldErrors{{Path: "spec.action", Msg: "is required: ALLOW, DENY or AUDIT"}}},
		{name: "bad action", mutate: func(p *AuthorizationPolicy) { p.Spec.Action = "allow" },
			want: FieldErrors{{Path: "spec.action", Msg: `must be ALLOW, DENY or AUDIT, not "allow"`}}},
		{name: "mode ENFORCE", mutate: func(p *AuthorizationPolicy) { p.Spec.Mode = ModeEnforce }},
		{name: "mode AUDIT", mutate: func(p *AuthorizationPolicy) { p.Spec.Mode = ModeAudit }},
		{name: "deny in mode AUDIT", mutate: func(p *AuthorizationPolicy) { p.Spec.Action, p.Spec.Mode = ActionDeny, ModeAudit }},
		{name: "bad mode", mutate: func(p *AuthorizationPolicy) { p.Spec.Mode = "audit" },
			want: FieldErrors{{Path: "spec.mode", Msg: `must be ENFORCE or AUDIT (or left out, which is ENFORCE), not "audit"`}}},
		{name: "mode DRYRUN", mutate: func(p *AuthorizationPolicy) { p.Spec.Mode = "DRYRUN" },
			want: FieldErrors{{Path: "spec.mode", Msg: `must be ENFORCE or AUDIT (or left out, which is ENFORCE), not "DRYRUN"`}}},
		{name: "bad mode and bad action", mutate: func(p *AuthorizationPolicy) { p.Spec.Action, p.Spec.Mode = "permit", "shadow" },
			want: FieldErrors{
				{Path: "spec.action", Msg: `must be ALLOW, DENY or AUDIT, not "permit"`},
				{Path: "spec.mode", Msg: `must be ENFORCE or AUDIT (or left out, which is ENFORCE), not "shadow"`},
			}},
		{name: "deny without rules", mutate: func(p *AuthorizationPolicy) { p.Spec.Action, p.Spec.Rules = ActionDeny, nil },
			want: FieldErrors{{Path: "spec.rules", Msg: "a DENY policy without rules matches nothing"}}},
		{name: "audit without rules", mutate: func(p *AuthorizationPolicy) { p.Spec.Action, p.Spec.Rules = ActionAudit, nil },
			want: FieldErrors{{Path: "spec.rules", Msg: "a AUDIT policy without rules matches nothing"}}},
		{name: "wrong kind", mutate: func(p *AuthorizationPolicy) { p.Kind = "Policy" },
			want: FieldErrors{{Path: "kind", Msg: `must be "AuthorizationPolicy"`}}},
		{name: "no name", mutate: func(p *AuthorizationPolicy) { p.Name = "" },
			want: FieldErrors{{Path: "metadata.name", Msg: "is required"}}},
		{name: "bad selector", mutate: func(p *AuthorizationPolicy) { p.Spec.Selector.MatchLabels["bad key!"] = "x" },
			want: FieldErrors{{Path: "spec.selector.matchLabels[bad key!]", Msg: "invalid label key"}}},
		{name: "rule errors", mutate: func(p *AuthorizationPolicy) {
			p.Spec.Rules = append(p.Spec.Rules, AuthorizationRule{
				From: []RuleFrom{{Principals: []string{"web"}, IPBlocks: []string{"10.0.0.1/8"}}, {}},
				To:   []RuleTo{{Ports: []int32{0, 70000, 80}, NotPorts: []int32{80}, Methods: []string{"get"}, Paths: []string{"/a/*/b"}, NotPaths: []string{"/x", "/x"}, Hosts: []string{"a b"}}},
				When: "request.nope",
			})
		}, want: FieldErrors{
			{Path: "spec.rules[1].from[0].principals[0]", Msg: `"web" is matched against the whole SPIFFE ID`},
			{Path: "spec.rules[1].from[0].ipBlocks[0]", Msg: `"10.0.0.1/8" has bits set after the prefix length: did you mean 10.0.0.0/8?`},
			{Path: "spec.rules[1].from[1]", Msg: "is empty, and would match every source"},
			{Path: "spec.rules[1].to[0].ports[0]", Msg: "must be between 1 and 65535"},
			{Path: "spec.rules[1].to[0].ports[1]", Msg: "must be between 1 and 65535"},
			{Path: "spec.rules[1].to[0].ports[0]", Msg: "can never match: 80 is also in notPorts"},
			{Path: "spec.rules[1].to[0].methods[0]", Msg: `"get" methods are case-sensitive and written in upper case: write "GET"`},
			{Path: "spec.rules[1].to[0].paths[0]", Msg: `"/a/*/b" '*' may only be`},
			{Path: "spec.rules[1].to[0].notPaths[1]", Msg: `duplicate entry "/x" (also entry 0)`},
			{Path: "spec.rules[1].to[0].hosts[0]", Msg: `"a b" is not a host name`},
			{Path: "spec.rules[1].when", Msg: "invalid CEL: 1:8: undeclared reference to 'request.nope'"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validAuthorizationPolicy()
			tt.mutate(p)
			checkErrors(t, p.Validate(), tt.want)
		})
	}
}

func TestAuthorizationPolicyToAuthz(t *testing.T) {
	p := validAuthorizationPolicy()
	p.Namespace = ""
	p.Spec.Rules[0].To[0].Ports = []int32{80, -1}
	got := p.ToAuthz()
	want := authz.Policy{
		Namespace: DefaultNamespace, Name: "orders-api", Action: authz.ActionAllow,
		Rules: []authz.Rule{{
			From: []authz.Source{{Principals: []string{spiffeWeb}}},
			To:   []authz.Operation{{Ports: []uint32{80, 0}, Methods: []string{"GET"}, Paths: []string{"/orders/{id}"}}},
			When: p.Spec.Rules[0].When,
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ToAuthz (-want +got):\n%s", diff)
	}
	for mode, want := range map[PolicyMode]authz.Mode{"": authz.ModeEnforce, ModeEnforce: authz.ModeEnforce, ModeAudit: authz.ModeAudit} {
		p.Spec.Mode = mode
		if got := p.ToAuthz().Mode; got != want {
			t.Errorf("ToAuthz with mode %q: %v, want %v", mode, got, want)
		}
	}
	// An unknown mode must not become ENFORCE: Compile refuses it.
	p.Spec.Mode = "audit"
	if got := p.ToAuthz().Mode; got == authz.ModeEnforce || got == authz.ModeAudit {
		t.Errorf("ToAuthz with mode \"audit\": %v, want a mode Compile refuses", got)
	}
}

// TestConversionIsComplete fails when a field is added to RuleFrom or
// RuleTo and not carried into the compiled form, where it would be
// silently ignored.
func TestConversionIsComplete(t *testing.T) {
	fill := func(v reflect.Value) {
		for i := range v.NumField() {
			f := v.Field(i)
			switch f.Interface().(type) {
			case []string:
				f.Set(reflect.ValueOf([]string{"x"}))
			case []int32:
				f.Set(reflect.ValueOf([]int32{80}))
			default:
				t.Fatalf("%s.%s: unhandled type %s", v.Type(), v.Type().Field(i).Name, f.Type())
			}
		}
	}
	var from RuleFrom
	var to RuleTo
	fill(reflect.ValueOf(&from).Elem())
	fill(reflect.ValueOf(&to).Elem())
	src := convertFrom([]RuleFrom{from})[0]
	op := convertTo([]RuleTo{to})[0]
	for _, v := range []reflect.Value{reflect.ValueOf(src), reflect.ValueOf(op)} {
		if v.NumField() != reflect.ValueOf(from).NumField() && v.NumField() != reflect.ValueOf(to).NumField() {
			t.Errorf("%s has %d fields; the resource types differ", v.Type(), v.NumField())
		}
		for i := range v.NumField() {
			if v.Field(i).Len() == 0 {
				t.Errorf("%s.%s is not set by the conversion", v.Type(), v.Type().Field(i).Name)
			}
		}
	}
	rule := reflect.TypeFor[AuthorizationRule]()
	if rule.NumField() != reflect.TypeFor[authz.Rule]().NumField() {
		t.Errorf("AuthorizationRule has %d fields, authz.Rule %d", rule.NumField(), reflect.TypeFor[authz.Rule]().NumField())
	}
}

func validMeshTLSPolicy() *MeshTLSPolicy {
	return &MeshTLSPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindMeshTLSPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop"},
		Spec: MeshTLSPolicySpec{
			Selector: &WorkloadSelector{MatchLabels: map[string]string{"app": "payments"}},
			Mode:     TLSStrict,
			Ports:    []PortTLS{{Port: 9100, Mode: TLSPermissive}},
		},
	}
}

func TestMeshTLSPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*MeshTLSPolicy)
		want   FieldErrors
	}{
		{name: "valid", mutate: func(*MeshTLSPolicy) {}},
		{name: "ports only", mutate: func(p *MeshTLSPolicy) { p.Spec.Mode = "" }},
		{name: "namespace-wide", mutate: func(p *MeshTLSPolicy) { p.Spec.Selector, p.Spec.Ports = nil, nil }},
		{name: "no mode, no selector", mutate: func(p *MeshTLSPolicy) { p.Spec.Selector, p.Spec.Ports, p.Spec.Mode = nil, nil, "" },
			want: FieldErrors{{Path: "spec.mode", Msg: "is required in a policy without a selector"}}},
		{name: "no mode, no ports", mutate: func(p *MeshTLSPolicy) { p.Spec.Ports, p.Spec.Mode = nil, "" },
			want: FieldErrors{{Path: "spec.mode", Msg: "is required when no ports are set"}}},
		{name: "bad mode", mutate: func(p *MeshTLSPolicy) { p.Spec.Mode = "DISABLE" },
			want: FieldErrors{{Path: "spec.mode", Msg: `must be STRICT or PERMISSIVE, not "DISABLE"`}}},
		{name: "ports without selector", mutate: func(p *MeshTLSPolicy) { p.Spec.Selector = &WorkloadSelector{} },
			want: FieldErrors{{Path: "spec.ports", Msg: "need a selector"}}},
		{name: "bad ports", mutate: func(p *MeshTLSPolicy) {
			p.Spec.Ports = []PortTLS{{Port: 0, Mode: TLSStrict}, {Port: 80, Mode: "strict"}, {Port: 80, Mode: TLSStrict}}
		}, want: FieldErrors{
			{Path: "spec.ports[0].port", Msg: "must be between 1 and 65535"},
			{Path: "spec.ports[1].mode", Msg: `must be STRICT or PERMISSIVE, not "strict"`},
			{Path: "spec.ports[2].port", Msg: "duplicate port 80 (also spec.ports[1])"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validMeshTLSPolicy()
			tt.mutate(p)
			checkErrors(t, p.Validate(), tt.want)
		})
	}
}

func TestNamespacePolicyValidate(t *testing.T) {
	for _, tt := range []struct {
		mode DefaultAuthorization
		want FieldErrors
	}{
		{mode: DefaultDenyAll},
		{mode: DefaultAllowSameNamespace},
		{mode: DefaultAllowAuthenticated},
		{mode: "", want: FieldErrors{{Path: "spec.defaultAuthorization", Msg: "is required"}}},
		{mode: "allow-all", want: FieldErrors{{Path: "spec.defaultAuthorization", Msg: `must be deny-all, allow-same-namespace or allow-authenticated, not "allow-all"`}}},
	} {
		p := &NamespacePolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: NamespacePolicySpec{DefaultAuthorization: tt.mode}}
		checkErrors(t, p.Validate(), tt.want)
	}
}

func validRateLimitPolicy() *RateLimitPolicy {
	return &RateLimitPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindRateLimitPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop"},
		Spec: RateLimitPolicySpec{Limits: []RateLimit{
			{Name: "login", Per: PerSource, RequestsPerSecond: 1, Burst: 5,
				Match:    RateLimitMatch{To: []RuleTo{{Methods: []string{"POST"}, Paths: []string{"/login"}}}},
				OnExceed: &RateLimitExceed{CoolDown: metav1.Duration{Duration: 5 * time.Minute}}},
			{Name: "routes", Per: PerRoute, RequestsPerSecond: 50, Match: RateLimitMatch{To: []RuleTo{{Paths: []string{"/a"}}, {Paths: []string{"/b/**"}}}}},
			{Name: "all", Per: PerOverall, RequestsPerSecond: 1000},
		}},
	}
}

func TestRateLimitPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*RateLimitPolicy)
		want   FieldErrors
	}{
		{name: "valid", mutate: func(*RateLimitPolicy) {}},
		{name: "no limits", mutate: func(p *RateLimitPolicy) { p.Spec.Limits = nil },
			want: FieldErrors{{Path: "spec.limits", Msg: "at least one limit is required"}}},
		{name: "names", mutate: func(p *RateLimitPolicy) {
			p.Spec.Limits[0].Name = ""
			p.Spec.Limits[1].Name = "All"
			p.Spec.Limits[2].Name = "login"
			p.Spec.Limits = append(p.Spec.Limits, RateLimit{Name: "login", Per: PerOverall, RequestsPerSecond: 1})
		}, want: FieldErrors{
			{Path: "spec.limits[0].name", Msg: "is required"},
			{Path: "spec.limits[1].name", Msg: `invalid name "All"`},
			{Path: "spec.limits[3].name", Msg: `duplicate limit "login" (also spec.limits[2])`},
		}},
		{name: "per", mutate: func(p *RateLimitPolicy) {
			p.Spec.Limits[0].Per = ""
			p.Spec.Limits[1].Match.To = nil
			p.Spec.Limits[2].Per = "client"
		}, want: FieldErrors{
			{Path: "spec.limits[0].per", Msg: "is required: source, route or overall"},
			{Path: "spec.limits[1].match.to", Msg: "per: route needs routes"},
			{Path: "spec.limits[2].per", Msg: `must be source, route or overall, not "client"`},
		}},
		{name: "rates", mutate: func(p *RateLimitPolicy) {
			p.Spec.Limits[0].RequestsPerSecond = 0
			p.Spec.Limits[1].Burst = -1
			p.Spec.Limits[2].RequestsPerSecond = 1 << 21
		}, want: FieldErrors{
			{Path: "spec.limits[0].requestsPerSecond", Msg: "must be between 1 and 1048576"},
			{Path: "spec.limits[1].burst", Msg: "must be between 1 and 1048576"},
			{Path: "spec.limits[2].requestsPerSecond", Msg: "must be between 1 and 1048576"},
		}},
		{name: "on exceed", mutate: func(p *RateLimitPolicy) {
			p.Spec.Limits[0].OnExceed = &RateLimitExceed{ConsecutiveWindows: -1, CoolDown: metav1.Duration{Duration: 25 * time.Hour}}
			p.Spec.Limits[2].OnExceed = &RateLimitExceed{CoolDown: metav1.Duration{Duration: time.Minute}}
		}, want: FieldErrors{
			{Path: "spec.limits[0].onExceed.consecutiveWindows", Msg: "must be between 1 and 3600"},
			{Path: "spec.limits[0].onExceed.coolDown", Msg: "must be between 1s and 24h"},
			{Path: "spec.limits[2].onExceed", Msg: "cuts a source off, so it needs per: source"},
		}},
		{name: "match", mutate: func(p *RateLimitPolicy) {
			p.Spec.Limits[0].Match.From = []RuleFrom{{Namespaces: []string{"Shop"}}}
			p.Spec.Limits[0].Match.To[0].Paths = []string{"login"}
		}, want: FieldErrors{
			{Path: "spec.limits[0].match.from[0].namespaces[0]", Msg: `"Shop" namespaces are lower-case`},
			{Path: "spec.limits[0].match.to[0].paths[0]", Msg: `"login" must start with '/'`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validRateLimitPolicy()
			tt.mutate(p)
			err := p.Validate()
			checkErrors(t, err, tt.want)
			if err == nil {
				// What validates, the rate limiter accepts.
				p.Default()
				for _, l := range p.ToAuthz() {
					if _, err := authz.CompileRateLimit(&l); err != nil {
						t.Errorf("valid limit %s rejected by authz: %v", l.Name, err)
					}
				}
			}
		})
	}
}

func TestPolicyDefault(t *testing.T) {
	p := validRateLimitPolicy()
	p.Namespace = ""
	p.Default()
	if p.Namespace != DefaultNamespace || p.Spec.Limits[1].Burst != 50 || p.Spec.Limits[0].Burst != 5 || p.Spec.Limits[0].OnExceed.ConsecutiveWindows != DefaultConsecutiveWindows {
		t.Errorf("Default: %+v", p)
	}
	got := p.ToAuthz()
	if got[0].Policy != "default/orders" || got[0].CoolDown != 5*time.Minute || got[0].CoolDownAfter != 3 || got[0].Per != authz.PerSource || got[2].Per != authz.PerOverall {
		t.Errorf("ToAuthz: %+v", got)
	}
	for _, o := range []interface{ Default() }{&AuthorizationPolicy{}, &MeshTLSPolicy{}, &NamespacePolicy{}} {
		o.Default()
		if ns := reflect.ValueOf(o).Elem().FieldByName("ObjectMeta").FieldByName("Namespace").String(); ns != DefaultNamespace {
			t.Errorf("%T.Default: namespace %q", o, ns)
		}
	}
}

func TestSelects(t *testing.T) {
	labels := map[string]string{"app": "orders", "tier": "api"}
	for _, tt := range []struct {
		s    *WorkloadSelector
		want bool
	}{
		{nil, true},
		{&WorkloadSelector{}, true},
		{&WorkloadSelector{MatchLabels: map[string]string{"app": "orders"}}, true},
		{&WorkloadSelector{MatchLabels: map[string]string{"app": "orders", "tier": "api"}}, true},
		{&WorkloadSelector{MatchLabels: map[string]string{"app": "web"}}, false},
		{&WorkloadSelector{MatchLabels: map[string]string{"app": "orders", "zone": "a"}}, false},
		{&WorkloadSelector{MatchLabels: map[string]string{"zone": ""}}, false},
	} {
		if got := tt.s.Selects(labels); got != tt.want {
			t.Errorf("%+v.Selects = %v, want %v", tt.s, got, tt.want)
		}
	}
}
