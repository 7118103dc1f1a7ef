package v1alpha1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	kjson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"
	sigsyaml "sigs.k8s.io/yaml"
)

// crdDir is where make generate-crds writes the CRDs.
const crdDir = "../../deploy/crds"

// validatable is what every kind of the package implements.
type validatable interface{ Validate() error }

// newKind returns an empty resource of each kind.
var newKind = map[string]func() validatable{
	KindService:                   func() validatable { return &Service{} },
	KindWorkload:                  func() validatable { return &Workload{} },
	KindAuthorizationPolicy:       func() validatable { return &AuthorizationPolicy{} },
	KindMeshTLSPolicy:             func() validatable { return &MeshTLSPolicy{} },
	KindNamespacePolicy:           func() validatable { return &NamespacePolicy{} },
	KindRateLimitPolicy:           func() validatable { return &RateLimitPolicy{} },
	KindWorkloadAttestationPolicy: func() validatable { return &WorkloadAttestationPolicy{} },
	KindEgressPolicy:              func() validatable { return &EgressPolicy{} },
	KindTrafficPolicy:             func() validatable { return &TrafficPolicy{} },
	KindDetectionPolicy:           func() validatable { return &DetectionPolicy{} },
}

// resourceKinds returns the kinds declared in this package's source: the
// struct types that embed both metav1.TypeMeta and metav1.ObjectMeta.
func resourceKinds(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return false
			}
			embeds := map[string]bool{}
			for _, fld := range st.Fields.List {
				if sel, ok := fld.Type.(*ast.SelectorExpr); ok && len(fld.Names) == 0 {
					embeds[sel.Sel.Name] = true
				}
			}
			if embeds["TypeMeta"] && embeds["ObjectMeta"] {
				kinds = append(kinds, ts.Name.Name)
			}
			return false
		})
	}
	sort.Strings(kinds)
	return kinds
}

// loadCRDs decodes every file of dir, keyed by the kind it defines.
func loadCRDs(t *testing.T, dir string) map[string]*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crds := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := sigsyaml.UnmarshalStrict(data, &crd); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		kind := crd.Spec.Names.Kind
		if _, dup := crds[kind]; dup {
			t.Fatalf("%s: a second CRD for kind %s", p, kind)
		}
		crds[kind] = &crd
	}
	return crds
}

func TestCRDsCoverEveryKind(t *testing.T) {
	kinds := resourceKinds(t)
	var registered []string
	for k := range newKind {
		registered = append(registered, k)
	}
	sort.Strings(registered)
	if !slices.Equal(kinds, registered) {
		t.Fatalf("kinds declared in the package %v, kinds this test knows %v: add the new kind to newKind", kinds, registered)
	}
	crds := loadCRDs(t, crdDir)
	var withCRD []string
	for k := range crds {
		withCRD = append(withCRD, k)
	}
	sort.Strings(withCRD)
	if !slices.Equal(kinds, withCRD) {
		t.Fatalf("kinds %v, CRDs in %s for %v: mark the type +kubebuilder:object:root=true and run make generate-crds", kinds, crdDir, withCRD)
	}
}

func TestCRDShape(t *testing.T) {
	for kind, crd := range loadCRDs(t, crdDir) {
		t.Run(kind, func(t *testing.T) {
			s := &crd.Spec
			if s.Group != Group {
				t.Errorf("group %q, want %q", s.Group, Group)
			}
			if want := s.Names.Plural + "." + Group; crd.Name != want {
				t.Errorf("name %q, want %q", crd.Name, want)
			}
			if s.Names.ListKind != kind+"List" {
				t.Errorf("listKind %q, want %q", s.Names.ListKind, kind+"List")
			}
			if s.Scope != apiextensionsv1.NamespaceScoped {
				t.Errorf("scope %q, want Namespaced", s.Scope)
			}
			if !slices.Contains(s.Names.Categories, "rampart") {
				t.Errorf("categories %v lack rampart", s.Names.Categories)
			}
			if len(s.Versions) != 1 {
				t.Fatalf("%d versions, want 1", len(s.Versions))
			}
			v := s.Versions[0]
			if v.Name != Version || !v.Served || !v.Storage {
				t.Errorf("version %q served=%v storage=%v, want %q served and stored", v.Name, v.Served, v.Storage, Version)
			}
			if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				t.Fatal("no OpenAPI schema")
			}
			root := v.Schema.OpenAPIV3Schema
			if err := checkStructural("", root); err != nil {
				t.Errorf("schema is not structural: %v", err)
			}
			if !slices.Contains(root.Required, "spec") {
				t.Errorf("spec is not required (required: %v)", root.Required)
			}
			if _, ok := root.Properties["spec"]; !ok {
				t.Error("schema has no spec")
			}
			var age bool
			for _, c := range v.AdditionalPrinterColumns {
				if !strings.HasPrefix(c.JSONPath, ".") {
					t.Errorf("printer column %q: jsonPath %q does not start with a dot", c.Name, c.JSONPath)
				}
				age = age || (c.Name == "Age" && c.JSONPath == ".metadata.creationTimestamp")
			}
			if !age {
				t.Error("no Age printer column")
			}
		})
	}
}

