package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/compile"
	"github.com/rampart-mesh/rampart/internal/authz/normalize"
	"github.com/rampart-mesh/rampart/internal/localconfig"
)

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check and explain authorization policy",
	}
	cmd.AddCommand(newPolicyExplainCommand(), newPolicyValidateCommand(), newPolicyRecommendCommand())
	return cmd
}

func newPolicyValidateCommand() *cobra.Command {
	var configDir string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a config directory as the controller would load it",
		Long: `Load every resource file of a config directory (Services, Workloads and the
policy kinds), check each as the controller does, and print every problem with
its file and line. The exit status is 1 when there is any.`,
		Example: `  rampart policy validate --config-dir ./mesh`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := localconfig.Load(configDir)
			if err != nil {
				var le *localconfig.LoadError
				if errors.As(err, &le) {
					fmt.Fprintln(cmd.OutOrStdout(), le.Error())
					return fmt.Errorf("policy: %s: %d problems", configDir, len(le.Problems))
				}
				return fmt.Errorf("policy: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok: %d AuthorizationPolicy, %d NamespacePolicy, %d MeshTLSPolicy, %d RateLimitPolicy, %d WorkloadAttestationPolicy, %d HTTPRoute, %d Service, %d Workload\n",
				configDir, len(res.AuthorizationPolicies), len(res.NamespacePolicies), len(res.MeshTLSPolicies),
				len(res.RateLimitPolicies), len(res.WorkloadAttestationPolicies), len(res.HTTPRoutes), len(res.Services), len(res.Workloads))
			return nil
		},
	}
	cmd.Flags().StringVar(&configDir, "config-dir", "", "the controller's config directory (its --config-dir)")
	cmd.MarkFlagRequired("config-dir") //nolint:errcheck // the flag exists
	return cmd
}

// explainFlags are the flags of "policy explain".
type explainFlags struct {
	configDir, to, from, sourceIP  string
	labels, headers                []string
	method, path, host, at, output string
	port                           uint16
	tcp, plaintext                 bool
	sourceDigest, rootNS           string
}

