package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/ca"
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
}

// caller is what the transport says about the caller.
type caller struct {
	addr  string
	certs []*x509.Certificate
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
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		c.certs = info.State.PeerCertificates
	}
	return c
}

// Certify implements meshv1.IdentityServer.
func (is identityService) Certify(ctx context.Context, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, error) {
	s := is.s
	c := callerOf(ctx)
	resp, ref := s.certify(c, req)
	if ref != nil {
		s.metrics.certify.WithLabelValues(ResultRefused, ref.reason).Inc()
		attrs := []any{"peer", c.addr, "reason", ref.reason}
		if !ref.id.IsZero() {
			attrs = append(attrs, "spiffe_id", ref.id.String())
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
	s.logger.Info("certify issued", "peer", c.addr, "spiffe_id", resp.GetSpiffeId(),
		"renewal", len(c.certs) > 0)
	return resp, nil
}

func (s *Server) certify(c caller, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, *refusal) {
	var id spiffeid.ID
	if len(c.certs) > 0 {
		// Renewal: the caller's current SVID is the attestation. A
		// certificate that does not verify is a refusal, never a reason to
		// look at a token instead.
		peerID, err := meshtls.VerifyPeer(c.certs, s.bundle, s.now())
		if err != nil {
			reason := meshtls.Reason(err)
			return nil, &refusal{
				code: codes.Unauthenticated, reason: CertifyBadCertificate, err: err,
				msg: "client certificate refused (" + reason + "): " + err.Error() +
					"; present a current SVID of this trust domain, or connect without a certificate and use a join token",
			}
		}
		id = peerID
		if req.GetJoinToken() != "" {
			return nil, &refusal{
				code: codes.InvalidArgument, reason: CertifyBadToken, id: id,
				msg: "join token must be empty when renewing with a valid SVID",
			}
		}
		if id.TrustDomain() != s.ca.TrustDomain() {
			return nil, &refusal{
				code: codes.PermissionDenied, reason: CertifyIdentityMismatch, id: id,
				msg: "identity " + id.String() + " is not in trust domain " + s.ca.TrustDomain().String() + "; this controller cannot renew it",
			}
		}
		if _, _, err := identity.ParseWorkloadID(id); err != nil {
			return nil, &refusal{
				code: codes.PermissionDenied, reason: CertifyIdentityMismatch, id: id, err: err,
				msg: "identity " + id.String() + " is not a workload identity (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)",
			}
		}
	}

	csr := req.GetCsr()
	if len(csr) == 0 {
		return nil, &refusal{code: codes.InvalidArgument, reason: CertifyBadCSR, id: id, msg: "csr is required"}
	}
	// Refuse a malformed CSR before spending a join token on it.
	if err := checkCSR(csr); err != nil {
		return nil, &refusal{code: codes.InvalidArgument, reason: CertifyBadCSR, id: id, err: err, msg: err.Error()}
	}

	if id.IsZero() {
		token := req.GetJoinToken()
		if token == "" {
			return nil, &refusal{
				code: codes.Unauthenticated, reason: CertifyNoToken,
				msg: "join token required: create one with `rampart token create`, or present a valid SVID to renew",
			}
		}
		tid, err := s.tokens.Consume(token)
		if err != nil {
			return nil, tokenRefusal(err)
		}
		id = tid
	}

	chain, err := s.ca.SignCSR(csr, id, s.ttl)
	switch {
	case errors.Is(err, ca.ErrIdentityMismatch):
		return nil, &refusal{
			code: codes.PermissionDenied, reason: CertifyIdentityMismatch, id: id, err: err,
			msg: "the CSR must ask for exactly the attested identity " + id.String() + ": " + err.Error(),
		}
	case errors.Is(err, ca.ErrInvalidCSR):
		return nil, &refusal{code: codes.InvalidArgument, reason: CertifyBadCSR, id: id, err: err, msg: err.Error()}
	case err != nil:
		return nil, &refusal{code: codes.Internal, reason: CertifyInternal, id: id, err: err, msg: "internal error while signing; see the controller's log"}
	}
	return &meshv1.CertifyResponse{
		CertChain:   derChain(chain),
		TrustBundle: derChain(s.ca.Roots()),
		SpiffeId:    id.String(),
	}, nil
}

// checkCSR refuses what is not a self-signed PKCS#10 request. What it asks
// for is the CA's to judge.
func checkCSR(der []byte) error {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return errors.New("csr is not a DER PKCS#10 certificate request: " + err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return errors.New("csr signature does not verify: " + err.Error())
	}
	return nil
}

func tokenRefusal(err error) *refusal {
	switch {
	case errors.Is(err, identity.ErrTokenMalformed):
		return &refusal{code: codes.InvalidArgument, reason: CertifyBadToken, err: err,
			msg: "join token is malformed; copy it exactly as `rampart token create` printed it"}
	case errors.Is(err, identity.ErrTokenUnknown):
		return &refusal{code: codes.Unauthenticated, reason: CertifyUnknownToken, err: err,
			msg: "join token unknown to this controller; create one with `rampart token create`"}
	case errors.Is(err, identity.ErrTokenUsed):
		return &refusal{code: codes.PermissionDenied, reason: CertifyUsedToken, err: err,
			msg: "join token already used; create a new one with `rampart token create`"}
	case errors.Is(err, identity.ErrTokenExpired):
		return &refusal{code: codes.Unauthenticated, reason: CertifyExpiredToken, err: err,
			msg: "join token expired; create a new one with `rampart token create`"}
	default:
		return &refusal{code: codes.Internal, reason: CertifyInternal, err: err,
			msg: "internal error while checking the join token; see the controller's log"}
	}
}
