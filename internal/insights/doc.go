// Package insights is the mesh's threat detection: an Engine that learns,
// from the per-edge summaries the proxies report and the security refusals
// they count, a baseline of each workload's callers (identities, routes,
// bands of request rate and error share), raises Events when traffic leaves
// it (new edges, rate and error spikes, denial bursts, route scans, TLS and
// plaintext refusals, changed code digests), responds by quarantining the
// source where the Policy says so, and keeps an hourly ledger of every
// edge's traffic that compliance reports are made from. A Store persists the
// baseline and the ledger across restarts (FileStore: a JSON file).
//
// Memory is bounded everywhere (see the Max* constants); what does not fit
// is counted (Stats) and flagged in the Snapshot. The package is fed by the
// controller: it depends on internal/telemetry/graph, internal/identity and
// internal/fsutil, never on the control plane, the proxy or Kubernetes, and
// imports no gRPC itself (deps_test.go keeps it so).
package insights
