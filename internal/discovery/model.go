// Package discovery is the controller's model of the mesh: the services and
// workloads declared in configuration, the workloads registered by the
// proxies connected right now, and the compilation of both into the
// configuration each proxy receives (meshv1.ProxyConfig): the services it
// asked for with their endpoints and the identities those endpoints must
// prove, the HTTP routes attached to them and the services those send to,
// the ports of its own app it may forward to, and the trust bundle.
//
// It knows nothing of gRPC, TLS or where resources come from (files today,
// Kubernetes later): callers hand it resources and verified identities. It
// must not depend on the control-plane server, the proxy or Kubernetes client
// libraries.
package discovery

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/authzpb"
	"github.com/rampart-mesh/rampart/internal/authz/compile"
	"github.com/rampart-mesh/rampart/internal/authz/ratelimit"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// DefaultConnectTimeout is the dial timeout proxies use for tunnel
// connections when the model's Config names none.
const DefaultConnectTimeout = 5 * time.Second

// Limits on what one registration may carry.
const (
	MaxLabels    = 64
	MaxUpstreams = 256
)

// ErrInvalid is wrapped by every error about a registration or an upstream
// name that is malformed: the caller sent something it must fix.
var ErrInvalid = errors.New("discovery: invalid")

// Config configures a Model.
type Config struct {
	// TrustDomain is the trust domain of every workload identity. Required.
	TrustDomain spiffeid.TrustDomain
	// TrustBundle is the initial set of root certificates sent to proxies;
	// SetTrustBundle replaces it.
	TrustBundle []*x509.Certificate
	// ConnectTimeout is sent to proxies as their tunnel dial timeout.
	// Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Egress is sent to transparent proxies: what they do with connections
	// to destinations outside the mesh. The zero value passes them through.
	Egress meshv1.EgressMode
	// Logger receives warnings about conflicting configuration. Nil
	// discards them.
	Logger *slog.Logger
}

// Validate reports whether c can build a Model.
func (c Config) Validate() error {
	if c.TrustDomain.IsZero() {
		return errors.New("discovery: trust domain is required")
	}
	if c.ConnectTimeout < 0 {
		return fmt.Errorf("discovery: connect timeout %v is negative", c.ConnectTimeout)
	}
	if _, ok := meshv1.EgressMode_name[int32(c.Egress)]; !ok {
		return fmt.Errorf("discovery: unknown egress mode %d", c.Egress)
	}
	return nil
}

// Registration is a workload announced by its connected proxy.
type Registration struct {
	// ID is the proxy's verified SPIFFE ID; the workload's namespace and
	// service account come from it and from nowhere else.
	ID spiffeid.ID
	// Name is the workload instance's name, unique within its namespace.
	Name string
	// Labels select the workload into services.
	Labels map[string]string
	// TunnelAddress is the host:port where the proxy accepts tunnel
	// connections from its peers.
	TunnelAddress string
	// Address is the workload's own IP address; empty means the host of
	// TunnelAddress when that is an IP address.
	Address string
	// PeerIP is the source address of the proxy's connection to the
	// controller. A registered workload's address is believed only when it
	// is this address: otherwise any workload could claim another's IP, or
	// an address outside the mesh, and receive the traffic other proxies
	// send there. An invalid PeerIP believes no address.
	PeerIP netip.Addr
}

// workload is one endpoint candidate: declared in configuration or
// registered by its proxy.
type workload struct {
	namespace      string
	name           string
	serviceAccount string
	labels         map[string]string
	tunnelAddress  string
	address        string     // IP the workload itself is reached at; may be empty
	peerIP         netip.Addr // where its proxy connects from; zero for declared workloads
	leaving        bool       // draining: no longer an endpoint of any service
}

// maxWarned bounds the memory of conflicts already logged.
const maxWarned = 1024

