package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docBlock is a fenced code block of a Markdown page with the comment line
// before it.
type docBlock struct {
	lang, comment, body string
	line                int
}

func docBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks []docBlock
		cur    *docBlock
		prev   string
		body   strings.Builder
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && line == "```":
			cur.body = body.String()
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(line + "\n")
		case strings.HasPrefix(line, "```"):
			cur = &docBlock{lang: strings.TrimPrefix(line, "```"), line: n}
			if strings.HasPrefix(prev, "<!--") {
				cur.comment = prev
			}
			body.Reset()
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	return blocks
}

// TestPolicyExplainDocs runs the command of docs/authorization.md's worked
// example, with the page's YAML examples as the config directory, and
// checks that it prints what the page shows.
func TestPolicyExplainDocs(t *testing.T) {
	const page = "../../docs/authorization.md"
	dir := t.TempDir()
	var command, want string
	blocks := docBlocks(t, page)
	for i, b := range blocks {
		switch {
		case b.lang == "yaml" && !strings.Contains(b.comment, "rejected"):
			name := filepath.Join(dir, fmt.Sprintf("example-%03d.yaml", b.line))
			if err := os.WriteFile(name, []byte(b.body), 0o600); err != nil {
				t.Fatal(err)
			}
		case b.lang == "sh" && strings.HasPrefix(b.body, "rampart policy explain"):
			if i+1 >= len(blocks) || blocks[i+1].lang != "text" {
				t.Fatalf("%s:%d: the command is not followed by its output", page, b.line)
			}
			command, want = b.body, blocks[i+1].body
		}
	}
	if command == "" {
		t.Fatalf("%s: no rampart policy explain example", page)
	}
	args := strings.Fields(strings.ReplaceAll(command, "\\\n", " "))[1:]
	for i, a := range args {
		if a == "--config-dir" {
			args[i+1] = dir
		}
	}
	got, _, err := execute(t, args...)
	if err != nil {
		t.Fatalf("rampart %s: %v", strings.Join(args, " "), err)
	}
	if got != want {
		t.Errorf("the example's output differs from the page; the command prints:\n%s", got)
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const explainConfig = `
apiVersion: rampart.dev/v1alpha1
kind: Workload
metadata: {name: orders-1, namespace: shop, labels: {app: orders}}
spec: {serviceAccount: orders, tunnelAddress: "10.0.0.1:15008"}
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders-api, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://rampart.local/ns/shop/sa/web"]}]
    to: [{methods: [GET], paths: ["/orders/{id}"]}]
  - from: [{ipBlocks: ["192.0.2.0/24"]}]
    to: [{ports: [5432]}]
---
apiVersion: rampart.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  limits:
  - {name: per-caller, per: source, requestsPerSecond: 5}
  - {name: reads, per: route, requestsPerSecond: 50, match: {to: [{methods: [POST]}, {methods: [GET]}]}}
`

func TestPolicyExplain(t *testing.T) {
	dir := writeFiles(t, map[string]string{"mesh.yaml": explainConfig})
	web := "spiffe://rampart.local/ns/shop/sa/web"
	tests := []struct {
		name string
		args []string
		want []string // lines the output must hold
	}{
		{"allowed, with its rate limits", []string{"--from", web, "--path", "/orders/7?x=1"}, []string{
			"allow: ALLOW policy shop/orders-api rules[0] matched",
			"  + request: HTTP GET /orders/7 host \"\" port 8080 from " + web + " (unknown address)",
			"  rate limit shop/orders per-caller counts it: per source, 5/s, burst 5",
			"  rate limit shop/orders reads counts it: per route (to[1]), 50/s, burst 50",
		}},
		{"normalized before matching", []string{"--from", web, "--path", "/orders//x/../7", "--host", "Orders.Shop."}, []string{
			"allow: ALLOW policy shop/orders-api rules[0] matched",
			"  + request: HTTP GET /orders/7 host \"orders.shop\" port 8080 from " + web + " (unknown address)",
		}},
		{"denied", []string{"--from", "spiffe://rampart.local/ns/shop/sa/cart", "--path", "/orders/7"}, []string{
			"deny: no ALLOW rule matched",
			"  - allow shop/orders-api rules[0]: from[0].principals: spiffe://rampart.local/ns/shop/sa/cart is not listed",
		}},
		{"refused before any rule", []string{"--from", web, "--path", "/orders/%2e%2e/admin"}, []string{
			"deny: refused with 400: path holds a '.' or '..' segment written with encoded dots",
		}},
		{"plaintext TCP by address", []string{"--plaintext", "--source-ip", "192.0.2.9", "--tcp", "--port", "5432", "--labels", "app=orders"}, []string{
			"deny: plaintext request on a STRICT port",
			"  + request: TCP port 5432 from no verified identity (192.0.2.9)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"policy", "explain", "--config-dir", dir, "--to", "shop/orders-1", "--port", "8080"}, tt.args...)
			out, _, err := execute(t, args...)
			if err != nil {
				t.Fatalf("%v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w+"\n") {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPolicyExplainJSON(t *testing.T) {
	dir := writeFiles(t, map[string]string{"mesh.yaml": explainConfig})
	out, _, err := execute(t, "policy", "explain", "--config-dir", dir, "--to", "shop/orders-1", "--port", "8080",
		"--from", "spiffe://rampart.local/ns/shop/sa/web", "--path", "/orders/7", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Allow  bool
		Code   string
		Policy string
		Rule   *int
		Steps  []struct{ Stage string }
		Limits []struct{ Name string } `json:"rateLimits"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if !got.Allow || got.Code != "allow_rule" || got.Policy != "shop/orders-api" || got.Rule == nil || *got.Rule != 0 ||
		len(got.Steps) == 0 || len(got.Limits) != 2 {
		t.Errorf("JSON explanation = %+v\n%s", got, out)
	}
}

func TestPolicyExplainBadInput(t *testing.T) {
	dir := writeFiles(t, map[string]string{"mesh.yaml": explainConfig})
	broken := writeFiles(t, map[string]string{"bad.yaml": "apiVersion: rampart.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {action: NOPE}\n"})
	web := "spiffe://rampart.local/ns/shop/sa/web"
	base := func(extra ...string) []string {
		return append([]string{"policy", "explain", "--config-dir", dir, "--to", "shop/orders-1", "--port", "8080", "--from", web}, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown workload", []string{"policy", "explain", "--config-dir", dir, "--to", "shop/nope", "--port", "80", "--from", web}, "no Workload document declares it: give its labels with --labels"},
		{"bad --to", []string{"policy", "explain", "--config-dir", dir, "--to", "orders", "--port", "80", "--from", web}, `--to "orders": want namespace/name`},
		{"no caller", []string{"policy", "explain", "--config-dir", dir, "--to", "shop/orders-1", "--port", "80"}, "--from: give the caller's SPIFFE ID, or --plaintext"},
		{"both callers", base("--plaintext"), "--plaintext and --from"},
		{"bad SPIFFE ID", []string{"policy", "explain", "--config-dir", dir, "--to", "shop/orders-1", "--port", "80", "--from", "web"}, `--from "web"`},
		{"bad header", base("--header", "novalue"), `--header "novalue": want name:value`},
		{"bad time", base("--at", "noon"), "--at"},
		{"bad output", base("-o", "yaml"), `--output "yaml": use text or json`},
		{"bad labels", base("--labels", "app"), `--labels "app": want key=value`},
		{"broken config", []string{"policy", "explain", "--config-dir", broken, "--to", "shop/x", "--port", "80", "--from", web}, `bad.yaml:4: spec.action: must be ALLOW, DENY or AUDIT, not "NOPE"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := execute(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	dir := writeFiles(t, map[string]string{"mesh.yaml": explainConfig})
	out, _, err := execute(t, "policy", "validate", "--config-dir", dir)
	if err != nil || !strings.Contains(out, "ok: 1 AuthorizationPolicy, 0 NamespacePolicy, 0 MeshTLSPolicy, 1 RateLimitPolicy, 0 WorkloadAttestationPolicy, 0 HTTPRoute, 0 Service, 1 Workload") {
		t.Errorf("validate: %v\n%s", err, out)
	}
	broken := writeFiles(t, map[string]string{"bad.yaml": "apiVersion: rampart.dev/v1alpha1\nkind: NamespacePolicy\nmetadata: {name: x}\nspec: {defaultAuthorization: allow-all}\n"})
	out, _, err = execute(t, "policy", "validate", "--config-dir", broken)
	if err == nil || !strings.Contains(out, `bad.yaml:4: spec.defaultAuthorization: must be deny-all, allow-same-namespace or allow-authenticated, not "allow-all"`) {
		t.Errorf("validate of a broken directory: %v\n%s", err, out)
	}
}
