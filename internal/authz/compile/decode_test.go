package compile

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

const header = "apiVersion: rampart.dev/v1alpha1\n"

func TestDecode(t *testing.T) {
	obj, err := Decode([]byte(header + `kind: RateLimitPolicy
metadata:
  name: rl
spec:
  limits:
  - name: login
    per: source
    requestsPerSecond: 2
    onExceed:
      coolDown: 1m
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &v1alpha1.RateLimitPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindRateLimitPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: "rl", Namespace: "default"},
		Spec: v1alpha1.RateLimitPolicySpec{Limits: []v1alpha1.RateLimit{{
			Name: "login", Per: v1alpha1.PerSource, RequestsPerSecond: 2, Burst: 2,
			OnExceed: &v1alpha1.RateLimitExceed{ConsecutiveWindows: 3, CoolDown: metav1.Duration{Duration: time.Minute}},
		}}},
	}
	if diff := cmp.Diff(want, obj); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}

	// JSON is YAML.
	obj, err = Decode([]byte(`{"apiVersion":"rampart.dev/v1alpha1","kind":"NamespacePolicy","metadata":{"name":"default","namespace":"shop"},"spec":{"defaultAuthorization":"deny-all"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if np, ok := obj.(*v1alpha1.NamespacePolicy); !ok || np.Spec.DefaultAuthorization != v1alpha1.DefaultDenyAll {
		t.Errorf("Decode JSON = %#v", obj)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"empty", "", "empty document"},
		{"comment only", "# nothing\n", "empty document"},
		{"not a mapping", "- a\n- b\n", "must be a mapping"},
		{"scalar", "hello\n", "must be a mapping"},
		{"no apiVersion", "kind: NamespacePolicy\n", `apiVersion: must be "rampart.dev/v1alpha1"`},
		{"other apiVersion", "apiVersion: v1\nkind: NamespacePolicy\n", "apiVersion: must be"},
		{"no kind", header, `kind: "" is not a policy kind`},
		{"other kind", header + "kind: Service\n", `kind: "Service" is not a policy kind: use one of AuthorizationPolicy, MeshTLSPolicy, NamespacePolicy, RateLimitPolicy`},
		{"unknown top-level field", header + "kind: NamespacePolicy\nmetadata: {name: a}\nspec: {defaultAuthorization: deny-all}\nstatus: {}\n", `status: unknown field "status"`},
		{"unknown spec field", header + "kind: NamespacePolicy\nmetadata: {name: a}\nspec: {defaultAuthorization: deny-all, mode: x}\n", `spec.mode: unknown field "mode"`},
		{"unknown nested field", header + "kind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  action: ALLOW\n  rules:\n  - to:\n    - path: [/a]\n", `spec.rules[0].to[0].path: unknown field "path"`},
		{"field in the wrong case", header + "kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {Action: DENY, action: ALLOW}\n", `spec.Action: unknown field "Action"`},
		{"unknown metadata field", header + "kind: NamespacePolicy\nmetadata: {name: a, nmespace: b}\nspec: {defaultAuthorization: deny-all}\n", `metadata.nmespace: unknown field`},
		{"unknown selector field", header + "kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: ALLOW, selector: {app: x}}\n", `spec.selector.app: unknown field "app"`},
		{"duplicate key", header + "kind: NamespacePolicy\nmetadata: {name: a}\nspec:\n  defaultAuthorization: deny-all\n  defaultAuthorization: allow-authenticated\n", "already defined"},
		{"duplicate JSON key", `{"apiVersion":"rampart.dev/v1alpha1","kind":"NamespacePolicy","kind":"NamespacePolicy"}`, "already defined"},
		{"wrong type", header + "kind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  action: ALLOW\n  rules:\n  - to:\n    - ports: [\"80\"]\n", "cannot unmarshal string"},
		{"wrong type for when", header + "kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: ALLOW, rules: [{when: true}]}\n", "cannot unmarshal bool"},
		{"non-string key", header + "kind: NamespacePolicy\nmetadata: {name: a}\nspec: {1: x}\n", "unsupported type"},
		{"two documents", header + "kind: NamespacePolicy\nmetadata: {name: a}\nspec: {defaultAuthorization: deny-all}\n---\n" + header + "kind: NamespacePolicy\n", "more than one document"},
		{"syntax error", header + "kind: [\n", "yaml:"},
		{"bad duration", header + "kind: RateLimitPolicy\nmetadata: {name: a}\nspec: {limits: [{name: a, per: source, requestsPerSecond: 1, onExceed: {coolDown: soon}}]}\n", "invalid duration"},
		{"invalid", header + "kind: NamespacePolicy\nmetadata: {name: a}\nspec: {defaultAuthorization: allow-all}\n", `spec.defaultAuthorization: must be deny-all, allow-same-namespace or allow-authenticated, not "allow-all"`},
		{"too large", header + "kind: NamespacePolicy\n#" + strings.Repeat("x", MaxDocumentSize), "larger than"},
		{"alias bomb", "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n", "excessive aliasing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode: %v; want an error with %q", err, tt.want)
			}
		})
	}
}

func TestDecodeReturnsInvalidObject(t *testing.T) {
	obj, err := Decode([]byte(header + "kind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec: {action: DENY}\n"))
	var fes v1alpha1.FieldErrors
	if !errors.As(err, &fes) || obj == nil || obj.GetName() != "a" {
		t.Fatalf("Decode = %v, %v", obj, err)
	}
	if len(fes) != 1 || fes[0].Path != "spec.rules" {
		t.Errorf("errors %v", fes)
	}
}