// Model is the mesh as the controller knows it. It is safe for concurrent
// use.
type Model struct {
	td             spiffeid.TrustDomain
	connectTimeout time.Duration
	egress         meshv1.EgressMode
	logger         *slog.Logger

	mu         sync.Mutex
	resources  *localconfig.Resources
	policies   compile.Resources              // the policy kinds of resources
	routes     map[serviceKey][]*meshv1.Route // the HTTPRoutes of resources, by parent service, in precedence order
	registered map[uint64]workload            // by registration id
	nextRegID  uint64
	bundle     [][]byte            // DER roots
	revoked    *meshv1.Revocations // sent to every proxy as is; never modified
	revokedSum [sha256.Size]byte   // digest of revoked, computed once by SetRevocations
	quarantine *meshv1.Quarantine  // sent to every proxy as is; never modified
	changed    chan struct{}       // closed and replaced on every change
	warned     map[string]struct{} // conflicts already logged since the last SetResources
	// lastGoodPolicy is the last policy that passed policyLocked's checks,
	// by workload namespace/name; pruned to the workloads that exist.
	lastGoodPolicy map[string]*authz.WorkloadPolicy
}

// New returns an empty model: no resources, no registrations.
func New(cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{
		td:             cfg.TrustDomain,
		connectTimeout: cfg.ConnectTimeout,
		egress:         cfg.Egress,
		logger:         cfg.Logger,
		resources:      &localconfig.Resources{},
		registered:     make(map[uint64]workload),
		changed:        make(chan struct{}),
		warned:         make(map[string]struct{}),
		lastGoodPolicy: make(map[string]*authz.WorkloadPolicy),
		bundle:         derOf(cfg.TrustBundle),
	}
	if m.connectTimeout == 0 {
		m.connectTimeout = DefaultConnectTimeout
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	return m, nil
}

func derOf(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, 0, len(certs))
	for _, c := range certs {
		out = append(out, slices.Clone(c.Raw))
	}
	return out
}

// Changed returns a channel that is closed at the next change of the model.
// Take it before computing a configuration so that no change is missed.
func (m *Model) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// notifyLocked wakes every waiter on Changed.
func (m *Model) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// SetResources replaces the resources from configuration. A nil res means
// none. The resources must already be defaulted and validated (as
// localconfig.Load returns them); the model keeps res and never modifies it.
func (m *Model) SetResources(res *localconfig.Resources) {
	if res == nil {
		res = &localconfig.Resources{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resources = res
	m.policies = compile.Resources{
		AuthorizationPolicies: res.AuthorizationPolicies,
		MeshTLSPolicies:       res.MeshTLSPolicies,
		NamespacePolicies:     res.NamespacePolicies,
		RateLimitPolicies:     res.RateLimitPolicies,
	}
	clear(m.warned)
	m.pruneLastGoodLocked()
	m.routes = m.compileRoutesLocked()
	m.notifyLocked()
}

// SetRevocations replaces the revocations sent to every proxy (nil means
// none). The model keeps r and never modifies it; neither may the caller.
func (m *Model) SetRevocations(r *meshv1.Revocations) {
	sum := revocationsDigest(r) // once per change, not per proxy
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked, m.revokedSum = r, sum
	m.notifyLocked()
}

// SetQuarantine replaces the quarantined identities sent to every proxy
// (nil means none). The model keeps q and never modifies it; neither may
// the caller.
func (m *Model) SetQuarantine(q *meshv1.Quarantine) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.quarantine = q
	m.notifyLocked()
}

// SetTrustBundle replaces the roots sent to proxies.
func (m *Model) SetTrustBundle(roots []*x509.Certificate) {
	der := derOf(roots)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bundle = der
	m.notifyLocked()
}

// Register adds a workload announced by a connected proxy and returns the
// function that removes it again (idempotent), to be called when the proxy's
// stream ends. Two live registrations of the same namespace and name are both
// kept: a restarted proxy may reconnect before its old stream ends. Errors
// wrap ErrInvalid.
func (m *Model) Register(r Registration) (unregister func(), err error) {
	w, err := m.workloadOf(r)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.nextRegID++
	regID := m.nextRegID
	m.registered[regID] = w
	m.notifyLocked()
	m.mu.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			delete(m.registered, regID)
			m.notifyLocked()
		})
	}, nil
}

// Leave marks the live registrations of workload name by identity id at
// tunnelAddress, made from peerIP, as leaving: they stop being endpoints
// of any service at once, while the leaving proxy keeps its own
// configuration until its registration ends. Requiring the registering
// connection's address keeps a replica sharing the identity from
// withdrawing its siblings. It reports whether any registration matched.
func (m *Model) Leave(id spiffeid.ID, name, tunnelAddress string, peerIP netip.Addr) bool {
	ns, sa, err := identity.ParseWorkloadID(id)
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	found := false
	for regID, w := range m.registered {
		if w.namespace == ns && w.serviceAccount == sa && w.name == name && w.tunnelAddress == tunnelAddress &&
			w.peerIP == peerIP.Unmap() && !w.leaving {
			w.leaving = true
			m.registered[regID] = w
			found = true
		}
	}
	if found {
		m.notifyLocked()
	}
	return found
}