// checkStructural checks what the API server requires of a structural
// schema that the generated schemas could get wrong: every node has a type
// (or preserves unknown fields, or is int-or-string), objects say what
// their fields are, arrays what their items are, and metadata is left to
// the API server.
func checkStructural(path string, s *apiextensionsv1.JSONSchemaProps) error {
	switch {
	case s.XIntOrString:
		return nil
	case s.Type == "" && !boolValue(s.XPreserveUnknownFields):
		return fmt.Errorf("%s: no type", nonEmpty(path))
	}
	if len(s.AllOf)+len(s.AnyOf)+len(s.OneOf) > 0 || s.Not != nil {
		return fmt.Errorf("%s: logical junctors are not expected", nonEmpty(path))
	}
	switch s.Type {
	case "object":
		if len(s.Properties) == 0 && s.AdditionalProperties == nil && !boolValue(s.XPreserveUnknownFields) && path != ".metadata" {
			return fmt.Errorf("%s: object with no properties", nonEmpty(path))
		}
		if path == ".metadata" && len(s.Properties) > 0 {
			return fmt.Errorf("%s: constrains metadata", path)
		}
		for name, p := range s.Properties {
			if err := checkStructural(path+"."+name, &p); err != nil {
				return err
			}
		}
		if a := s.AdditionalProperties; a != nil && a.Schema != nil {
			if err := checkStructural(path+"[*]", a.Schema); err != nil {
				return err
			}
		}
	case "array":
		if s.Items == nil || s.Items.Schema == nil {
			return fmt.Errorf("%s: array with no items schema", nonEmpty(path))
		}
		return checkStructural(path+"[]", s.Items.Schema)
	}
	return nil
}

func boolValue(b *bool) bool { return b != nil && *b }

func nonEmpty(path string) string {
	if path == "" {
		return "(root)"
	}
	return path
}

// schemaValidator returns a validator of kind's resources against its CRD.
func schemaValidator(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition) *validate.SchemaValidator {
	t.Helper()
	data, err := json.Marshal(crd.Spec.Versions[0].Schema.OpenAPIV3Schema)
	if err != nil {
		t.Fatal(err)
	}
	var s spec.Schema
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return validate.NewSchemaValidator(&s, nil, "", strfmt.Default)
}

// schemaErrors returns what the CRD's schema says about doc, nil if it
// accepts it.
func schemaErrors(t *testing.T, v *validate.SchemaValidator, doc []byte) []error {
	t.Helper()
	var obj map[string]any
	if err := kjson.Unmarshal(doc, &obj); err != nil {
		t.Fatal(err)
	}
	return v.Validate(obj).Errors
}

