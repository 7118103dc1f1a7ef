package attest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

const docsPath = "../../docs/attestation.md"

// docsExample returns the YAML block marked <!-- attestation-example -->
// in docs/attestation.md, the digest its sha256sum output shows and the
// signature file its cat shows.
func docsExample(t *testing.T) (example, digest, sig string) {
	t.Helper()
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	sumRE := regexp.MustCompile(`^(?:sha256:)?([0-9a-f]{64})  /usr/local/bin/orders$`)
	var (
		inBlock, marked, wantSig bool
		body                     strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "<!-- attestation-example -->":
			marked = true
		case inBlock && line == "```":
			inBlock = false
			if marked {
				example = body.String()
				marked = false
			}
		case inBlock:
			body.WriteString(line + "\n")
		case strings.HasPrefix(line, "```"):
			inBlock = true
			body.Reset()
		}
		if m := sumRE.FindStringSubmatch(line); m != nil {
			digest = "sha256:" + m[1]
		}
		if wantSig {
			sig, wantSig = line, false
		}
		if line == "$ cat /usr/local/bin/orders.sig" {
			wantSig = true
		}
	}
	if example == "" || digest == "" || sig == "" {
		t.Fatalf("%s: want the marked example, a sha256sum line and a signature; found example %t, digest %q, signature %q", docsPath, example != "", digest, sig)
	}
	return example, digest, sig
}

// decodePolicies decodes a YAML stream of WorkloadAttestationPolicy
// documents strictly, as the config directory does: unknown fields are
// errors.
func decodePolicies(t *testing.T, stream string) []v1alpha1.WorkloadAttestationPolicy {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(stream))
	var out []v1alpha1.WorkloadAttestationPolicy
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("YAML: %v", err)
		}
		data, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		jd := json.NewDecoder(bytes.NewReader(data))
		jd.DisallowUnknownFields()
		var p v1alpha1.WorkloadAttestationPolicy
		if err := jd.Decode(&p); err != nil {
			t.Fatalf("document %d: %v", len(out), err)
		}
		if p.Kind != v1alpha1.KindWorkloadAttestationPolicy || p.APIVersion != v1alpha1.GroupVersion {
			t.Fatalf("document %d is %s %s", len(out), p.APIVersion, p.Kind)
		}
		p.Default()
		if err := p.Validate(); err != nil {
			t.Fatalf("document %d: %v", len(out), err)
		}
		out = append(out, p)
	}
	return out
}

// TestDocsExample keeps the worked example of docs/attestation.md true: its
// policies load, and they admit and refuse what the page says.
func TestDocsExample(t *testing.T) {
	example, digest, sigFile := docsExample(t)
	policies := decodePolicies(t, example)
	if len(policies) != 3 {
		t.Fatalf("the example has %d policies, want 3", len(policies))
	}
	p := setPolicies(t, policies...)
	sig, err := DecodeSignature([]byte(sigFile))
	if err != nil {
		t.Fatal(err)
	}
	signed := Code{Digest: digest, Signature: sigOf(sig, nil)}
	web, orders := workloadID("shop", "web"), workloadID("shop", "orders")

	// "lets user 1001 claim shop/web and user 1002 claim shop/orders"
	if err := p.admitUnix(web, 1001, 1001); err != nil {
		t.Errorf("uid 1001 may not claim shop/web: %v", err)
	}
	wantReason(t, p.admitUnix(web, 1002, 1002), ReasonUserNotAllowed)
	if err := p.admitUnix(orders, 1002, 0); err != nil {
		t.Errorf("uid 1002 may not claim shop/orders: %v", err)
	}
	wantReason(t, p.admitUnix(workloadID("shop", "cart"), 1001, 1001), ReasonNoPolicy)

	// "admits, in namespace shop, only builds signed by the release key"
	for _, id := range []string{"web", "orders", "cart"} {
		if err := p.CheckCode(workloadID("shop", id), signed); err != nil {
			t.Errorf("the signed build is refused shop/%s: %v", id, err)
		}
	}
	rebuilt := digestOf("a one-line change")
	wantReason(t, p.CheckCode(web, Code{Digest: rebuilt, Signature: sigOf(sig, nil)}), ReasonCodeNotAllowed)
	wantReason(t, p.CheckCode(web, Code{Digest: digest}), ReasonCodeNotAllowed)
	wantReason(t, p.CheckCode(web, Code{}), ReasonCodeNotAttested)
	if err := p.CheckCode(workloadID("bank", "teller"), Code{}); err != nil {
		t.Errorf("a namespace without policies: %v", err)
	}
}