func (m *Model) workloadOf(r Registration) (workload, error) {
	if r.ID.TrustDomain() != m.td {
		return workload{}, fmt.Errorf("%w: identity %q is not in trust domain %q", ErrInvalid, r.ID, m.td)
	}
	ns, sa, err := identity.ParseWorkloadID(r.ID)
	if err != nil {
		return workload{}, fmt.Errorf("%w: identity %q is not a workload identity: %w", ErrInvalid, r.ID, err)
	}
	if err := ValidateWorkload(r.Name, r.Labels, r.TunnelAddress, r.Address); err != nil {
		return workload{}, err
	}
	addr := workloadAddress(r.Address, r.TunnelAddress)
	if addr != "" && addr != r.PeerIP.Unmap().String() {
		// Not proven: reachable through its services only.
		m.logger.Warn("workload address is not the address its proxy connects from; ignoring it",
			"spiffe_id", r.ID.String(), "workload", r.Name, "address", addr, "peer", r.PeerIP.String())
		addr = ""
	}
	return workload{
		namespace:      ns,
		name:           r.Name,
		serviceAccount: sa,
		labels:         maps.Clone(r.Labels),
		tunnelAddress:  r.TunnelAddress,
		address:        addr,
		peerIP:         r.PeerIP.Unmap(),
	}, nil
}

// workloadAddress is the IP a workload is reached at: address when set,
// else the host of its tunnel address when that is an IP. A loopback
// address is no workload's own (every proxy in local mode shares it, and
// interception never sees loopback traffic): none.
func workloadAddress(address, tunnelAddress string) string {
	if address == "" {
		host, _, err := net.SplitHostPort(tunnelAddress)
		if err != nil {
			return ""
		}
		address = host
	}
	ip, err := netip.ParseAddr(address)
	if err != nil || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.Zone() != "" {
		return ""
	}
	return ip.Unmap().String()
}

// ValidateWorkload checks what a proxy says about its workload: a valid
// name, at most MaxLabels labels with Kubernetes label syntax, and a
// host:port tunnel address, and an IP address (or none). Errors wrap
// ErrInvalid and say what to fix.
func ValidateWorkload(name string, labels map[string]string, tunnelAddress, address string) error {
	if name == "" {
		return fmt.Errorf("%w: workload name is required", ErrInvalid)
	}
	if err := identity.ValidateName(name); err != nil {
		return fmt.Errorf("%w: workload name %q: %w", ErrInvalid, name, err)
	}
	if len(labels) > MaxLabels {
		return fmt.Errorf("%w: %d labels, at most %d are allowed", ErrInvalid, len(labels), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("%w: label key %q: %s", ErrInvalid, k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(labels[k]); len(errs) > 0 {
			return fmt.Errorf("%w: label %q value %q: %s", ErrInvalid, k, labels[k], strings.Join(errs, "; "))
		}
	}
	if err := validateHostPort(tunnelAddress); err != nil {
		return fmt.Errorf("%w: tunnel address %q: %w", ErrInvalid, tunnelAddress, err)
	}
	if address != "" {
		ip, err := netip.ParseAddr(address)
		if err != nil || ip.Zone() != "" || ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("%w: workload address %q: want the workload's unicast IP address, such as 10.0.0.7", ErrInvalid, address)
		}
	}
	return nil
}

func validateHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "" {
		return errors.New("host is empty: peers must be able to dial it")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return errors.New("host is an unspecified address: peers must be able to dial it")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return errors.New("port must be a number from 1 to 65535")
	}
	return nil
}

