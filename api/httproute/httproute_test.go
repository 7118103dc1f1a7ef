package httproute

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/proxy/route"
)

// valid returns a small valid route: web's requests to web-v2.
func valid() *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: APIVersion, Kind: Kind},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "web",
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{
				BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-v2", Port: ptr(gatewayv1.PortNumber(80))},
				}}},
			}},
		},
	}
}

func TestDefault(t *testing.T) {
	r := valid()
	r.Namespace = ""
	r.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{
		{Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-a", Value: "1"}}},
		{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchExact), Value: ptr("/x")}},
	}
	Default(r)
	want := []gatewayv1.HTTPRouteMatch{
		{
			Path:    &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchPathPrefix), Value: ptr("/")},
			Headers: []gatewayv1.HTTPHeaderMatch{{Type: ptr(gatewayv1.HeaderMatchExact), Name: "x-a", Value: "1"}},
		},
		{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchExact), Value: ptr("/x")}},
	}
	if diff := cmp.Diff(want, r.Spec.Rules[0].Matches); diff != "" {
		t.Errorf("matches (-want +got):\n%s", diff)
	}
	b := r.Spec.Rules[0].BackendRefs[0]
	if *b.Group != "" || *b.Kind != "Service" || *b.Weight != 1 || r.Namespace != "default" {
		t.Errorf("backend %+v, namespace %q: want group \"\", kind Service, weight 1, namespace default", b, r.Namespace)
	}
	// A rule without matches gets one, on "/"; parentRefs are left alone.
	r = valid()
	Default(r)
	if m := r.Spec.Rules[0].Matches; len(m) != 1 || *m[0].Path.Value != "/" || *m[0].Path.Type != gatewayv1.PathMatchPathPrefix {
		t.Errorf("default matches = %+v, want one PathPrefix \"/\"", m)
	}
	r.Spec.ParentRefs[0].Group, r.Spec.ParentRefs[0].Kind = nil, nil
	Default(r)
	if r.Spec.ParentRefs[0].Group != nil || r.Spec.ParentRefs[0].Kind != nil {
		t.Error("Default filled a parentRef's group or kind")
	}
}

