package controlplane

import (
	"errors"
	"fmt"
	"net/netip"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/insights"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// Insights is told what the control plane learns about the mesh's
// traffic and code, for threat detection (internal/insights). Its methods
// must not block for long: they are called on the request path.
type Insights interface {
	// ObserveReport receives each telemetry report the graph accepted.
	ObserveReport(graph.Report)
	// ObserveSecurity receives the validated security counts of a report.
	ObserveSecurity([]insights.SecurityObservation)
	// ObserveAttestation receives the identity and code digest of every
	// certificate issued with an attested digest. The workload name is
	// empty: Certify does not know it (the Watch stream names it).
	ObserveAttestation(id spiffeid.ID, workload, digest string)
}

// Bounds on the security counts of a report.
const (
	// MaxSecurityCounts bounds the security counts of one report that
	// are read (a proxy sends at most 64); the others are skipped.
	MaxSecurityCounts = 64
	// maxSerialLen bounds a presented serial: 20 bytes in hexadecimal.
	maxSerialLen = 40
	// maxIssuerLen bounds a presented issuer (RFC 4514).
	maxIssuerLen = 256
	// maxSecurityIDLen bounds a presented SPIFFE ID.
	maxSecurityIDLen = 2048
	// MaxSecurityPerSecond bounds the count of one security entry per
	// second of interval: more handshakes than a proxy could refuse.
	MaxSecurityPerSecond = 1_000_000
)

// Reasons a security count is skipped: the "reason" label of
// rampart_controller_telemetry_security_skipped_total.
const (
	SecuritySkipTooMany   = "too_many"
	SecuritySkipBadKind   = "bad_kind"
	SecuritySkipBadPeerIP = "bad_peer_ip"
	SecuritySkipBadID     = "bad_spiffe_id"
	SecuritySkipBadSerial = "bad_serial"
	SecuritySkipBadIssuer = "bad_issuer"
	SecuritySkipBadPort   = "bad_port"
	SecuritySkipBadCount  = "bad_count"
)

var securitySkipReasons = []string{
	SecuritySkipTooMany, SecuritySkipBadKind, SecuritySkipBadPeerIP, SecuritySkipBadID,
	SecuritySkipBadSerial, SecuritySkipBadIssuer, SecuritySkipBadPort, SecuritySkipBadCount,
}

var securityKinds = map[meshv1.SecurityKind]insights.SecurityKind{
	meshv1.SecurityKind_SECURITY_KIND_TLS_UNKNOWN_CA:      insights.TLSUnknownCA,
	meshv1.SecurityKind_SECURITY_KIND_TLS_REVOKED:         insights.TLSRevoked,
	meshv1.SecurityKind_SECURITY_KIND_TLS_BAD_CERTIFICATE: insights.TLSBadCertificate,
	meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT: insights.PlaintextOnStrict,
	meshv1.SecurityKind_SECURITY_KIND_TLS_QUARANTINED:     insights.TLSQuarantined,
}

// toSecurityObservations validates the security counts of r, reported
// by reporter for its workload in namespace ns, and converts the good
// ones; a bad one is skipped and counted in skipped, the rest kept.
func toSecurityObservations(r *meshv1.TelemetryReport, reporter spiffeid.ID, ns string, skipped *skippedCounts) []insights.SecurityObservation {
	scs := r.GetSecurity()
	if len(scs) == 0 {
		return nil
	}
	maxCount := uint64(r.GetInterval().AsDuration().Seconds() * MaxSecurityPerSecond)
	out := make([]insights.SecurityObservation, 0, min(len(scs), MaxSecurityCounts))
	for i, sc := range scs {
		if i >= MaxSecurityCounts {
			skipped.skip(SecuritySkipTooMany, fmt.Errorf("security count %d: past the %d a report may carry", i, MaxSecurityCounts))
			continue
		}
		o, reason, err := toSecurityObservation(sc, maxCount)
		if err != nil {
			skipped.skip(reason, fmt.Errorf("security count %d: %w", i, err))
			continue
		}
		o.Reporter, o.Namespace, o.Workload = reporter, ns, r.GetWorkload()
		out = append(out, o)
	}
	return out
}

func toSecurityObservation(sc *meshv1.SecurityCount, maxCount uint64) (insights.SecurityObservation, string, error) {
	var o insights.SecurityObservation
	kind, ok := securityKinds[sc.GetKind()]
	if !ok {
		return o, SecuritySkipBadKind, fmt.Errorf("kind %v: not a known security kind", sc.GetKind())
	}
	o.Kind = kind
	ip, err := netip.ParseAddr(sc.GetPeerIp())
	if err != nil || ip.Zone() != "" {
		return o, SecuritySkipBadPeerIP, fmt.Errorf("peer_ip %q: want an IP address without zone", truncate(sc.GetPeerIp()))
	}
	o.PeerIP = ip.Unmap().String()
	if kind == insights.PlaintextOnStrict && (sc.GetPresentedSpiffeId() != "" || sc.GetPresentedSerial() != "" || sc.GetPresentedIssuer() != "") {
		return o, SecuritySkipBadID, errors.New("a plaintext refusal presents no certificate: presented_spiffe_id, presented_serial and presented_issuer must be empty")
	}
	if s := sc.GetPresentedSpiffeId(); s != "" {
		if len(s) > maxSecurityIDLen {
			return o, SecuritySkipBadID, fmt.Errorf("presented_spiffe_id: %d bytes, at most %d", len(s), maxSecurityIDLen)
		}
		id, err := spiffeid.FromString(s)
		if err != nil {
			return o, SecuritySkipBadID, fmt.Errorf("presented_spiffe_id %q: %w", truncate(s), err)
		}
		o.PresentedID = id
	}
	if s := sc.GetPresentedSerial(); s != "" {
		if len(s) > maxSerialLen || !isLowerHex(s) {
			return o, SecuritySkipBadSerial, fmt.Errorf("presented_serial %q: want at most %d lower-case hexadecimal digits", truncate(s), maxSerialLen)
		}
		o.Serial = s
	}
	if s := sc.GetPresentedIssuer(); s != "" {
		if len(s) > maxIssuerLen || !utf8.ValidString(s) {
			return o, SecuritySkipBadIssuer, fmt.Errorf("presented_issuer: want at most %d bytes of UTF-8, got %d", maxIssuerLen, len(s))
		}
		o.Issuer = s
	}
	if p := sc.GetPort(); p > 65535 {
		return o, SecuritySkipBadPort, fmt.Errorf("port %d: want 0 to 65535", p)
	}
	o.Port = sc.GetPort()
	if n := sc.GetCount(); n == 0 || n > maxCount {
		return o, SecuritySkipBadCount, fmt.Errorf("count %d: want 1 to %d (%d per second of interval)", n, maxCount, MaxSecurityPerSecond)
	}
	o.Count = sc.GetCount()
	return o, "", nil
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// truncate cuts s for a log line.
func truncate(s string) string {
	const n = 64
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// observeReport tells insights of an accepted report and of its security
// counts, skipping and counting the bad ones (the first logged on the
// stream). Security counts are validated whether or not insights is set,
// so that a proxy's bad counts show in the metrics either way.
func (s *Server) observeReport(log interface{ Warn(string, ...any) }, logged map[string]bool, r *meshv1.TelemetryReport, rep graph.Report, id spiffeid.ID, ns string) {
	var skipped skippedCounts
	obs := toSecurityObservations(r, id, ns, &skipped)
	for reason, n := range skipped.n {
		s.tmetrics.security.WithLabelValues(reason).Add(float64(n))
	}
	if skipped.first != nil && !logged["security_counts"] {
		logged["security_counts"] = true
		log.Warn("telemetry security counts skipped, the rest of the report kept; later skips on this stream are only counted",
			"error", skipped.first.Error())
	}
	if s.insights == nil {
		return
	}
	s.insights.ObserveReport(rep)
	if len(obs) > 0 {
		s.insights.ObserveSecurity(obs)
	}
}
