// Package podnet is test infrastructure for end-to-end tests: it gives a test
// Kubernetes-like pods on one machine, each pod a Linux network namespace with
// its own eth0 and address, wired to a bridge that lives in a private "node"
// namespace. Nothing is created in or changed in the machine's root network
// namespace.
//
// It needs Linux, root and iproute2 (`ip`); CommandAs and StartAs also need
// setpriv from util-linux. Tests call New, which skips when the harness cannot
// run, or fails instead when RAMPART_REQUIRE_NETNS=1 (as CI sets it).
//
// Only tests may import it: no production code, and it depends on nothing in
// Rampart.
package podnet