// ParseUpstream splits an upstream service reference, "name" (in namespace
// defaultNamespace) or "name.namespace". Errors wrap ErrInvalid.
func ParseUpstream(s, defaultNamespace string) (name, namespace string, err error) {
	name, namespace, qualified := strings.Cut(s, ".")
	if !qualified {
		namespace = defaultNamespace
	}
	if err := identity.ValidateName(name); err != nil {
		return "", "", fmt.Errorf("%w: upstream %q: service name %q: %w (want \"name\" or \"name.namespace\")", ErrInvalid, s, name, err)
	}
	if err := identity.ValidateName(namespace); err != nil {
		return "", "", fmt.Errorf("%w: upstream %q: namespace %q: %w (want \"name\" or \"name.namespace\")", ErrInvalid, s, namespace, err)
	}
	return name, namespace, nil
}

// ConfigFor compiles the configuration of the proxy with identity id that
// stands in front of workload workloadName and sends traffic to upstreams.
// Equal inputs and model state give equal configurations with equal
// versions.
func (m *Model) ConfigFor(id spiffeid.ID, workloadName string, upstreams []string) *meshv1.ProxyConfig {
	return m.configFor(id, workloadName, upstreams, false)
}

// TransparentConfigFor compiles the configuration of a proxy that
// intercepts its app's traffic: every service of the mesh, with its
// addresses, so that any destination the app dials can be recognised.
func (m *Model) TransparentConfigFor(id spiffeid.ID, workloadName string) *meshv1.ProxyConfig {
	return m.configFor(id, workloadName, nil, true)
}

