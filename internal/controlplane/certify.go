package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/attest"
	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/codedigest"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
)

// refusal is a refused call: the status the caller reads, the bounded reason
// that metrics and logs name, and the underlying error for the log.
type refusal struct {
	code   codes.Code
	reason string
	msg    string
	err    error
	id     spiffeid.ID
	digest string // the code digest concerned, when known
}

// caller is what the transport says about the caller.
type caller struct {
	addr  string
	certs []*x509.Certificate
	unix  *attest.UnixPeer // the process, on the Unix socket; nil on TCP
}

func callerOf(ctx context.Context) caller {
	var c caller
	p, ok := peer.FromContext(ctx)
	if !ok {
		return c
	}
	if p.Addr != nil {
		c.addr = p.Addr.String()
	}
	switch info := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		c.certs = info.State.PeerCertificates
	case unixAuthInfo:
		c.certs = info.State.PeerCertificates
		c.unix = info.peer
		if c.addr == "" || c.addr == "@" {
			c.addr = "unix"
		}
	}
	return c
}

// logAttrs are the attributes that describe c in a log line.
func (c caller) logAttrs() []any {
	attrs := []any{"peer", c.addr}
	if c.unix != nil && c.unix.PID > 0 {
		attrs = append(attrs, "pid", c.unix.PID, "uid", c.unix.UID, "gid", c.unix.GID)
	}
	return attrs
}

// attested is what Certify established about a caller before signing.
type attested struct {
	id       spiffeid.ID
	attestor string              // attest.Attestor* or attestorSVID
	digest   string              // attested code digest; "" if none
	proxy    string              // the proxy's digest when it runs the app measured; "" otherwise
	chain    []*x509.Certificate // what was issued
}

// attestorSVID names renewal with a presented SVID in logs.
const attestorSVID = "svid"

// Certify implements meshv1.IdentityServer.
func (is identityService) Certify(ctx context.Context, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, error) {
	s := is.s
	c := callerOf(ctx)
	resp, att, ref := s.certify(ctx, c, req)
	if ref != nil {
		s.metrics.certify.WithLabelValues(ResultRefused, ref.reason).Inc()
		attrs := append(c.logAttrs(), "reason", ref.reason)
		if att.attestor != "" {
			attrs = append(attrs, "attestor", att.attestor)
		}
		if !ref.id.IsZero() {
			attrs = append(attrs, "spiffe_id", ref.id.String())
		}
		if ref.digest != "" {
			attrs = append(attrs, "digest", ref.digest)
		}
		if ref.err != nil {
			attrs = append(attrs, "error", ref.err.Error())
		}
		level := slog.LevelWarn
		if ref.code == codes.Internal {
			level = slog.LevelError
		}
		s.logger.Log(ctx, level, "certify refused", attrs...)
		return nil, status.Error(ref.code, ref.msg)
	}
	s.metrics.certify.WithLabelValues(ResultIssued, "").Inc()
	attrs := append(c.logAttrs(), "spiffe_id", resp.GetSpiffeId(), "renewal", len(c.certs) > 0, "attestor", att.attestor)
	if att.digest != "" {
		attrs = append(attrs, "digest", att.digest)
	}
	if att.proxy != "" {
		attrs = append(attrs, "proxy_digest", att.proxy)
	}
	s.logger.Info("certify issued", attrs...)
	if s.issued != nil {
		var renewed *x509.Certificate
		if len(c.certs) > 0 {
			renewed = c.certs[0]
		}
		s.issued(att.chain, att.digest, renewed)
	}
	if s.insights != nil && att.digest != "" {
		s.insights.ObserveAttestation(att.id, "", att.digest)
	}
	return resp, nil
}