// exampleDocs returns the rampart.dev documents of the YAML code blocks
// of docs/*.md and of the local-config test files, as JSON, each with the
// place it comes from.
func exampleDocs(t *testing.T) map[string][]byte {
	t.Helper()
	docs := map[string][]byte{}
	add := func(where string, r io.Reader) {
		dec := yaml.NewDecoder(r)
		for i := 0; ; i++ {
			var v any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				return // a broken example, there on purpose
			}
			m, ok := v.(map[string]any)
			if !ok || m["apiVersion"] != GroupVersion {
				continue
			}
			data, err := json.Marshal(m)
			if err != nil {
				continue
			}
			docs[fmt.Sprintf("%s#%d", where, i)] = data
		}
	}
	mds, _ := filepath.Glob("../../docs/*.md")
	block := regexp.MustCompile("(?s)```ya?ml\n(.*?)```")
	for _, md := range mds {
		data, err := os.ReadFile(md)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range block.FindAllSubmatch(data, -1) {
			add(fmt.Sprintf("%s block %d", filepath.Base(md), i), bytes.NewReader(m[1]))
		}
	}
	err := filepath.WalkDir("../../internal/localconfig/testdata", func(f string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(f, ".yaml") {
			return err
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		add(strings.TrimPrefix(f, "../../"), bytes.NewReader(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// TestCRDsAcceptWhatValidateAccepts: the CRDs are a first line of
// validation in front of Validate, never stricter than it. Every example
// of the documentation and the local-config tests that Validate accepts
// passes its CRD's schema.
func TestCRDsAcceptWhatValidateAccepts(t *testing.T) {
	crds := loadCRDs(t, crdDir)
	validators := map[string]*validate.SchemaValidator{}
	for kind, crd := range crds {
		validators[kind] = schemaValidator(t, crd)
	}
	accepted := map[string]int{}
	docs := exampleDocs(t)
	for where, doc := range docs {
		var head struct{ Kind string }
		if err := json.Unmarshal(doc, &head); err != nil {
			t.Fatal(err)
		}
		mk, ok := newKind[head.Kind]
		if !ok {
			continue
		}
		obj := mk()
		dec := json.NewDecoder(bytes.NewReader(doc))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			continue
		}
		if obj.Validate() != nil {
			continue
		}
		accepted[head.Kind]++
		if errs := schemaErrors(t, validators[head.Kind], doc); len(errs) > 0 {
			t.Errorf("%s: Validate accepts this %s, its CRD refuses it: %v", where, head.Kind, errs)
		}
	}
	t.Logf("valid examples checked against their CRD: %v", accepted)
	for kind := range newKind {
		if accepted[kind] == 0 {
			t.Errorf("no valid %s among the %d example documents: add one to the documentation", kind, len(docs))
		}
	}
}

// TestCRDsRefuse: the markers mirror the simple checks of Validate, so the
// API server refuses these resources before the controller sees them.
func TestCRDsRefuse(t *testing.T) {
	crds := loadCRDs(t, crdDir)
	tests := []struct {
		name, kind, doc, field string
	}{
		{"service port 0", KindService, `{"spec":{"selector":{"app":"a"},"ports":[{"port":0}]}}`, "spec.ports[0].port"},
		{"service port too big", KindService, `{"spec":{"selector":{"app":"a"},"ports":[{"port":65536}]}}`, "spec.ports[0].port"},
		{"service protocol", KindService, `{"spec":{"selector":{"app":"a"},"ports":[{"port":80,"protocol":"http"}]}}`, "spec.ports[0].protocol"},
		{"service no ports", KindService, `{"spec":{"selector":{"app":"a"},"ports":[]}}`, "spec.ports"},
		{"service empty selector", KindService, `{"spec":{"selector":{},"ports":[{"port":80}]}}`, "spec.selector"},
		{"service no spec", KindService, `{}`, "spec"},
		{"workload service account", KindWorkload, `{"spec":{"serviceAccount":"Orders","tunnelAddress":"10.0.0.1:15008"}}`, "spec.serviceAccount"},
		{"authorization action", KindAuthorizationPolicy, `{"spec":{"action":"allow"}}`, "spec.action"},
		{"authorization mode", KindAuthorizationPolicy, `{"spec":{"action":"ALLOW","mode":"DRYRUN"}}`, "spec.mode"},
		{"authorization port", KindAuthorizationPolicy, `{"spec":{"action":"ALLOW","rules":[{"to":[{"ports":[0]}]}]}}`, "spec.rules[0].to[0].ports[0]"},
		{"tls mode", KindMeshTLSPolicy, `{"spec":{"mode":"strict"}}`, "spec.mode"},
		{"namespace default", KindNamespacePolicy, `{"spec":{"defaultAuthorization":"deny"}}`, "spec.defaultAuthorization"},
		{"rate limit per", KindRateLimitPolicy, `{"spec":{"limits":[{"name":"a","per":"client","requestsPerSecond":1}]}}`, "spec.limits[0].per"},
		{"rate limit rate", KindRateLimitPolicy, `{"spec":{"limits":[{"name":"a","per":"overall","requestsPerSecond":0}]}}`, "spec.limits[0].requestsPerSecond"},
		{"attestation digest", KindWorkloadAttestationPolicy, `{"spec":{"code":{"digests":["sha256:ABC"]}}}`, "spec.code.digests[0]"},
		{"attestation uid", KindWorkloadAttestationPolicy, `{"spec":{"unix":{"uids":[-1]}}}`, "spec.unix.uids[0]"},
		{"egress port", KindEgressPolicy, `{"spec":{"hosts":["a.example"],"ports":[70000]}}`, "spec.ports[0]"},
		{"traffic two targets", KindTrafficPolicy, `{"spec":{"targetRefs":[{"kind":"Service","name":"a"},{"kind":"Service","name":"b"}]}}`, "spec.targetRefs"},
		{"traffic target kind", KindTrafficPolicy, `{"spec":{"targetRefs":[{"kind":"Pod","name":"a"}]}}`, "spec.targetRefs[0].kind"},
		{"traffic balancer", KindTrafficPolicy, `{"spec":{"targetRefs":[{"kind":"Service","name":"a"}],"loadBalancer":"Random"}}`, "spec.loadBalancer"},
		{"traffic attempts", KindTrafficPolicy, `{"spec":{"targetRefs":[{"kind":"Service","name":"a"}],"retry":{"attempts":11}}}`, "spec.retry.attempts"},
		{"traffic http status", KindTrafficPolicy, `{"spec":{"targetRefs":[{"kind":"Service","name":"a"}],"retry":{"retryOn":{"httpStatuses":[404]}}}}`, "spec.retry.retryOn.httpStatuses[0]"},
		{"detection action", KindDetectionPolicy, `{"spec":{"detections":{"routeScan":{"action":"Block"}}}}`, "spec.detections.routeScan.action"},
		{"detection severity", KindDetectionPolicy, `{"spec":{"detections":{"newEdge":{"severity":"urgent"}}}}`, "spec.detections.newEdge.severity"},
		{"detection threshold", KindDetectionPolicy, `{"spec":{"detections":{"denialBurst":{"threshold":"-3"}}}}`, "spec.detections.denialBurst.threshold"},
		{"traffic grpc status", KindTrafficPolicy, `{"spec":{"targetRefs":[{"kind":"Service","name":"a"}],"retry":{"retryOn":{"grpcStatuses":["OK"]}}}}`, "spec.retry.retryOn.grpcStatuses[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Validate refuses it too: the CRD only mirrors it.
			obj := newKind[tt.kind]()
			if err := json.Unmarshal([]byte(tt.doc), obj); err != nil {
				t.Fatal(err)
			}
			if obj.Validate() == nil {
				t.Fatalf("Validate accepts %s", tt.doc)
			}
			errs := schemaErrors(t, schemaValidator(t, crds[tt.kind]), []byte(tt.doc))
			if len(errs) == 0 {
				t.Fatalf("the %s CRD accepts %s", tt.kind, tt.doc)
			}
			var named bool
			for _, err := range errs {
				named = named || strings.Contains(err.Error(), tt.field)
			}
			if !named {
				t.Errorf("errors %v do not name %s", errs, tt.field)
			}
		})
	}
}

// TestCRDsAreCurrent regenerates the CRDs and the deep-copy code into a
// temporary directory and compares them with the committed files.
func TestCRDsAreCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs controller-gen; make check-generated covers it")
	}
	out := t.TempDir()
	cmd := exec.Command("go", "tool", "controller-gen",
		"object", "paths=./api/v1alpha1/...", "output:object:dir="+filepath.Join(out, "object"),
		"crd:crdVersions=v1", "output:crd:artifacts:config="+filepath.Join(out, "crds"))
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, b)
	}
	compare := func(want, got string) {
		w, err := os.ReadFile(want)
		if err != nil {
			t.Errorf("%v: run make generate-crds", err)
			return
		}
		g, err := os.ReadFile(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w, g) {
			t.Errorf("%s is not what controller-gen generates from the types: run make generate-crds", want)
		}
	}
	compare("zz_generated.deepcopy.go", filepath.Join(out, "object", "zz_generated.deepcopy.go"))
	fresh, err := filepath.Glob(filepath.Join(out, "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(fresh) != len(committed) {
		t.Errorf("%d CRDs generated, %d in %s: run make generate-crds", len(fresh), len(committed), crdDir)
	}
	for _, f := range fresh {
		compare(filepath.Join(crdDir, filepath.Base(f)), f)
	}
}
