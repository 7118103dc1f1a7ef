package demo

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"text/template"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// The mesh the demo builds.
const (
	// TrustDomain is the demo mesh's SPIFFE trust domain.
	TrustDomain = "rampart.local"
	// Namespace holds every demo workload and service.
	Namespace = "demo"
)

// workloadSpec is one meshed workload: an app and its proxy. Its name is
// also its service account, its app label and its service's name.
type workloadSpec struct {
	name string
	// calls is the service the app calls through its proxy; empty for none.
	calls string
	// protocol, portName and port declare the workload's Service; an empty
	// protocol means it has none (loadgen only calls).
	protocol string
	portName string
	port     int
}

// workloadSpecs is the demo's topology, callers last so that everything a
// workload calls is started before it.
var workloadSpecs = []workloadSpec{
	{name: "payments", protocol: "GRPC", portName: "grpc", port: 50051},
	{name: "orders", calls: "payments", protocol: "HTTP", portName: "http", port: 80},
	{name: "web", calls: "orders", protocol: "HTTP", portName: "http", port: 80},
	{name: "loadgen", calls: "web"},
}

// workload is a workloadSpec placed on loopback ports.
type workload struct {
	workloadSpec
	id spiffeid.ID
	// appAddr is where the app listens; empty for loadgen.
	appAddr string
	// tunnelAddr and adminAddr are the proxy's mTLS and admin listeners.
	tunnelAddr, adminAddr string
	// outboundAddr is the proxy's app-facing listener for calls; empty
	// when the workload calls nothing.
	outboundAddr string
}

// proxyName and appName name the workload's processes and log files.
func (w *workload) proxyName() string { return w.name + "-proxy" }
func (w *workload) appName() string   { return w.name }

// plan is where everything of one demo run lives.
type plan struct {
	stateDir string
	// controllerDir is the controller's --state-dir: CA, tokens, bundle.
	controllerDir string
	// configDir holds the Service documents (the controller's --config-dir).
	configDir string
	// logDir holds one log file per process.
	logDir string

	controllerAddr, controllerAdmin string
	workloads                       []*workload
}

// Files the controller keeps in its state directory (see
// internal/controller).
const (
	tokensFile = "tokens.json"
	bundleFile = "bundle.pem"
)

func (p *plan) bundlePath() string { return filepath.Join(p.controllerDir, bundleFile) }
func (p *plan) tokensPath() string { return filepath.Join(p.controllerDir, tokensFile) }
func (p *plan) logPath(process string) string {
	return filepath.Join(p.logDir, process+".log")
}

// workload returns the named workload.
func (p *plan) workload(name string) *workload {
	for _, w := range p.workloads {
		if w.name == name {
			return w
		}
	}
	panic("demo: no workload " + name)
}

// portsNeeded is how many loopback ports newPlan takes.
func portsNeeded() int {
	n := 2 // controller gRPC and admin
	for _, s := range workloadSpecs {
		n += 2 // proxy tunnel and admin
		if s.protocol != "" {
			n++ // app
		}
		if s.calls != "" {
			n++ // proxy outbound listener
		}
	}
	return n
}