func (s *Server) certify(ctx context.Context, c caller, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, attested, *refusal) {
	var (
		att     attested
		carried string // the code digest the presented certificate records
	)
	if len(c.certs) > 0 {
		// Renewal: the caller's current SVID is the attestation. A
		// certificate that does not verify is a refusal, never a reason to
		// look at a token instead.
		att.attestor = attestorSVID
		peerID, err := meshtls.VerifyPeer(c.certs, s.bundle, s.now())
		if err != nil {
			reason := meshtls.Reason(err)
			return nil, att, &refusal{
				code: codes.Unauthenticated, reason: CertifyBadCertificate, err: err,
				msg: "client certificate refused (" + reason + "): " + err.Error() +
					"; present a current SVID of this trust domain, or connect without a certificate and use a join token",
			}
		}
		att.id = peerID
		carried, _ = codedigest.FromCertificate(c.certs[0])
		if req.GetJoinToken() != "" {
			return nil, att, &refusal{
				code: codes.InvalidArgument, reason: CertifyBadToken, id: att.id,
				msg: "join token must be empty when renewing with a valid SVID",
			}
		}
		if att.id.TrustDomain() != s.ca.TrustDomain() {
			return nil, att, &refusal{
				code: codes.PermissionDenied, reason: CertifyIdentityMismatch, id: att.id,
				msg: "identity " + att.id.String() + " is not in trust domain " + s.ca.TrustDomain().String() + "; this controller cannot renew it",
			}
		}
		if _, _, err := identity.ParseWorkloadID(att.id); err != nil {
			return nil, att, &refusal{
				code: codes.PermissionDenied, reason: CertifyIdentityMismatch, id: att.id, err: err,
				msg: "identity " + att.id.String() + " is not a workload identity (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)",
			}
		}
	}

	csrDER := req.GetCsr()
	if len(csrDER) == 0 {
		return nil, att, &refusal{code: codes.InvalidArgument, reason: CertifyBadCSR, id: att.id, msg: "csr is required"}
	}
	// Refuse a malformed CSR before spending a join token on it.
	csr, err := checkCSR(csrDER)
	if err != nil {
		return nil, att, &refusal{code: codes.InvalidArgument, reason: CertifyBadCSR, id: att.id, err: err, msg: err.Error()}
	}

	// The app the proxy runs as its child (app_pid) is the workload's
	// code; only a process on the Unix socket can name one.
	var app *attest.UnixPeer
	if pid := req.GetAppPid(); pid != 0 {
		if c.unix == nil {
			return nil, att, &refusal{
				code: codes.InvalidArgument, reason: attest.ReasonAppNeedsUnix, id: att.id,
				msg: "app_pid is only accepted over the controller's Unix attestation socket, where the controller can check the process: connect to --attest-socket, or run the proxy without an app",
			}
		}
		app = c.unix.CaptureApp(pid)
		defer app.Close()
		if err := app.Err(); err != nil {
			return nil, att, attestRefusal(err, att.id)
		}
	}

	// On the Unix socket the caller's code is measured, whatever attests
	// its identity; before a join token is spent on a process that cannot
	// be measured. A process that attests by the socket alone is measured
	// by the Unix attestor, after it is admitted.
	var measured *attest.Workload
	if c.unix != nil && (len(c.certs) > 0 || req.GetJoinToken() != "") {
		w, err := s.unix.MeasureWorkload(c.unix, app)
		if err != nil {
			return nil, att, attestRefusal(err, att.id)
		}
		measured = &w
	}

	if att.id.IsZero() {
		var (
			res       attest.Result
			err       error
			requested spiffeid.ID // the identity claimed, for the log of a refusal
		)
		switch {
		case req.GetJoinToken() != "":
			att.attestor = attest.AttestorJoinToken
			res, err = s.tokens.Attest(ctx, attest.Evidence{JoinToken: req.GetJoinToken()})
		case c.unix != nil:
			att.attestor = attest.AttestorUnix
			requested, err = requestedID(csr)
			if err != nil {
				return nil, att, &refusal{code: codes.InvalidArgument, reason: CertifyBadCSR, err: err, msg: err.Error()}
			}
			res, err = s.unix.Attest(ctx, attest.Evidence{Requested: requested, Unix: c.unix, App: app})
		default:
			return nil, att, &refusal{
				code: codes.Unauthenticated, reason: CertifyNoToken,
				msg: "join token required: create one with `rampart token create`, connect over the controller's Unix attestation socket, or present a valid SVID to renew",
			}
		}
		if err != nil {
			return nil, att, attestRefusal(err, requested)
		}
		att.id, att.digest, att.proxy = res.ID, res.Digest, res.ProxyDigest
	}
	if err := attest.CheckIdentity(s.ca.TrustDomain(), att.id); err != nil {
		return nil, att, attestRefusal(err, att.id)
	}
	if s.revoked != nil {
		var presented *x509.Certificate
		if len(c.certs) > 0 {
			presented = c.certs[0]
		}
		if err := s.revoked(att.id, presented); err != nil {
			return nil, att, &refusal{code: codes.PermissionDenied, reason: CertifyRevoked, id: att.id, err: err, msg: err.Error()}
		}
	}

	// Code integrity, unless the Unix attestor checked it already.
	if att.attestor != attest.AttestorUnix {
		code := attest.Code{Digest: carried, Source: "recorded in the presented certificate"}
		var proxyCode attest.Code // unknown unless measured
		if measured != nil {
			if carried != "" && carried != measured.Code.Digest {
				return nil, att, &refusal{
					code: codes.PermissionDenied, reason: attest.ReasonCodeChanged, id: att.id, digest: measured.Code.Digest,
					msg: "the process runs code " + measured.Code.Digest + ", but its certificate was issued for " + carried +
						": the identity stays with the code it was attested for; restart the workload to attest its new code",
				}
			}
			code, proxyCode = measured.Code, measured.Proxy
			if app != nil {
				att.proxy = measured.Proxy.Digest
			}
		}
		if err := s.policies.CheckProxyCode(att.id, proxyCode); err != nil {
			return nil, att, attestRefusal(err, att.id)
		}
		if err := s.policies.CheckCode(att.id, code); err != nil {
			return nil, att, attestRefusal(err, att.id)
		}
		att.digest = code.Digest
	}

	chain, err := s.ca.SignCSRWith(csrDER, att.id, s.ttl, ca.Attested{CodeDigest: att.digest})
	switch {
	case errors.Is(err, ca.ErrIdentityMismatch):
		return nil, att, &refusal{
			code: codes.PermissionDenied, reason: CertifyIdentityMismatch, id: att.id, err: err,
			msg: "the CSR must ask for exactly the attested identity " + att.id.String() + ": " + err.Error(),
		}
	case errors.Is(err, ca.ErrInvalidCSR):
		return nil, att, &refusal{code: codes.InvalidArgument, reason: CertifyBadCSR, id: att.id, err: err, msg: err.Error()}
	case err != nil:
		return nil, att, &refusal{code: codes.Internal, reason: CertifyInternal, id: att.id, err: err, msg: "internal error while signing; see the controller's log"}
	}
	att.chain = chain
	return &meshv1.CertifyResponse{
		CertChain:   derChain(chain),
		TrustBundle: derChain(s.ca.Roots()),
		SpiffeId:    att.id.String(),
	}, att, nil
}

