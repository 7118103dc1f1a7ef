// Package ca is the mesh's certificate authority: roots and an intermediate
// issuer kept as PEM files in a state directory, which turns attested
// identities into X.509-SVIDs.
//
// The trust bundle may hold several roots: the active one, under which the
// issuer is signed, and during a rotation the next (PrepareRoot) or the
// previous one (ActivateRoot), until RetireRoot removes it, which it refuses
// while the leaves in use that the controller records (PublishLeaves) chain
// to it. RotateIssuer replaces the intermediate. Another process (the
// rampart CLI) makes these changes under the directory's file lock; a
// running CA adopts them with Reload. An External CA's roots and
// intermediate come from files, and Rampart holds no root key.
//
// The root is created once, on the first Open of an empty directory, and is
// what workloads trust (Roots). Leaves are signed by an intermediate that is
// re-issued from the root, on Open or before signing, when it comes within a
// tenth of its lifetime of expiry. SignCSR fails closed: a CSR is refused
// unless it carries exactly the attested SPIFFE ID and nothing else; errors
// wrap ErrInvalidCSR or ErrIdentityMismatch so that the gRPC edge can map
// them to status codes.
//
// A leaf may also record what was attested about its holder's code
// (SignCSRWith): the digest, in the extension internal/codedigest defines.
//
// This package depends on go-spiffe, the standard library, internal/fsutil
// and internal/codedigest only. It must not import Kubernetes packages, the
// controller, or anything under internal/proxy: it sits below all of them.
package ca
