// Package identity names workloads and admits them to the mesh.
//
// A workload's identity is the SPIFFE ID spiffe://<trust domain>/ns/<namespace>/sa/<service account>;
// WorkloadID builds one and ParseWorkloadID takes one apart, both checking
// that the names are DNS-1123 labels. A TokenStore keeps single-use join
// tokens, which bind a SPIFFE ID to a secret that a workload outside
// Kubernetes presents once to obtain its first certificate. The store is a
// JSON file shared by the CLI, which creates tokens, and the controller,
// which consumes them; an exclusive flock serialises their updates.
//
// This package depends on go-spiffe and the standard library only. It must
// not import Kubernetes packages, the controller, or anything under
// internal/proxy.
package identity
