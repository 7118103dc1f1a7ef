// Package localconfig is the source of Rampart's resources in local mode: a
// directory of YAML files holding the documents of api/v1alpha1: Services
// and Workloads, and the security policy kinds (AuthorizationPolicy,
// MeshTLSPolicy, NamespacePolicy, RateLimitPolicy), and Gateway API
// HTTPRoutes attached to Services (api/httproute), TrafficPolicies, and
// EgressPolicies.
// Load reads and checks
// the directory, reporting every problem with its file and line; Watcher
// reloads it when it changes and keeps the last good resources in force
// while it is broken.
//
// It reads files and nothing else: it must not depend on the controller,
// the control-plane protocol or the proxy, and the proxy binary must not
// import it (it pulls in YAML and Kubernetes API machinery).
package localconfig

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// MaxFileSize is the size of the largest file Load reads. Larger files are
// refused with an error: a config file is written by hand and small.
const MaxFileSize = 4 << 20

// Resources is the content of a config directory.
type Resources struct {
	// Services, defaulted and valid, sorted by namespace then name.
	Services []v1alpha1.Service
	// Workloads, defaulted and valid, sorted by namespace then name.
	Workloads []v1alpha1.Workload

	// The security policies, defaulted and valid, each kind sorted by
	// namespace then name.
	AuthorizationPolicies []v1alpha1.AuthorizationPolicy `json:",omitempty"`
	MeshTLSPolicies       []v1alpha1.MeshTLSPolicy       `json:",omitempty"`
	NamespacePolicies     []v1alpha1.NamespacePolicy     `json:",omitempty"`
	RateLimitPolicies     []v1alpha1.RateLimitPolicy     `json:",omitempty"`
	// WorkloadAttestationPolicies say which code and local users may
	// receive which identities (docs/attestation.md).
	WorkloadAttestationPolicies []v1alpha1.WorkloadAttestationPolicy `json:",omitempty"`
	// EgressPolicies list the destinations outside the mesh that
	// workloads may reach under --egress allow-listed (docs/traffic.md).
	EgressPolicies []v1alpha1.EgressPolicy `json:",omitempty"`

	// HTTPRoutes, defaulted and valid (api/httproute), sorted by namespace
	// then name. Every Service a route names, as parent or backend, is one
	// of Services, with the port the route names.
	HTTPRoutes []gatewayv1.HTTPRoute `json:",omitempty"`

	// TrafficPolicies, defaulted and valid, sorted by namespace then name.
	// Every Service one targets is one of Services (docs/traffic.md).
	TrafficPolicies []v1alpha1.TrafficPolicy `json:",omitempty"`

	// DetectionPolicies, defaulted and valid, sorted by namespace then
	// name; ActiveDetectionPolicy says which one is in force
	// (docs/insights.md).
	DetectionPolicies []v1alpha1.DetectionPolicy `json:",omitempty"`
}

// Problem is one thing wrong with a config directory.
type Problem struct {
	// File is the file's name within the directory.
	File string
	// Line is the 1-based line the problem is at, or 0 when it concerns
	// the whole file (it cannot be read, say) or no line is known.
	Line int
	// Msg says what is wrong.
	Msg string
}