func (m *Model) configFor(id spiffeid.ID, workloadName string, upstreams []string, transparent bool) *meshv1.ProxyConfig {
	ns, sa, err := identity.ParseWorkloadID(id)
	if err != nil || id.TrustDomain() != m.td {
		// Not a workload of this mesh: it gets no inbound ports and its
		// unqualified upstreams resolve nowhere.
		ns, sa = "", ""
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	workloads := m.workloadsLocked()
	cfg := &meshv1.ProxyConfig{
		SpiffeId:    id.String(),
		TrustBundle: slices.Clone(m.bundle),
		Settings: &meshv1.Settings{
			ConnectTimeout: durationpb.New(m.connectTimeout),
		},
	}
	if transparent {
		cfg.Settings.Egress = m.egress
		upstreams = upstreams[:0]
		for i := range m.resources.Services {
			s := &m.resources.Services[i]
			upstreams = append(upstreams, s.Name+"."+namespaceOf(s.Namespace))
		}
	}
	cfg.Services = m.servicesLocked(workloads, ns, upstreams)
	cfg.Services = m.routeServicesLocked(cfg.Services, workloads)
	m.dropAmbiguousIPsLocked(cfg.Services, workloads)
	cfg.Authorization = authzpb.ToProto(denyAll("no registered workload of this mesh"))
	if ns != "" {
		if self, ok := m.selfLocked(ns, sa, workloadName); ok {
			cfg.Inbound = m.inboundLocked(self)
			cfg.Authorization = authzpb.ToProto(m.policyLocked(self))
			if transparent && m.egress == meshv1.EgressMode_EGRESS_ALLOW_LISTED {
				cfg.Egress = m.egressLocked(self)
			}
		}
	}
	// The quarantine list is bounded to a few hundred KiB and part of the
	// version like the rest.
	cfg.Quarantine = m.quarantine
	// The revocation list, the same for every proxy and up to 1 MiB, is
	// hashed once by SetRevocations, not per proxy and change.
	cfg.Version = version(cfg, m.revokedSum)
	cfg.Revocations = m.revoked
	return cfg
}

// Version is the content version of cfg: a digest of everything in it but
// its version field.
func Version(cfg *meshv1.ProxyConfig) string {
	c := proto.CloneOf(cfg)
	c.Revocations = nil
	return version(c, revocationsDigest(cfg.GetRevocations()))
}

// version is the content version of cfg without its revocations, whose
// digest is revokedSum.
func version(cfg *meshv1.ProxyConfig, revokedSum [sha256.Size]byte) string {
	c := proto.CloneOf(cfg)
	c.Version = ""
	c.Revocations = nil
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		// Marshalling a well-formed message built in this package does
		// not fail; should it, an unstable version only costs a push.
		return "unversioned"
	}
	h := sha256.New()
	h.Write(b)
	h.Write(revokedSum[:])
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// revocationsDigest is the digest of r in deterministic encoding; zero
// when r is nil.
func revocationsDigest(r *meshv1.Revocations) [sha256.Size]byte {
	if r == nil {
		return [sha256.Size]byte{}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return [sha256.Size]byte{} // as for version: costs a push at most
	}
	return sha256.Sum256(b)
}

// workloadsLocked returns every endpoint candidate: declared and registered.
func (m *Model) workloadsLocked() []workload {
	out := make([]workload, 0, len(m.resources.Workloads)+len(m.registered))
	for _, w := range m.resources.Workloads {
		out = append(out, workload{
			namespace:      namespaceOf(w.Namespace),
			name:           w.Name,
			serviceAccount: w.Spec.ServiceAccount,
			labels:         w.Labels,
			tunnelAddress:  w.Spec.TunnelAddress,
			address:        workloadAddress(w.Spec.Address, w.Spec.TunnelAddress),
		})
	}
	for _, w := range m.registered {
		out = append(out, w)
	}
	return out
}

func namespaceOf(ns string) string {
	if ns == "" {
		return v1alpha1.DefaultNamespace
	}
	return ns
}

// selects reports whether svc (in its namespace) selects w.
func selects(svc *v1alpha1.Service, w workload) bool {
	if namespaceOf(svc.Namespace) != w.namespace {
		return false
	}
	if len(svc.Spec.Selector) == 0 {
		// Validation refuses an empty selector; should one get here, it
		// selects nothing rather than everything.
		return false
	}
	for k, v := range svc.Spec.Selector {
		if got, ok := w.labels[k]; !ok || got != v {
			return false
		}
	}
	if len(svc.Spec.ServiceAccounts) > 0 && !slices.Contains(svc.Spec.ServiceAccounts, w.serviceAccount) {
		return false
	}
	return true
}

type serviceKey struct{ namespace, name string }

func (m *Model) findServiceLocked(k serviceKey) *v1alpha1.Service {
	for i := range m.resources.Services {
		s := &m.resources.Services[i]
		if s.Name == k.name && namespaceOf(s.Namespace) == k.namespace {
			return s
		}
	}
	return nil
}

func (m *Model) servicesLocked(workloads []workload, ownNamespace string, upstreams []string) []*meshv1.Service {
	keys := make([]serviceKey, 0, len(upstreams))
	for _, u := range upstreams {
		name, ns, qualified := strings.Cut(u, ".")
		if !qualified {
			ns = ownNamespace
		}
		keys = append(keys, serviceKey{namespace: ns, name: name})
	}
	slices.SortFunc(keys, func(a, b serviceKey) int {
		if c := strings.Compare(a.namespace, b.namespace); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	keys = slices.Compact(keys)

	out := make([]*meshv1.Service, 0, len(keys))
	for _, k := range keys {
		svc := m.findServiceLocked(k)
		if svc == nil {
			out = append(out, &meshv1.Service{Name: k.name, Namespace: k.namespace})
			continue
		}
		out = append(out, m.serviceLocked(k, svc, workloads))
	}
	return out
}

// serviceLocked returns the service svc, whose key is k, with its ports,
// addresses and endpoints.
func (m *Model) serviceLocked(k serviceKey, svc *v1alpha1.Service, workloads []workload) *meshv1.Service {
	ms := &meshv1.Service{Name: k.name, Namespace: k.namespace}
	ms.Addresses = slices.Clone(svc.Spec.Addresses)
	for _, p := range svc.Spec.Ports {
		ms.Ports = append(ms.Ports, &meshv1.ServicePort{
			Name:       p.Name,
			Port:       uint32(p.Port),
			TargetPort: uint32(targetPort(p)),
			Protocol:   protocolOf(p.Protocol),
		})
	}
	ms.Endpoints = m.endpointsLocked(svc, workloads)
	ms.Traffic = m.trafficLocked(k)
	return ms
}

func (m *Model) endpointsLocked(svc *v1alpha1.Service, workloads []workload) []*meshv1.Endpoint {
	var eps []*meshv1.Endpoint
	for _, w := range workloads {
		if w.leaving || !selects(svc, w) {
			continue
		}
		id, err := identity.WorkloadID(m.td, w.namespace, w.serviceAccount)
		if err != nil {
			// A declared workload whose identity cannot be formed is no
			// endpoint: nobody could prove it.
			m.warnOnceLocked("bad-id/"+w.namespace+"/"+w.name, "workload has no valid identity; not an endpoint",
				"namespace", w.namespace, "workload", w.name, "service_account", w.serviceAccount, "error", err)
			continue
		}
		eps = append(eps, &meshv1.Endpoint{
			Address:  w.tunnelAddress,
			SpiffeId: id.String(),
			Workload: w.name,
			Ip:       w.address,
		})
	}
	slices.SortFunc(eps, func(a, b *meshv1.Endpoint) int {
		if c := strings.Compare(a.Workload, b.Workload); c != 0 {
			return c
		}
		if c := strings.Compare(a.Address, b.Address); c != 0 {
			return c
		}
		return strings.Compare(a.SpiffeId, b.SpiffeId)
	})
	// A proxy that reconnected before its old stream ended is registered
	// twice with the same content: list it once.
	return slices.CompactFunc(eps, func(a, b *meshv1.Endpoint) bool {
		return a.Workload == b.Workload && a.Address == b.Address && a.SpiffeId == b.SpiffeId && a.Ip == b.Ip
	})
}

// selfLocked returns the workload the proxy (ns, sa) named name stands in
// front of: its most recent registration, else a declared workload.
func (m *Model) selfLocked(ns, sa, name string) (workload, bool) {
	var (
		best   workload
		found  bool
		bestID uint64
	)
	for regID, w := range m.registered {
		if w.namespace == ns && w.serviceAccount == sa && w.name == name && (!found || regID > bestID) {
			best, bestID, found = w, regID, true
		}
	}
	if found {
		return best, true
	}
	for _, w := range m.resources.Workloads {
		if namespaceOf(w.Namespace) == ns && w.Name == name && w.Spec.ServiceAccount == sa {
			return workload{namespace: ns, name: name, serviceAccount: sa, labels: w.Labels, tunnelAddress: w.Spec.TunnelAddress,
				address: workloadAddress(w.Spec.Address, w.Spec.TunnelAddress)}, true
		}
	}
	return workload{}, false
}

// policyLocked compiles the authorization policy of the workload self and
// checks it as its proxy will (authz.Compile, ratelimit.New). The
// resources are validated one by one when they are loaded, but some
// limits only show once several policies select one workload (too many
// rate limits, say): such a policy is never sent. The workload keeps the
// last policy that passed, or, if none ever did, one that denies
// everything; the problem is logged. The controller never sends a policy
// the proxy would refuse, and never fails open.
func (m *Model) policyLocked(self workload) *authz.WorkloadPolicy {
	key := self.namespace + "/" + self.name
	wp, err := compile.ForWorkload(&m.policies, compile.Workload{Namespace: self.namespace, Labels: self.labels}, compile.Options{})
	if err == nil {
		_, err = authz.Compile(wp)
	}
	if err == nil {
		_, err = ratelimit.New(wp.RateLimits, ratelimit.Options{})
	}
	if err == nil {
		m.lastGoodPolicy[key] = wp
		return wp
	}
	last, ok := m.lastGoodPolicy[key]
	m.warnOnceLocked("policy/"+key+"/"+err.Error(),
		"the authorization policies that select this workload cannot be enforced together; it keeps its last good policy (or denies everything if it never had one) until they are fixed",
		"namespace", self.namespace, "workload", self.name, "kept_last_good", ok, "err", err)
	if ok {
		return last
	}
	return denyAll("the policies that select this workload cannot be enforced together: see the controller's log")
}

// pruneLastGoodLocked forgets the last good policies of workloads that
// are neither declared nor registered.
func (m *Model) pruneLastGoodLocked() {
	if len(m.lastGoodPolicy) == 0 {
		return
	}
	live := make(map[string]bool)
	for _, w := range m.workloadsLocked() {
		live[w.namespace+"/"+w.name] = true
	}
	for k := range m.lastGoodPolicy {
		if !live[k] {
			delete(m.lastGoodPolicy, k)
		}
	}
}

// denyAll is a policy that denies every request, saying why.
func denyAll(why string) *authz.WorkloadPolicy {
	return &authz.WorkloadPolicy{
		Default:       authz.DefaultDenyAll,
		DefaultSource: why,
		TLS:           authz.TLSPolicy{Mode: authz.TLSStrict, Source: why},
	}
}

func (m *Model) inboundLocked(self workload) []*meshv1.InboundPort {
	ns, name := self.namespace, self.name
	// target port -> protocol -> services asking for it
	wanted := make(map[uint32]map[meshv1.Protocol][]string)
	for i := range m.resources.Services {
		svc := &m.resources.Services[i]
		if !selects(svc, self) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			tp := uint32(targetPort(p))
			if wanted[tp] == nil {
				wanted[tp] = make(map[meshv1.Protocol][]string)
			}
			pr := protocolOf(p.Protocol)
			wanted[tp][pr] = append(wanted[tp][pr], svc.Name)
		}
	}
	out := make([]*meshv1.InboundPort, 0, len(wanted))
	for _, tp := range slices.Sorted(maps.Keys(wanted)) {
		protos := slices.Sorted(maps.Keys(wanted[tp]))
		// On conflict the lowest protocol wins: TCP before HTTP before
		// HTTP/2, the least the proxy assumes about the bytes.
		chosen := protos[0]
		if len(protos) > 1 {
			var desc []string
			for _, p := range protos {
				desc = append(desc, fmt.Sprintf("%s by %s", p, strings.Join(wanted[tp][p], ",")))
			}
			m.warnOnceLocked(fmt.Sprintf("conflict/%s/%s/%d/%s", ns, name, tp, strings.Join(desc, ";")),
				"services disagree on the protocol of a target port; using the lowest",
				"namespace", ns, "workload", name, "target_port", tp,
				"protocols", strings.Join(desc, "; "), "chosen", chosen.String())
		}
		out = append(out, &meshv1.InboundPort{Port: tp, Protocol: chosen})
	}
	return out
}

// dropAmbiguousIPsLocked clears the IP of every endpoint in services whose
// IP is also a service address or is claimed by more than one identity, so
// that a transparent proxy never sends a connection meant for one
// destination to another (fail closed: such an endpoint is still reached
// through its services).
func (m *Model) dropAmbiguousIPsLocked(services []*meshv1.Service, workloads []workload) {
	serviceAddr := make(map[netip.Addr]bool)
	for i := range m.resources.Services {
		for _, a := range m.resources.Services[i].Spec.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				serviceAddr[ip.Unmap()] = true
			}
		}
	}
	owner := make(map[netip.Addr]string) // IP -> the one identity claiming it, "" when several
	for _, w := range workloads {
		ip, err := netip.ParseAddr(w.address)
		if err != nil {
			continue
		}
		id := w.namespace + "/" + w.serviceAccount
		if prev, ok := owner[ip]; ok && prev != id {
			id = ""
		}
		owner[ip] = id
	}
	for _, s := range services {
		for _, e := range s.GetEndpoints() {
			ip, err := netip.ParseAddr(e.GetIp())
			if err != nil {
				continue
			}
			if serviceAddr[ip.Unmap()] || owner[ip.Unmap()] == "" {
				m.warnOnceLocked("ambiguous-ip/"+ip.String(), "an endpoint IP is also a service address or is claimed by several identities; not mapping it",
					"ip", ip.String(), "workload", e.GetWorkload(), "spiffe_id", e.GetSpiffeId())
				e.Ip = ""
			}
		}
	}
}

