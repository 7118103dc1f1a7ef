// Package attest decides, on the controller, whether a workload asking for
// a certificate is who it claims to be and runs code it may run. Each way
// of proving it is an Attestor behind one small interface: a single-use
// join token (JoinToken), the kernel's word about a process on the
// controller's Unix socket and the SHA-256 of its executable (Unix), and a
// projected Kubernetes ServiceAccount token checked with TokenReview and
// against its pod (Kubernetes). Policies holds the
// WorkloadAttestationPolicy resources in force: which local processes may
// claim an identity over the Unix socket, and which code (by digest or by
// signature) may receive it whatever attested it.
//
// Every refusal is an *Error with a Reason from a closed set, for logs and
// metric labels; the gRPC edge (internal/controlplane) maps reasons to
// status codes, logs and counts them. Nothing here logs.
//
// It depends on api/v1alpha1 (the policy resource), internal/identity,
// internal/codedigest, go-spiffe, golang.org/x/sys and the standard
// library. It must not import Kubernetes client libraries (the Kubernetes
// attestor talks to the API server through the TokenReviewer and PodGetter
// interfaces its caller implements), gRPC, or anything under
// internal/proxy.
package attest
