package controlplane

import (
	"errors"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-mesh/rampart/internal/attest"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// Results of Certify, the "result" label of rampart_controller_certify_total.
const (
	ResultIssued  = "issued"
	ResultRefused = "refused"
)

// Reasons a Certify call is refused: the closed set of the "reason" label of
// rampart_controller_certify_total, with the reasons of internal/attest
// (attest.Reasons: the Unix socket, code integrity, Kubernetes), which the
// token reasons below share.
const (
	CertifyNoToken          = "no_token"
	CertifyBadToken         = "bad_token"
	CertifyUnknownToken     = "unknown_token"
	CertifyUsedToken        = "used_token"
	CertifyExpiredToken     = "expired_token"
	CertifyBadCSR           = "bad_csr"
	CertifyIdentityMismatch = "identity_mismatch"
	CertifyBadCertificate   = "bad_certificate"
	CertifyInternal         = "internal"
	CertifyRevoked          = "revoked" // the presented certificate or the identity is revoked
)

var certifyReasons = func() []string {
	rs := []string{
		CertifyNoToken, CertifyBadToken, CertifyUnknownToken, CertifyUsedToken, CertifyExpiredToken,
		CertifyBadCSR, CertifyIdentityMismatch, CertifyBadCertificate, CertifyInternal, CertifyRevoked,
	}
	for _, r := range attest.Reasons() {
		if !slices.Contains(rs, r) {
			rs = append(rs, r)
		}
	}
	return rs
}()

// Reasons a Watch stream is refused, besides the certificate reasons of
// meshtls (no_certificate, unknown_authority, expired, not_yet_valid,
// untrusted_domain, bad_certificate, handshake): the closed set of the
// "reason" label of rampart_controller_watch_refused_total.
const (
	WatchNotWorkload = "not_workload"
	WatchBadRequest  = "bad_request"
)

var watchReasons = []string{
	meshtls.ReasonNoCertificate, meshtls.ReasonUnknownAuthority, meshtls.ReasonExpired,
	meshtls.ReasonNotYetValid, meshtls.ReasonUntrustedDomain, meshtls.ReasonBadCertificate,
	meshtls.ReasonHandshake, meshtls.ReasonRevoked, WatchNotWorkload, WatchBadRequest,
}

type metrics struct {
	certify      *prometheus.CounterVec
	watchStreams prometheus.Gauge
	configPushes prometheus.Counter
	watchRefused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		certify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_certify_total",
			Help: "Certify calls by result (issued, refused) and refusal reason (code_not_allowed: the workload's code is not admitted).",
		}, []string{"result", "reason"}),
		watchStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_controller_watch_streams",
			Help: "Discovery Watch streams open now.",
		}),
		configPushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_controller_config_pushes_total",
			Help: "Proxy configurations sent on Watch streams.",
		}),
		watchRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_controller_watch_refused_total",
			Help: "Watch streams refused, by reason.",
		}, []string{"reason"}),
	}
	// Every series exists from the start, so that a rate over a refusal
	// that never happened yet is zero rather than absent.
	m.certify.WithLabelValues(ResultIssued, "")
	for _, r := range certifyReasons {
		m.certify.WithLabelValues(ResultRefused, r)
	}
	for _, r := range watchReasons {
		m.watchRefused.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.certify, m.watchStreams, m.configPushes, m.watchRefused} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					return nil, fmt.Errorf("controlplane: metrics already registered (one Server per registry): %w", err)
				}
				return nil, fmt.Errorf("controlplane: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// watchReason bounds a certificate refusal reason to the declared set.
func watchReason(r string) string {
	for _, known := range watchReasons {
		if r == known {
			return r
		}
	}
	return meshtls.ReasonBadCertificate
}