// warnOnceLocked logs msg once per key until the resources change, so that
// recomputing configurations for many streams does not repeat it.
func (m *Model) warnOnceLocked(key, msg string, args ...any) {
	if _, ok := m.warned[key]; ok {
		return
	}
	if len(m.warned) >= maxWarned {
		// Registrations come and go between configuration changes; keep
		// the memory bounded at the cost of an occasional repeat.
		clear(m.warned)
	}
	m.warned[key] = struct{}{}
	m.logger.Warn(msg, args...)
}

func targetPort(p v1alpha1.ServicePort) int32 {
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return p.Port
}

func protocolOf(p v1alpha1.Protocol) meshv1.Protocol {
	switch p {
	case v1alpha1.ProtocolTCP:
		return meshv1.Protocol_PROTOCOL_TCP
	case v1alpha1.ProtocolAuto, "":
		return meshv1.Protocol_PROTOCOL_AUTO
	case v1alpha1.ProtocolHTTP:
		return meshv1.Protocol_PROTOCOL_HTTP
	case v1alpha1.ProtocolHTTP2, v1alpha1.ProtocolGRPC:
		return meshv1.Protocol_PROTOCOL_HTTP2
	default:
		// Validation refuses unknown protocols; should one get here the
		// proxy refuses the port rather than guessing.
		return meshv1.Protocol_PROTOCOL_UNSPECIFIED
	}
}