// newPlan lays the demo out under stateDir on the given ports, which must
// number portsNeeded.
func newPlan(stateDir string, ports []int) (*plan, error) {
	if len(ports) != portsNeeded() {
		return nil, fmt.Errorf("demo: %d ports given, %d needed", len(ports), portsNeeded())
	}
	td, err := spiffeid.TrustDomainFromString(TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	next := func() string {
		a := net.JoinHostPort("127.0.0.1", fmt.Sprint(ports[0]))
		ports = ports[1:]
		return a
	}
	p := &plan{
		stateDir:        stateDir,
		controllerDir:   filepath.Join(stateDir, "controller"),
		configDir:       filepath.Join(stateDir, "config"),
		logDir:          filepath.Join(stateDir, "logs"),
		controllerAddr:  next(),
		controllerAdmin: next(),
	}
	for _, s := range workloadSpecs {
		id, err := identity.WorkloadID(td, Namespace, s.name)
		if err != nil {
			return nil, fmt.Errorf("demo: identity of %s: %w", s.name, err)
		}
		w := &workload{workloadSpec: s, id: id, tunnelAddr: next(), adminAddr: next()}
		if s.protocol != "" {
			w.appAddr = next()
		}
		if s.calls != "" {
			w.outboundAddr = next()
		}
		p.workloads = append(p.workloads, w)
	}
	return p, nil
}

// freePorts returns n distinct loopback ports that were free a moment ago:
// it binds them all at once, then releases them for the children to take.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("demo: finding a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var serviceTemplate = template.Must(template.New("service").Parse(`# Written by rampart demo: the {{.Name}} service, served by the {{.Name}} app
# on {{.Target}} behind its Rampart proxy.
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata:
  name: {{.Name}}
  namespace: {{.Namespace}}
spec:
  selector:
    app: {{.Name}}
  serviceAccounts:
  - {{.Name}}
  ports:
  - name: {{.PortName}}
    port: {{.Port}}
    targetPort: {{.TargetPort}}
    protocol: {{.Protocol}}
`))

var policyTemplate = template.Must(template.New("policy").Parse(`# Written by rampart demo: zero trust for the demo namespace. Nothing may
# call a demo workload unless a policy below allows it, and each policy
# allows exactly one caller: the edge the demo's traffic takes.
apiVersion: rampart.dev/v1alpha1
kind: NamespacePolicy
metadata:
  name: default
  namespace: {{.Namespace}}
spec:
  defaultAuthorization: deny-all
{{- range .Edges}}
---
apiVersion: rampart.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: {{.To}}-from-{{.From}}
  namespace: {{$.Namespace}}
spec:
  selector:
    matchLabels:
      app: {{.To}}
  action: ALLOW
  rules:
  - from:
    - principals: ["spiffe://{{$.TrustDomain}}/ns/{{$.Namespace}}/sa/{{.From}}"]
{{- end}}
`))

// policyYAML renders the demo's authorization policy: deny by default, and
// allow each caller to call the one service it calls.
func policyYAML(workloads []*workload) ([]byte, error) {
	type edge struct{ From, To string }
	var edges []edge
	for _, w := range workloads {
		if w.calls != "" {
			edges = append(edges, edge{From: w.name, To: w.calls})
		}
	}
	var b bytes.Buffer
	err := policyTemplate.Execute(&b, map[string]any{"Namespace": Namespace, "TrustDomain": TrustDomain, "Edges": edges})
	if err != nil {
		return nil, fmt.Errorf("demo: policy: %w", err)
	}
	return b.Bytes(), nil
}

// serviceYAML renders w's Service document.
func serviceYAML(w *workload) ([]byte, error) {
	_, port, err := net.SplitHostPort(w.appAddr)
	if err != nil {
		return nil, fmt.Errorf("demo: %s app address: %w", w.name, err)
	}
	var b bytes.Buffer
	err = serviceTemplate.Execute(&b, map[string]any{
		"Name": w.name, "Namespace": Namespace, "Target": w.appAddr,
		"PortName": w.portName, "Port": w.port, "TargetPort": port, "Protocol": w.protocol,
	})
	if err != nil {
		return nil, fmt.Errorf("demo: %s service: %w", w.name, err)
	}
	return b.Bytes(), nil
}

// writeConfig creates the state directories and writes one Service document
// per serving workload, and the demo's authorization policy, into the config
// directory, replacing what a previous run left there.
func (p *plan) writeConfig() error {
	for _, dir := range []string{p.controllerDir, p.configDir, p.logDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	old, err := filepath.Glob(filepath.Join(p.configDir, "*.yaml"))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	for _, w := range p.workloads {
		if w.protocol == "" {
			continue
		}
		doc, err := serviceYAML(w)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(p.configDir, w.name+".yaml"), doc, 0o600); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	doc, err := policyYAML(p.workloads)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(p.configDir, "policy.yaml"), doc, 0o600); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}
