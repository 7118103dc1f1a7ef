package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// auditModeConfig has orders on the default allow-authenticated, and an
// ALLOW policy in AUDIT mode that would let only web GET /orders/{id}.
const auditModeConfig = `
apiVersion: rampart.dev/v1alpha1
kind: Workload
metadata: {name: orders-1, namespace: shop, labels: {app: orders}}
spec: {serviceAccount: orders, tunnelAddress: "10.0.0.1:15008"}
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders-recommended, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  mode: AUDIT
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://rampart.local/ns/shop/sa/web"]}]
    to: [{methods: [GET], paths: ["/orders/{id}"]}]
`

func TestPolicyExplainAuditMode(t *testing.T) {
	dir := writeFiles(t, map[string]string{"mesh.yaml": auditModeConfig})
	explain := func(from string, extra ...string) string {
		t.Helper()
		args := append([]string{"policy", "explain", "--config-dir", dir, "--to", "shop/orders-1", "--port", "8080",
			"--from", from, "--path", "/orders/7"}, extra...)
		out, _, err := execute(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// The decisions differ: both are shown, the one in force first.
	out := explain("spiffe://rampart.local/ns/billing/sa/batch")
	for _, w := range []string{
		"allow: allowed by the default allow-authenticated (built-in default)\n",
		"in AUDIT mode, shop/orders-recommended would make it deny: no ALLOW rule matched\n",
		"  - allow shop/orders-recommended rules[0]: from[0].principals: spiffe://rampart.local/ns/billing/sa/batch is not listed\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if i, j := strings.Index(out, "allow: allowed"), strings.Index(out, "in AUDIT mode"); i != 0 || j < i {
		t.Errorf("the decision in force does not come first:\n%s", out)
	}

	// They agree: only the decision in force.
	if out := explain("spiffe://rampart.local/ns/shop/sa/web"); strings.Contains(out, "AUDIT mode") {
		t.Errorf("the decisions agree, yet the output shows an AUDIT-mode decision:\n%s", out)
	}

	var got struct {
		Allow     bool
		Code      string
		AuditMode *struct {
			Policies []string
			Allow    bool
			Code     string
			Policy   string
			Reason   string
			Steps    []struct{ Stage, Policy string }
		}
	}
	js := explain("spiffe://rampart.local/ns/billing/sa/batch", "-o", "json")
	if err := json.Unmarshal([]byte(js), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, js)
	}
	am := got.AuditMode
	if !got.Allow || got.Code != "default_allow" || am == nil || am.Allow || am.Code != "no_allow_match" ||
		am.Policy != "shop/orders-recommended" || len(am.Policies) != 1 || am.Reason != "no ALLOW rule matched" || len(am.Steps) != 2 {
		t.Errorf("JSON explanation = %+v\n%s", got, js)
	}
	js = explain("spiffe://rampart.local/ns/shop/sa/web", "-o", "json")
	if strings.Contains(js, "auditMode") {
		t.Errorf("the decisions agree, yet the JSON has auditMode:\n%s", js)
	}
}
