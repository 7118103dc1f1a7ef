package v1alpha1

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FieldError is one invalid field of a resource.
type FieldError struct {
	// Path locates the field, JSON-style: "metadata.name",
	// "spec.ports[1].targetPort", and map keys in brackets as Kubernetes
	// writes them: "metadata.labels[app.kubernetes.io/name]".
	Path string
	// Msg says what is wrong and, where it helps, what to write instead.
	Msg string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Msg }

// FieldErrors is every invalid field of a resource, in the order found. It
// is the error that Validate returns; use errors.As to reach the fields.
type FieldErrors []FieldError

func (e FieldErrors) Error() string {
	msgs := make([]string, len(e))
	for i, fe := range e {
		msgs[i] = fe.Error()
	}
	return "v1alpha1: invalid resource: " + strings.Join(msgs, "; ")
}

// errOrNil returns e as an error, and a nil error (not a typed nil) when e
// is empty.
func (e FieldErrors) errOrNil() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

func (e *FieldErrors) add(path, format string, args ...any) {
	*e = append(*e, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Add appends the problem of the field at path, for the validation of
// resource types kept elsewhere (api/httproute).
func (e *FieldErrors) Add(path, format string, args ...any) { e.add(path, format, args...) }

// ErrOrNil returns e as an error, and a nil error (not a typed nil) when e
// is empty.
func (e FieldErrors) ErrOrNil() error { return e.errOrNil() }

// ValidateObjectMeta appends to errs the problems of a resource's metadata,
// checked as this package checks its own resources: a name (required) and
// namespace that are DNS-1123 labels, and labels of Kubernetes syntax.
func ValidateObjectMeta(errs *FieldErrors, m *metav1.ObjectMeta) { validateObjectMeta(errs, m) }

// Port bounds.
const (
	minPort = 1
	maxPort = 65535
)

// ServerFirstPorts are the well-known ports of protocols in which the server
// speaks first (SMTP, MySQL and Galera, Redis and Memcached are listed too
// because their clients may wait on a pipelined server reply, Elasticsearch
// transport): a port among them whose protocol is not set defaults to TCP,
// because a client there may send nothing to detect. Set the protocol
// explicitly to override.
var ServerFirstPorts = []int32{25, 587, 3306, 4444, 4567, 4568, 5432, 6379, 9300, 11211}

// Default fills the fields a Service may leave out: the namespace, each
// port's TargetPort (the Port) and Protocol (Auto, or TCP on one of
// ServerFirstPorts). A protocol that is set is kept as written: GRPC stays
// GRPC, it is not rewritten to HTTP2.
func (s *Service) Default() {
	if s.Namespace == "" {
		s.Namespace = DefaultNamespace
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if p.TargetPort == 0 {
			p.TargetPort = p.Port
		}
		if p.Protocol == "" {
			p.Protocol = ProtocolAuto
			if slices.Contains(ServerFirstPorts, p.TargetPort) || slices.Contains(ServerFirstPorts, p.Port) {
				p.Protocol = ProtocolTCP
			}
		}
	}
}

// Validate reports every invalid field of s as FieldErrors. Fields that
// Default fills may be left empty, so Validate can run before or after
// Default.
func (s *Service) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, s.TypeMeta, KindService)
	validateObjectMeta(&errs, &s.ObjectMeta)

	spec := &s.Spec
	if len(spec.Selector) == 0 {
		errs.add("spec.selector", "must not be empty: an empty selector would select every workload in the namespace")
	}
	validateLabels(&errs, "spec.selector", spec.Selector)

	seenSA := make(map[string]int, len(spec.ServiceAccounts))
	for i, sa := range spec.ServiceAccounts {
		path := fmt.Sprintf("spec.serviceAccounts[%d]", i)
		if msg := dns1123Label(sa); msg != "" {
			errs.add(path, "%s", msg)
			continue
		}
		if j, dup := seenSA[sa]; dup {
			errs.add(path, "duplicate service account %q (also spec.serviceAccounts[%d])", sa, j)
			continue
		}
		seenSA[sa] = i
	}

	if len(spec.Ports) == 0 {
		errs.add("spec.ports", "at least one port is required")
	}
	seenName := make(map[string]int, len(spec.Ports))
	seenPort := make(map[int32]int, len(spec.Ports))
	for i, p := range spec.Ports {
		path := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case p.Name == "" && len(spec.Ports) > 1:
			errs.add(path+".name", "is required when the service has more than one port")
		case p.Name == "":
		case dns1123Label(p.Name) != "":
			errs.add(path+".name", "%s", dns1123Label(p.Name))
		default:
			if j, dup := seenName[p.Name]; dup {
				errs.add(path+".name", "duplicate port name %q (also spec.ports[%d])", p.Name, j)
			} else {
				seenName[p.Name] = i
			}
		}
		if p.Port < minPort || p.Port > maxPort {
			errs.add(path+".port", "must be between %d and %d", minPort, maxPort)
		} else if j, dup := seenPort[p.Port]; dup {
			errs.add(path+".port", "duplicate port %d (also spec.ports[%d])", p.Port, j)
		} else {
			seenPort[p.Port] = i
		}
		// Zero means "same as port", which Default fills in; a copy of a
		// bad port has been reported as such.
		if p.TargetPort != 0 && p.TargetPort != p.Port && (p.TargetPort < minPort || p.TargetPort > maxPort) {
			errs.add(path+".targetPort", "must be between %d and %d", minPort, maxPort)
		}
		if p.Protocol != "" && !validProtocol(p.Protocol) {
			errs.add(path+".protocol", "unsupported protocol %s: must be one of %s", quote(string(p.Protocol)), protocolList)
		}
	}
	seenAddr := make(map[netip.Addr]int, len(spec.Addresses))
	for i, a := range spec.Addresses {
		path := fmt.Sprintf("spec.addresses[%d]", i)
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil || ip.Zone() != "":
			errs.add(path, "%s is not an IP address", quote(a))
		case ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast():
			errs.add(path, "%s cannot be a service address: unspecified, loopback and multicast addresses are reserved", quote(a))
		default:
			if j, dup := seenAddr[ip.Unmap()]; dup {
				errs.add(path, "duplicate address %s (also spec.addresses[%d])", a, j)
			} else {
				seenAddr[ip.Unmap()] = i
			}
		}
	}
	return errs.errOrNil()
}