func (p Problem) String() string {
	if p.Line == 0 {
		return p.File + ": " + p.Msg
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// LoadError is every problem Load found in a config directory.
type LoadError struct {
	// Dir is the directory loaded.
	Dir string
	// Problems, sorted by file then line.
	Problems []Problem
}

// Error returns the problems, one "file:line: message" a line.
func (e *LoadError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads every *.yaml and *.yml file of dir (not its subdirectories,
// and not hidden files, whose names start with a dot), each holding any
// number of "---"-separated documents, and returns the resources they
// define, defaulted and validated, the services an HTTPRoute names checked
// against the whole directory. Symbolic links are followed; files larger
// than MaxFileSize are refused.
//
// Load returns nothing but an error unless the whole directory is good.
// Problems in the files come as a *LoadError listing every one of them,
// with file and line; an error reading the directory itself is returned
// wrapped.
func Load(dir string) (*Resources, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("localconfig: reading config directory: %w", err)
	}
	l := &loader{defined: make(map[string]position)}
	for _, e := range entries {
		name := e.Name()
		if !isConfigFile(name) {
			continue
		}
		l.file = name
		data, ok := l.read(filepath.Join(dir, name))
		if !ok {
			continue
		}
		l.loadFile(data)
	}
	l.checkRouteRefs()
	l.checkTrafficRefs()
	if len(l.problems) > 0 {
		slices.SortStableFunc(l.problems, func(a, b Problem) int {
			return cmp.Or(strings.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
		})
		return nil, &LoadError{Dir: dir, Problems: l.problems}
	}
	sortByName(l.res.Services)
	sortByName(l.res.Workloads)
	sortByName(l.res.AuthorizationPolicies)
	sortByName(l.res.MeshTLSPolicies)
	sortByName(l.res.NamespacePolicies)
	sortByName(l.res.RateLimitPolicies)
	sortByName(l.res.WorkloadAttestationPolicies)
	sortByName(l.res.EgressPolicies)
	sortByName(l.res.DetectionPolicies)
	sortByName(l.res.HTTPRoutes)
	sortByName(l.res.TrafficPolicies)
	return &l.res, nil
}

// sortByName sorts resources by namespace, then name.
func sortByName[T any, PT interface {
	*T
	GetNamespace() string
	GetName() string
}](list []T) {
	slices.SortFunc(list, func(a, b T) int {
		pa, pb := PT(&a), PT(&b)
		return cmp.Or(strings.Compare(pa.GetNamespace(), pb.GetNamespace()), strings.Compare(pa.GetName(), pb.GetName()))
	})
}

// isConfigFile reports whether Load reads the directory entry called name.
func isConfigFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	ext := filepath.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}

// position is where a document is defined.
type position struct {
	file string
	line int
}

func (p position) String() string { return fmt.Sprintf("%s:%d", p.file, p.line) }

// loader holds the state of one Load.
type loader struct {
	file     string // the file being loaded
	res      Resources
	problems []Problem
	// defined maps "Kind namespace/name" to where it was first defined.
	defined map[string]position
	// routeRefs are the services the good HTTPRoutes name, checked once
	// every file is loaded.
	routeRefs []routeRef
	// trafficRefs are the services the good TrafficPolicies target,
	// checked once every file is loaded.
	trafficRefs []trafficRef
}

func (l *loader) problem(line int, format string, args ...any) {
	l.problems = append(l.problems, Problem{File: l.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// read returns the content of the file at path, or records why it cannot
// be read. Directories (even ones named like a config file) are skipped.
func (l *loader) read(path string) ([]byte, bool) {
	// Stat follows symbolic links, as in a Kubernetes ConfigMap volume,
	// where each file is a link into a hidden, atomically swapped directory.
	info, err := os.Stat(path)
	if err != nil {
		l.problem(0, "cannot read file: %v", pathErr(err))
		return nil, false
	}
	switch {
	case info.IsDir():
		return nil, false
	case !info.Mode().IsRegular():
		// Opening a named pipe would block.
		l.problem(0, "not a regular file (%v)", info.Mode().Type())
		return nil, false
	case info.Size() > MaxFileSize:
		l.problem(0, "file is %d bytes, larger than the limit of %d (4 MiB): split it into smaller files", info.Size(), MaxFileSize)
		return nil, false
	}
	f, err := os.Open(path)
	if err != nil {
		l.problem(0, "cannot read file: %v", pathErr(err))
		return nil, false
	}
	defer f.Close()
	// The limit guards against a file that grew since Stat.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		l.problem(0, "cannot read file: %v", pathErr(err))
		return nil, false
	}
	if len(data) > MaxFileSize {
		l.problem(0, "file is larger than the limit of %d bytes (4 MiB): split it into smaller files", MaxFileSize)
		return nil, false
	}
	return data, true
}

// pathErr strips the path from err, which the problem already names.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
