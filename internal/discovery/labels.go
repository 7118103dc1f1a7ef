package discovery

import (
	"maps"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// WorkloadLabels returns a copy of the labels of the workload named name
// that runs as id: those of its most recent registration, else those of
// its Workload document. It reports false when the model knows no such
// workload (or id is not a workload ID).
func (m *Model) WorkloadLabels(id spiffeid.ID, name string) (map[string]string, bool) {
	ns, sa, err := identity.ParseWorkloadID(id)
	if err != nil {
		return nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.selfLocked(ns, sa, name)
	if !ok {
		return nil, false
	}
	return maps.Clone(w.labels), true
}