// Default fills the fields a Workload may leave out: the namespace.
func (w *Workload) Default() {
	if w.Namespace == "" {
		w.Namespace = DefaultNamespace
	}
}

// Validate reports every invalid field of w as FieldErrors. Fields that
// Default fills may be left empty, so Validate can run before or after
// Default.
func (w *Workload) Validate() error {
	var errs FieldErrors
	validateTypeMeta(&errs, w.TypeMeta, KindWorkload)
	validateObjectMeta(&errs, &w.ObjectMeta)

	if w.Spec.ServiceAccount == "" {
		errs.add("spec.serviceAccount", "is required: it names the workload's identity")
	} else if msg := dns1123Label(w.Spec.ServiceAccount); msg != "" {
		errs.add("spec.serviceAccount", "%s", msg)
	}
	if w.Spec.TunnelAddress == "" {
		errs.add("spec.tunnelAddress", "is required: the host:port where the workload's proxy accepts tunnel connections")
	} else if msg := hostPort(w.Spec.TunnelAddress); msg != "" {
		errs.add("spec.tunnelAddress", "%s", msg)
	}
	if a := w.Spec.Address; a != "" {
		if ip, err := netip.ParseAddr(a); err != nil || ip.Zone() != "" || ip.IsUnspecified() || ip.IsMulticast() {
			errs.add("spec.address", "%s is not a unicast IP address", quote(a))
		}
	}
	return errs.errOrNil()
}

// validateTypeMeta accepts an empty TypeMeta (a resource built in Go) or
// this package's apiVersion with the given kind.
func validateTypeMeta(errs *FieldErrors, tm metav1.TypeMeta, kind string) {
	if tm.APIVersion != "" && tm.APIVersion != GroupVersion {
		errs.add("apiVersion", "must be %q, not %s", GroupVersion, quote(tm.APIVersion))
	}
	if tm.Kind != "" && tm.Kind != kind {
		errs.add("kind", "must be %q, not %s", kind, quote(tm.Kind))
	}
}

func validateObjectMeta(errs *FieldErrors, m *metav1.ObjectMeta) {
	if m.Name == "" {
		errs.add("metadata.name", "is required")
	} else if msg := dns1123Label(m.Name); msg != "" {
		errs.add("metadata.name", "%s", msg)
	}
	// An empty namespace means DefaultNamespace.
	if m.Namespace != "" {
		if msg := dns1123Label(m.Namespace); msg != "" {
			errs.add("metadata.namespace", "%s", msg)
		}
	}
	validateLabels(errs, "metadata.labels", m.Labels)
}

// validateLabels checks the keys and values of a label map (or a selector),
// in key order so that the errors come out the same every time.
func validateLabels(errs *FieldErrors, path string, labels map[string]string) {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := path + "[" + k + "]"
		if msgs := content.IsLabelKey(k); len(msgs) > 0 {
			errs.add(p, "invalid label key %s: %s", quote(k), strings.Join(msgs, "; "))
		}
		if msgs := content.IsLabelValue(labels[k]); len(msgs) > 0 {
			errs.add(p, "invalid label value %s: %s", quote(labels[k]), strings.Join(msgs, "; "))
		}
	}
}

var dns1123LabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// dns1123Label returns why s is not an RFC 1123 label, or "" if it is one.
func dns1123Label(s string) string {
	if len(s) > 63 || !dns1123LabelRE.MatchString(s) {
		return fmt.Sprintf("invalid name %s: use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit", quote(s))
	}
	return ""
}

// protocolList is the supported protocols, for error messages.
const protocolList = "Auto, TCP, HTTP, HTTP2, GRPC"

func validProtocol(p Protocol) bool {
	switch p {
	case ProtocolAuto, ProtocolTCP, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC:
		return true
	}
	return false
}

// hostPort returns why addr is not host:port with an IP address or DNS name
// and a numeric port 1-65535, or "" if it is.
func hostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("invalid address %s: want host:port, such as 10.0.0.7:4443, [fd00::7]:4443 or orders-1.example.com:4443", quote(addr))
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n < minPort {
		return fmt.Sprintf("invalid port %s in %s: must be a number between %d and %d", quote(port), quote(addr), minPort, maxPort)
	}
	if host == "" {
		return fmt.Sprintf("missing host in %s: want an IP address or DNS name before the port", quote(addr))
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return fmt.Sprintf("invalid host %s in %s: IPv6 zones are not supported", quote(host), quote(addr))
		}
		return ""
	}
	name := strings.TrimSuffix(host, ".")
	if msgs := content.IsDNS1123SubdomainCaseless(name); len(msgs) > 0 || allDigits(name[strings.LastIndexByte(name, '.')+1:]) {
		// A name whose last label is all digits is a mistyped IPv4
		// address, not a DNS name.
		return fmt.Sprintf("invalid host %s in %s: want an IP address or a DNS name", quote(host), quote(addr))
	}
	return ""
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// maxQuoted is how much of a value an error message quotes.
const maxQuoted = 64

// quote quotes s for an error message, cut short if long.
func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}