func newPolicyExplainCommand() *cobra.Command {
	var f explainFlags
	cmd := &cobra.Command{
		Use:   "explain",
		Short: "Show how a workload's proxy would decide a request, rule by rule",
		Long: `Evaluate a request against the policies of a config directory with the same
library the proxies enforce with, and print the decision and the chain of
checks that produced it: the request after normalization, the mesh TLS mode,
every AUDIT, DENY and ALLOW rule with why it did or did not match, and the
default. "+" marks a check that passed or a rule that matched. When policies
in AUDIT mode (spec.mode: AUDIT) would change the decision, the decision they
would make follows, with the checks they add.

The destination is --to <namespace>/<workload>. Its labels, which decide the
policies that select it, come from its Workload document in the config
directory, or from --labels for a workload that registers itself.`,
		Example: `  rampart policy explain --config-dir ./mesh --to shop/orders-1 \
      --from spiffe://rampart.local/ns/shop/sa/web --method GET --path /admin/users --port 8080
  rampart policy explain --config-dir ./mesh --to shop/orders-1 --labels app=orders \
      --plaintext --source-ip 10.1.2.3 --tcp --port 5432 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			x, err := explain(&f)
			if err != nil {
				return fmt.Errorf("policy explain: %w", err)
			}
			return printExplanation(cmd.OutOrStdout(), x, f.output)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configDir, "config-dir", "", "the controller's config directory (its --config-dir)")
	fl.StringVar(&f.to, "to", "", "the destination workload, as namespace/name")
	fl.StringSliceVar(&f.labels, "labels", nil, "the destination's labels, key=value (default: from its Workload document)")
	fl.StringVar(&f.from, "from", "", "the caller's SPIFFE ID, as its certificate proves it")
	fl.BoolVar(&f.plaintext, "plaintext", false, "the caller has no mesh identity (plaintext, on a PERMISSIVE port)")
	fl.StringVar(&f.sourceIP, "source-ip", "", "the caller's IP address")
	fl.StringVar(&f.sourceDigest, "source-digest", "", "the attested digest of the caller's code, sha256:<hex>")
	fl.Uint16Var(&f.port, "port", 0, "the destination port (the port the app listens on)")
	fl.BoolVar(&f.tcp, "tcp", false, "an opaque TCP connection rather than an HTTP request")
	fl.StringVar(&f.method, "method", "GET", "the HTTP method")
	fl.StringVar(&f.path, "path", "/", "the HTTP request path, with or without a query; normalized as the proxy does")
	fl.StringVar(&f.host, "host", "", "the HTTP host (:authority or Host header)")
	fl.StringArrayVar(&f.headers, "header", nil, "an HTTP header, name:value (repeatable)")
	fl.StringVar(&f.at, "at", "", "when the request arrives, RFC 3339 (default: now), for conditions on now")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	fl.StringVar(&f.rootNS, "root-namespace", "", "the mesh root namespace (default rampart-system)")
	for _, name := range []string{"config-dir", "to", "port"} {
		cmd.MarkFlagRequired(name) //nolint:errcheck // the flag exists
	}
	return cmd
}

// explain builds the engine of the destination and the request from f and
// explains the decision.
func explain(f *explainFlags) (*explanation, error) {
	if f.output != "text" && f.output != "json" {
		return nil, fmt.Errorf("--output %q: use text or json", f.output)
	}
	ns, name, ok := strings.Cut(f.to, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("--to %q: want namespace/name", f.to)
	}
	if f.port == 0 {
		return nil, errors.New("--port: must be 1-65535")
	}
	res, err := localconfig.Load(f.configDir)
	if err != nil {
		return nil, fmt.Errorf("loading %s (fix these first):\n%w", f.configDir, err)
	}
	labels, err := destinationLabels(res, ns, name, f.labels)
	if err != nil {
		return nil, err
	}
	policies := &compile.Resources{
		AuthorizationPolicies: res.AuthorizationPolicies,
		MeshTLSPolicies:       res.MeshTLSPolicies,
		NamespacePolicies:     res.NamespacePolicies,
		RateLimitPolicies:     res.RateLimitPolicies,
	}
	wp, err := compile.ForWorkload(policies, compile.Workload{Namespace: ns, Labels: labels}, compile.Options{RootNamespace: f.rootNS})
	if err != nil {
		return nil, err
	}
	engine, err := authz.Compile(wp)
	if err != nil {
		return nil, err
	}
	r, refused, err := requestOf(f)
	if err != nil {
		return nil, err
	}
	if refused != "" {
		// The proxy answers 400 before any rule is consulted.
		return &explanation{Explanation: &authz.Explanation{
			Decision: authz.Decision{Code: authz.CodeInvalidRequest, Rule: -1, Reason: refused},
			Steps:    []authz.Step{{Stage: "request", Rule: -1, Detail: refused}},
		}}, nil
	}
	x := &explanation{Explanation: engine.Explain(r)}
	if x.Decision.Allow {
		// An allowed request must then find a token in every limit that
		// counts it.
		for i := range wp.RateLimits {
			l := &wp.RateLimits[i]
			m, err := authz.CompileRateLimit(l)
			if err != nil {
				return nil, fmt.Errorf("rate limit %s %s: %w", l.Policy, l.Name, err)
			}
			if ok, route := m.Match(r); ok {
				x.Limits = append(x.Limits, limitRef{Policy: l.Policy, Name: l.Name, Per: l.Per.String(), Route: route,
					RequestsPerSecond: l.RequestsPerSecond, Burst: l.Burst})
			}
		}
	}
	return x, nil
}

// explanation is a decision explained, with the rate limits that would
// count the request if it is allowed.
type explanation struct {
	*authz.Explanation
	Limits []limitRef
}

// limitRef is a rate limit that counts a request.
type limitRef struct {
	Policy            string `json:"policy"`
	Name              string `json:"name"`
	Per               string `json:"per"`
	Route             int    `json:"route"`
	RequestsPerSecond uint32 `json:"requestsPerSecond"`
	Burst             uint32 `json:"burst"`
}

func (x *explanation) String() string {
	var b strings.Builder
	// The decision made, with the rate limits that count it, then the
	// decision that the policies in AUDIT mode would make instead.
	made := *x.Explanation
	made.AuditMode = nil
	b.WriteString(made.String())
	for _, l := range x.Limits {
		fmt.Fprintf(&b, "  rate limit %s %s counts it: per %s", l.Policy, l.Name, l.Per)
		if l.Per == authz.PerRoute.String() {
			fmt.Fprintf(&b, " (to[%d])", l.Route)
		}
		fmt.Fprintf(&b, ", %d/s, burst %d\n", l.RequestsPerSecond, l.Burst)
	}
	if x.AuditMode != nil {
		b.WriteString(x.AuditMode.String())
	}
	return b.String()
}

// destinationLabels returns the labels of the workload ns/name: those given
// on the command line, else those of its Workload document.
func destinationLabels(res *localconfig.Resources, ns, name string, given []string) (map[string]string, error) {
	if len(given) > 0 {
		labels := make(map[string]string, len(given))
		for _, kv := range given {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("--labels %q: want key=value", kv)
			}
			labels[k] = v
		}
		return labels, nil
	}
	for _, w := range res.Workloads {
		if cmpNamespace(w.Namespace) == ns && w.Name == name {
			return w.Labels, nil
		}
	}
	return nil, fmt.Errorf("--to %s/%s: no Workload document declares it: give its labels with --labels key=value", ns, name)
}

func cmpNamespace(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

// requestOf builds the request the flags describe, normalized as the proxy
// normalizes it. A request the proxy would refuse before deciding yields
// the reason instead.
func requestOf(f *explainFlags) (r *authz.Request, refused string, err error) {
	r = &authz.Request{Port: f.port, SourceDigest: f.sourceDigest, Time: time.Now()}
	switch {
	case f.plaintext && f.from != "":
		return nil, "", errors.New("--plaintext and --from: a plaintext caller has no identity; give one or the other")
	case f.plaintext:
	case f.from == "":
		return nil, "", errors.New("--from: give the caller's SPIFFE ID, or --plaintext for a caller without one")
	default:
		if _, err := spiffeid.FromString(f.from); err != nil {
			return nil, "", fmt.Errorf("--from %q: %w", f.from, err)
		}
		r.Source, r.Authenticated = f.from, true
	}
	if f.sourceIP != "" {
		ip, err := netip.ParseAddr(f.sourceIP)
		if err != nil {
			return nil, "", fmt.Errorf("--source-ip: %w", err)
		}
		r.SourceIP = ip
	}
	if f.at != "" {
		t, err := time.Parse(time.RFC3339, f.at)
		if err != nil {
			return nil, "", fmt.Errorf("--at: %w", err)
		}
		r.Time = t
	}
	if f.tcp {
		r.Protocol = authz.ProtocolTCP
		return r, "", nil
	}
	r.Protocol = authz.ProtocolHTTP
	r.Method = f.method
	path, _, _ := strings.Cut(f.path, "?")
	if r.Path, err = normalize.Path(path); err != nil {
		return nil, "refused with 400: " + strings.TrimPrefix(err.Error(), "normalize: "), nil
	}
	if f.host != "" {
		if r.Host, err = normalize.Host(f.host); err != nil {
			return nil, "refused with 400: " + strings.TrimPrefix(err.Error(), "normalize: "), nil
		}
	}
	headers := map[string][]string{}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, "", fmt.Errorf("--header %q: want name:value", h)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		headers[k] = append(headers[k], strings.TrimSpace(v))
	}
	if len(headers) > 0 {
		r.Headers = authz.HTTPHeaders(headers)
	}
	return r, "", nil
}

// printExplanation writes x as text or JSON.
func printExplanation(w io.Writer, x *explanation, format string) error {
	if format == "text" {
		_, err := io.WriteString(w, x.String())
		return err
	}
	type step struct {
		Stage   string `json:"stage"`
		Policy  string `json:"policy,omitempty"`
		Rule    *int   `json:"rule,omitempty"`
		Matched bool   `json:"matched"`
		Detail  string `json:"detail,omitempty"`
	}
	type audit struct {
		Policy string `json:"policy"`
		Rule   int    `json:"rule"`
	}
	// auditMode is the decision with the policies in AUDIT mode in
	// force, when it differs.
	type auditMode struct {
		Policies []string `json:"policies"`
		Allow    bool     `json:"allow"`
		Code     string   `json:"code"`
		Policy   string   `json:"policy"`
		Rule     *int     `json:"rule,omitempty"`
		Reason   string   `json:"reason"`
		Steps    []step   `json:"steps"`
	}
	out := struct {
		Allow     bool       `json:"allow"`
		Code      string     `json:"code"`
		Policy    string     `json:"policy,omitempty"`
		Rule      *int       `json:"rule,omitempty"`
		Reason    string     `json:"reason"`
		Audits    []audit    `json:"audits,omitempty"`
		Steps     []step     `json:"steps"`
		Limits    []limitRef `json:"rateLimits,omitempty"`
		AuditMode *auditMode `json:"auditMode,omitempty"`
	}{Allow: x.Decision.Allow, Code: x.Decision.Code.String(), Policy: x.Decision.Policy, Reason: x.Decision.Reason, Limits: x.Limits}
	if x.Decision.Policy != "" && x.Decision.Rule >= 0 {
		out.Rule = &x.Decision.Rule
	}
	for _, a := range x.Decision.Audits() {
		out.Audits = append(out.Audits, audit{a.Policy, a.Rule})
	}
	steps := func(in []authz.Step) []step {
		var list []step
		for _, s := range in {
			st := step{Stage: s.Stage, Policy: s.Policy, Matched: s.Matched, Detail: s.Detail}
			if s.Policy != "" && s.Rule >= 0 {
				st.Rule = &s.Rule
			}
			list = append(list, st)
		}
		return list
	}
	out.Steps = steps(x.Steps)
	if am := x.AuditMode; am != nil {
		out.AuditMode = &auditMode{
			Policies: am.Policies, Allow: am.Decision.Allow, Code: am.Decision.Code.String(),
			Policy: am.Policy, Reason: am.Decision.Reason, Steps: steps(am.Steps),
		}
		if am.Decision.Policy != "" && am.Decision.Rule >= 0 {
			out.AuditMode.Rule = &am.Decision.Rule
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