// TestValidate covers what localconfig's testdata does not; it tests every
// message Validate gives with its file and line.
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(r *gatewayv1.HTTPRoute)
		want   []string // "path: message" substrings, in order; none for valid
	}{
		{"valid", func(*gatewayv1.HTTPRoute) {}, nil},
		{"core group and zero timeouts", func(r *gatewayv1.HTTPRoute) {
			r.Spec.ParentRefs[0].Group = ptr(gatewayv1.Group("core"))
			r.Spec.Rules[0].Timeouts = &gatewayv1.HTTPRouteTimeouts{Request: ptr(gatewayv1.Duration("0s")), BackendRequest: ptr(gatewayv1.Duration("1h"))}
		}, nil},
		{"idle timeout and another tool's annotation", func(r *gatewayv1.HTTPRoute) {
			r.Annotations = map[string]string{IdleTimeoutAnnotation: "1h30m", "example.com/owner": "web-team"}
		}, nil},
		{"idle timeout annotations", func(r *gatewayv1.HTTPRoute) {
			r.Annotations = map[string]string{
				IdleTimeoutAnnotation:      "10 seconds",
				"rampart.dev/idle-timout":  "10s",
				"rampart.dev/retry-budget": "20%",
				"timeout.linkerd.io/idle":  "10s",
			}
		}, []string{
			`metadata.annotations[rampart.dev/idle-timeout]: invalid duration "10 seconds": want a duration from 1s to 24h, such as 30s, 5m or 1h30m`,
			`metadata.annotations[rampart.dev/idle-timout]: unknown annotation "rampart.dev/idle-timout": the one Rampart reads on an HTTPRoute is rampart.dev/idle-timeout`,
			`metadata.annotations[rampart.dev/retry-budget]: unknown annotation`,
		}},
		{"idle timeout too short", func(r *gatewayv1.HTTPRoute) {
			r.Annotations = map[string]string{IdleTimeoutAnnotation: "999ms"}
		}, []string{`metadata.annotations[rampart.dev/idle-timeout]: "999ms" is not within 1s..24h`}},
		{"idle timeout too long", func(r *gatewayv1.HTTPRoute) {
			r.Annotations = map[string]string{IdleTimeoutAnnotation: "24h0m1s"}
		}, []string{`metadata.annotations[rampart.dev/idle-timeout]: "24h0m1s" is not within 1s..24h`}},
		{"path values", func(r *gatewayv1.HTTPRoute) {
			for _, v := range []string{"/a//b", "/a/./b", "/a/..", "/a%2fb", "/a b", "/a#b", "/" + strings.Repeat("a", 1024), "/%41/ok~"} {
				r.Spec.Rules[0].Matches = append(r.Spec.Rules[0].Matches, gatewayv1.HTTPRouteMatch{
					Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchExact), Value: ptr(v)},
				})
			}
		}, []string{
			`matches[0].path.value: "/a//b" must not contain "//"`,
			`matches[1].path.value: "/a/./b" must not contain "." or ".." segments`,
			`matches[2].path.value: "/a/.." must not contain "." or ".." segments`,
			`matches[3].path.value: "/a%2fb" must not contain an encoded "/" (%2F)`,
			`matches[4].path.value: "/a b" holds a character that is not allowed in a path`,
			`matches[5].path.value: "/a#b" holds a character`,
			`matches[6].path.value: is 1025 bytes long, at most 1024 are allowed`,
		}},
		{"header match values", func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{{Headers: []gatewayv1.HTTPHeaderMatch{
				{Name: "a", Value: "x  y"}, {Name: "b", Value: ""}, {Name: "c d", Value: "1"}, {Name: "e", Value: "ok\tok"},
			}}}
		}, []string{
			`headers[0].value: "x  y" must be printable ASCII, with single spaces or tabs between words`,
			`headers[1].value: is required`,
			`headers[2].name: "c d" is not an HTTP header name`,
		}},
		{"header modifier", func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{
				Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
				RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{
					Set:    []gatewayv1.HTTPHeader{{Name: "x-a", Value: "a\r\nb"}, {Name: "Host", Value: "h"}},
					Add:    []gatewayv1.HTTPHeader{{Name: "x-b", Value: " padded"}, {Name: "rampart_client_id", Value: "x"}},
					Remove: []string{"X-B", "te"},
				},
				URLRewrite: &gatewayv1.HTTPURLRewriteFilter{},
			}, {Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier}, {Type: "Magic"}, {}}
		}, []string{
			`filters[0].urlRewrite: must not be set when type is RequestHeaderModifier`,
			`filters[0].requestHeaderModifier.set[0].value: "a\r\nb" holds a control character`,
			`filters[0].requestHeaderModifier.set[1].name: "Host" is not supported: the Host is not a header field in HTTP/2`,
			`filters[0].requestHeaderModifier.add[0].value: " padded" must not start or end with a space`,
			`filters[0].requestHeaderModifier.add[1].name: "rampart_client_id" is Rampart's own`,
			`filters[0].requestHeaderModifier.remove[0]: "X-B" is also changed by add[0]`,
			`filters[0].requestHeaderModifier.remove[1]: "te" is a hop-by-hop header`,
			`filters[1]: repeats the RequestHeaderModifier of spec.rules[0].filters[0]`,
			`filters[1].requestHeaderModifier: is required when type is RequestHeaderModifier`,
			`filters[2].type: unknown filter type "Magic"`,
			`filters[3].type: is required`,
		}},
		{"empty modifier and backend filters", func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules[0].BackendRefs[0].Filters = []gatewayv1.HTTPRouteFilter{
				{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{}},
				{Type: gatewayv1.HTTPRouteFilterRequestMirror},
			}
		}, []string{
			`backendRefs[0].filters[0].requestHeaderModifier: changes nothing`,
			`backendRefs[0].filters[1].type: RequestMirror is not supported yet`,
		}},
		{"backends", func(r *gatewayv1.HTTPRoute) {
			b := &r.Spec.Rules[0].BackendRefs[0]
			b.Group, b.Name, b.Port, b.Weight = ptr(gatewayv1.Group("multicluster.x-k8s.io")), "Web", ptr(gatewayv1.PortNumber(0)), ptr(int32(-1))
			r.Spec.Rules[0].SessionPersistence = &gatewayv1.SessionPersistence{}
		}, []string{
			`backendRefs[0].group: must be "" (the core group of Service), not "multicluster.x-k8s.io"`,
			`backendRefs[0].name: invalid name "Web"`,
			`backendRefs[0].port: must be between 1 and 65535`,
			`backendRefs[0].weight: must be between 0 and 1000000`,
			`spec.rules[0].sessionPersistence: is not supported`,
		}},
		{"parents", func(r *gatewayv1.HTTPRoute) {
			r.Spec.ParentRefs = append(r.Spec.ParentRefs, gatewayv1.ParentReference{
				Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "", Port: ptr(gatewayv1.PortNumber(70000)),
			}, gatewayv1.ParentReference{
				Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "web", Namespace: ptr(gatewayv1.Namespace("shop")), Port: ptr(gatewayv1.PortNumber(80)),
			})
			r.Spec.UseDefaultGateways = gatewayv1.GatewayDefaultScopeAll
		}, []string{
			`spec.useDefaultGateways: is not supported`,
			`spec.parentRefs[1].name: is required`,
			`spec.parentRefs[1].port: must be between 1 and 65535`,
			`spec.parentRefs[2]: names Service "web" again, as parentRefs[0] does`,
		}},
		{"no parents, type and metadata", func(r *gatewayv1.HTTPRoute) {
			r.Spec.ParentRefs = nil
			r.APIVersion, r.Kind, r.Name = "gateway.networking.k8s.io/v1beta1", "GRPCRoute", ""
		}, []string{
			`apiVersion: must be "gateway.networking.k8s.io/v1", not "gateway.networking.k8s.io/v1beta1"`,
			`kind: must be "HTTPRoute", not "GRPCRoute"`,
			`metadata.name: is required`,
			`spec.parentRefs: is required`,
		}},
		{"limits", func(r *gatewayv1.HTTPRoute) {
			rule := r.Spec.Rules[0]
			rule.Matches = make([]gatewayv1.HTTPRouteMatch, 65)
			r.Spec.Rules = nil
			for range 17 {
				r.Spec.Rules = append(r.Spec.Rules, rule)
			}
		}, []string{
			`spec.rules: has 17 rules, at most 16 are allowed`,
			`spec.rules[0].matches: has 65 matches, at most 64 are allowed`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := valid()
			tt.modify(r)
			err := Validate(r)
			var fes v1alpha1.FieldErrors
			if err != nil && !errors.As(err, &fes) {
				t.Fatalf("Validate() = %T %v, want FieldErrors", err, err)
			}
			var got []string
			for _, fe := range fes {
				got = append(got, fe.Path+": "+fe.Msg)
			}
			i := 0
			for _, g := range got {
				if i < len(tt.want) && strings.Contains(g, tt.want[i]) {
					i++
				}
			}
			if i < len(tt.want) || len(tt.want) == 0 && len(got) > 0 {
				t.Errorf("Validate() problems:\n%s\nwant, in order, problems containing:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	for _, tt := range []struct {
		in   *string // nil: no annotation
		want time.Duration
		ok   bool
	}{
		{nil, 0, true},
		{ptr("1s"), time.Second, true},
		{ptr("90s"), 90 * time.Second, true},
		{ptr("1h30m"), 90 * time.Minute, true},
		{ptr("24h"), 24 * time.Hour, true},
		{ptr("1.5s"), 1500 * time.Millisecond, true},
		{ptr("0s"), 0, false},
		{ptr("500ms"), 0, false},
		{ptr("25h"), 0, false},
		{ptr("-1m"), 0, false},
		{ptr("10"), 0, false},
		{ptr(""), 0, false},
	} {
		r := valid()
		name := "none"
		if tt.in != nil {
			r.Annotations = map[string]string{IdleTimeoutAnnotation: *tt.in}
			name = *tt.in
		}
		got, err := IdleTimeout(r)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("IdleTimeout(%q) = %v, %v; want %v, ok %v", name, got, err, tt.want, tt.ok)
		}
		if verr := Validate(r); (verr == nil) != tt.ok {
			t.Errorf("Validate with idle timeout %q = %v; want ok %v", name, verr, tt.ok)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"10s", 10 * time.Second, true},
		{"1h30m", 90 * time.Minute, true},
		{"500ms", 500 * time.Millisecond, true},
		{"0s", 0, true},
		{"1h1m1s1ms", time.Hour + time.Minute + time.Second + time.Millisecond, true},
		{"99999s", 99999 * time.Second, true},
		{"100000s", 0, false}, // six digits
		{"1h1m1s1ms1ms", 0, false},
		{"1.5s", 0, false},
		{"10", 0, false},
		{"-1s", 0, false},
		{"1us", 0, false},
		{"", 0, false},
	} {
		got, err := ParseDuration(gatewayv1.Duration(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestCompare(t *testing.T) {
	at := func(ns, name string, t time.Time) *gatewayv1.HTTPRoute {
		return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(t)}}
	}
	old, young := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		a, b *gatewayv1.HTTPRoute
		want int
	}{
		{at("shop", "z", old), at("shop", "a", young), -1},      // older first, whatever the name
		{at("shop", "a", time.Time{}), at("shop", "z", old), 1}, // no creation time: after those with one
		{at("shop", "a", old), at("shop", "b", old), -1},        // same time: by name
		{at("", "b", time.Time{}), at("shop", "a", time.Time{}), -1},
		{at("shop", "a", old), at("shop", "a", old), 0},
	} {
		if got := Compare(tt.a, tt.b); got != tt.want {
			t.Errorf("Compare(%s/%s, %s/%s) = %d, want %d", tt.a.Namespace, tt.a.Name, tt.b.Namespace, tt.b.Name, got, tt.want)
		}
		if got := Compare(tt.b, tt.a); got != -tt.want {
			t.Errorf("Compare(%s/%s, %s/%s) = %d, want %d", tt.b.Namespace, tt.b.Name, tt.a.Namespace, tt.a.Name, got, -tt.want)
		}
	}
}

func TestParents(t *testing.T) {
	r := valid()
	ref := func(name string, port int32) gatewayv1.ParentReference {
		p := gatewayv1.ParentReference{Name: gatewayv1.ObjectName(name)}
		if port != 0 {
			p.Port = ptr(port)
		}
		return p
	}
	r.Spec.ParentRefs = []gatewayv1.ParentReference{ref("web", 0), ref("api", 90), ref("api", 80)}
	want := map[string]*Attachment{"web": {Index: 0}, "api": {Index: 1, Ports: []int32{90, 80}}}
	if diff := cmp.Diff(want, Parents(r)); diff != "" {
		t.Errorf("Parents (-want +got):\n%s", diff)
	}
}

// The controller refuses to modify the headers the proxy refuses, so that
// a route it accepts is one every proxy applies.
func TestReservedHeadersAgreeWithTheProxy(t *testing.T) {
	for _, name := range []string{
		"Rampart-Client-Id", "rampart-target-port", "RAMPART_APP_PROTOCOL", "Rampart-Anything",
		"Host", "Content-Length", "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "TE", "Trailer", "Upgrade",
		"X-Rampart", "Authorization", "Content-Type", "X-Canary", "Cookie",
	} {
		c, p := ReservedHeader(name), route.Reserved(name)
		if c != p {
			t.Errorf("%s: controller says %q, proxy says %q", name, c, p)
		}
	}
}
