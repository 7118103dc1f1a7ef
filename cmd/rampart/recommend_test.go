package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/insights"
	"github.com/rampart-mesh/rampart/internal/localconfig"
)

const recommendTestdata = "../../internal/insights/recommend/testdata/"

func TestPolicyRecommendFromFile(t *testing.T) {
	out, errOut, err := execute(t, "policy", "recommend", "--from", recommendTestdata+"three-tier.json")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(recommendTestdata + "three-tier.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("stdout differs from %s:\n%s", recommendTestdata+"three-tier.yaml", out)
	}
	if !strings.Contains(errOut, "warning: shop/db: caller spiffe://example.org/ns/shop/sa/api: sent traffic without HTTP routes") {
		t.Errorf("stderr lacks the opaque TCP warning:\n%s", errOut)
	}
}

func TestPolicyRecommendToDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recommended")
	out, _, err := execute(t, "policy", "recommend", "--from", recommendTestdata+"three-tier.json", "--enforce", "--namespace", "shop", "-o", dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, name := range []string{"shop.api-recommended.yaml", "shop.db-recommended.yaml", "shop.web-recommended.yaml"} {
		want = append(want, filepath.Join(dir, name))
	}
	if got := strings.Fields(out); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("listed %v, want %v", got, want)
	}
	res, err := localconfig.Load(dir)
	if err != nil {
		t.Fatalf("the written policies do not load: %v", err)
	}
	if len(res.AuthorizationPolicies) != 3 {
		t.Fatalf("loaded %d policies, want 3", len(res.AuthorizationPolicies))
	}
	for _, p := range res.AuthorizationPolicies {
		if p.Spec.Mode != "ENFORCE" {
			t.Errorf("%s/%s: mode %q with --enforce", p.Namespace, p.Name, p.Spec.Mode)
		}
	}
}

// writeSnapshot saves snap as JSON in a temporary file.
func writeSnapshot(t *testing.T, snap *insights.Snapshot) string {
	t.Helper()
	data, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "baseline.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func learningSnapshot(t *testing.T) *insights.Snapshot {
	t.Helper()
	data, err := os.ReadFile(recommendTestdata + "labelless.json")
	if err != nil {
		t.Fatal(err)
	}
	var snap insights.Snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		t.Fatal(err)
	}
	snap.Learning = true
	snap.LearningEnds = time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second)
	return &snap
}

func TestPolicyRecommendRefusesWhileLearning(t *testing.T) {
	snap := learningSnapshot(t)
	path := writeSnapshot(t, snap)
	_, _, err := execute(t, "policy", "recommend", "--from", path)
	if err == nil || !strings.Contains(err.Error(), "still learning until "+snap.LearningEnds.Format(time.RFC3339)) ||
		!strings.Contains(err.Error(), "--partial") {
		t.Fatalf("err = %v, want a refusal naming when learning ends and --partial", err)
	}
	out, errOut, err := execute(t, "policy", "recommend", "--from", path, "--partial")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "name: alerts-recommended") || !strings.Contains(out, "still learning") {
		t.Errorf("with --partial, stdout lacks the policy or its learning note:\n%s", out)
	}
	if !strings.Contains(errOut, "warning: the baseline is still learning") {
		t.Errorf("with --partial, stderr lacks the learning warning:\n%s", errOut)
	}
}

func TestPolicyRecommendFromController(t *testing.T) {
	data, err := os.ReadFile(recommendTestdata + "labelless.json")
	if err != nil {
		t.Fatal(err)
	}
	var gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/baseline" {
			http.NotFound(w, r)
			return
		}
		gotQuery = r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		w.Write(data) //nolint:errcheck // the test checks what the client got
	}))
	defer srv.Close()
	out, errOut, err := execute(t, "policy", "recommend", "--controller-admin", srv.URL, "-n", "ops")
	if err != nil {
		t.Fatal(err)
	}
	if gotQuery != "namespace=ops" {
		t.Errorf("query %q, want namespace=ops", gotQuery)
	}
	if !strings.Contains(out, "name: alerts-recommended") || strings.Contains(out, "metrics-recommended") {
		t.Errorf("stdout:\n%s", out)
	}
	if !strings.Contains(errOut, "warning: ops/metrics: no labels known") {
		t.Errorf("stderr lacks the labelless warning:\n%s", errOut)
	}

	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"the insights engine has no baseline yet"}`)) //nolint:errcheck // as above
	}))
	defer unavailable.Close()
	if _, _, err := execute(t, "policy", "recommend", "--controller-admin", unavailable.URL); err == nil ||
		!strings.Contains(err.Error(), "no baseline yet") {
		t.Fatalf("err = %v, want the controller's message", err)
	}
}

func TestPolicyRecommendFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "x.json", "--controller-admin", "127.0.0.1:1"}, "give one"},
		{[]string{"--from", "x.json", "-n", "Bad_NS"}, "--namespace"},
		{[]string{"--from", filepath.Join(t.TempDir(), "missing.json")}, "--from"},
		{[]string{"--from", "recommend.go"}, "not a baseline"},
		{[]string{"--from", recommendTestdata + "three-tier.json", "-o", ""}, "-o"},
	} {
		_, _, err := execute(t, append([]string{"policy", "recommend"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}
