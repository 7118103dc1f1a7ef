package discovery

import (
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// Registered reports whether identity id has a live registration of
// workload name: the proxy that stands in front of it holds, or held
// within the endpoint grace, a Watch stream. The control plane believes a
// proxy's telemetry about a workload only then.
func (m *Model) Registered(id spiffeid.ID, name string) bool {
	ns, sa, err := identity.ParseWorkloadID(id)
	if err != nil || id.TrustDomain() != m.td {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.registered {
		if w.namespace == ns && w.serviceAccount == sa && w.name == name {
			return true
		}
	}
	return false
}
