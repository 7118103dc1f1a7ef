// Package authz decides whether a request to a workload is allowed: the one
// evaluation library that the proxy enforces with and that "rampart policy
// explain" explains with, so that what the CLI explains is what the proxy
// does.
//
// The controller compiles the resources of api/v1alpha1 (AuthorizationPolicy,
// MeshTLSPolicy, NamespacePolicy, RateLimitPolicy) into a WorkloadPolicy, the
// plain-data form one workload's proxy needs (see internal/authz/compile);
// Compile turns a WorkloadPolicy into an Engine; Engine.Decide evaluates a
// Request without allocating, unless a rule's CEL condition has to be
// evaluated; Engine.Explain returns the whole chain of policies and rules
// behind the same decision. Paths and hosts are matched in the form that
// internal/authz/normalize gives them; rate limits live in
// internal/authz/ratelimit.
//
// The proxy links this package: it must not depend on Kubernetes packages,
// on api/, or on any controller package (a test enforces it).
package authz