// checkCSR refuses what is not a self-signed PKCS#10 request. What it asks
// for is the CA's to judge.
func checkCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, errors.New("csr is not a DER PKCS#10 certificate request: " + err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errors.New("csr signature does not verify: " + err.Error())
	}
	return csr, nil
}

// requestedID is the SPIFFE ID a CSR asks for, its one URI SAN.
func requestedID(csr *x509.CertificateRequest) (spiffeid.ID, error) {
	if n := len(csr.URIs); n != 1 {
		return spiffeid.ID{}, errors.New("csr has " + strconv.Itoa(n) + " URI SANs, want exactly 1: the SPIFFE ID asked for")
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return spiffeid.ID{}, errors.New("csr URI SAN is not a SPIFFE ID: " + err.Error())
	}
	return id, nil
}

// attestCodes maps the reasons of attest to the status the caller reads.
var attestCodes = map[string]codes.Code{
	attest.ReasonNoToken:          codes.Unauthenticated,
	attest.ReasonBadToken:         codes.InvalidArgument,
	attest.ReasonUnknownToken:     codes.Unauthenticated,
	attest.ReasonUsedToken:        codes.PermissionDenied,
	attest.ReasonExpiredToken:     codes.Unauthenticated,
	attest.ReasonBadEvidence:      codes.InvalidArgument,
	attest.ReasonReservedIdentity: codes.PermissionDenied,
	attest.ReasonNoPolicy:         codes.PermissionDenied,
	attest.ReasonUserNotAllowed:   codes.PermissionDenied,
	attest.ReasonPeerGone:         codes.Unauthenticated,
	attest.ReasonPeerChanged:      codes.PermissionDenied,
	attest.ReasonPeerUnreadable:   codes.FailedPrecondition,
	attest.ReasonAppNotChild:      codes.PermissionDenied,
	attest.ReasonAppGone:          codes.Unauthenticated,
	attest.ReasonAppChanged:       codes.PermissionDenied,
	attest.ReasonAppNeedsUnix:     codes.InvalidArgument,
	attest.ReasonCodeNotAttested:  codes.PermissionDenied,
	attest.ReasonCodeNotAllowed:   codes.PermissionDenied,
	attest.ReasonCodeChanged:      codes.PermissionDenied,
	attest.ReasonTokenRejected:    codes.Unauthenticated,
	attest.ReasonWrongAudience:    codes.Unauthenticated,
	attest.ReasonTokenNotBound:    codes.Unauthenticated,
	attest.ReasonPodNotFound:      codes.PermissionDenied,
	attest.ReasonPodMismatch:      codes.PermissionDenied,
	attest.ReasonNodeMismatch:     codes.PermissionDenied,
	attest.ReasonPodNotRunning:    codes.FailedPrecondition,
	attest.ReasonAPIUnavailable:   codes.Unavailable,
	attest.ReasonInternal:         codes.Internal,
}

// attestRefusal turns an attestation error into a refusal.
func attestRefusal(err error, id spiffeid.ID) *refusal {
	reason := attest.Reason(err)
	code, ok := attestCodes[reason]
	if !ok {
		code, reason = codes.Internal, CertifyInternal
	}
	ref := &refusal{code: code, reason: reason, id: id}
	var e *attest.Error
	if errors.As(err, &e) {
		ref.msg, ref.digest, ref.err = e.Msg, e.Digest, e.Err
	} else {
		ref.err = err
	}
	if code == codes.Internal {
		ref.msg = "internal error during attestation; see the controller's log"
		ref.err = err
	}
	return ref
}
