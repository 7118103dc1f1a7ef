package identity

import "github.com/spiffe/go-spiffe/v2/spiffeid"

// The controller's own workload identity.
const (
	ControllerNamespace      = "rampart-system"
	ControllerServiceAccount = "rampart-controller"
)

// ControllerID is the SPIFFE ID the controller serves with in trust domain
// td; proxies accept no other identity from the controller.
func ControllerID(td spiffeid.TrustDomain) spiffeid.ID {
	// Constant segments that satisfy the SPIFFE grammar: this cannot fail.
	id, _ := spiffeid.FromSegments(td, "ns", ControllerNamespace, "sa", ControllerServiceAccount)
	return id
}
