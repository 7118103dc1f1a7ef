// Package h1 is the proxy's lean HTTP/1.1 codec for its plain-text hops on
// the workload's side: a Server for the app's requests (outbound) and a
// Client for the requests passed on to the app (inbound).
//
// Each does what net/http does for these hops, keep-alive and pipelining,
// chunked bodies and trailers, 1xx responses, Expect: 100-continue,
// requests cancelled when the client goes away or their context ends,
// without net/http's per-request costs: no goroutine or background read
// per request, no channel hand-offs, connections pooled without a
// goroutine per connection, one allocation for a message's header strings.
// The goroutine that serves a connection parses and writes it; the one
// that calls RoundTrip writes the request and reads the response, and only
// a request body of unknown or large length is written from a goroutine of
// its own, so that an early response is not held up by it.
//
// It parses untrusted input strictly: no whitespace before a field's
// colon, no line folding, no control characters in values, no conflicting
// lengths, no transfer coding but chunked, bounded header blocks; it refuses rather
// than guesses, so that the proxy and the app never frame a message
// differently. HTTP/2, upgrades and hijacking are not its business.
//
// It must not depend on Kubernetes packages or on other proxy packages.
package h1
