package attest

import (
	"context"
	"errors"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/identity"
)

// TokenConsumer spends join tokens; *identity.TokenStore is one.
type TokenConsumer interface {
	// Consume marks token used and returns the identity it grants, or an
	// error wrapping one of identity's ErrToken* sentinels.
	Consume(token string) (spiffeid.ID, error)
}

var _ TokenConsumer = (*identity.TokenStore)(nil)

// JoinToken attests a workload by a single-use join token: the identity is
// the one the token was created for. A token is spent by the attempt,
// whatever happens to the request after.
type JoinToken struct {
	Tokens TokenConsumer
}

var _ Attestor = JoinToken{}

// Attest implements Attestor.
func (j JoinToken) Attest(_ context.Context, ev Evidence) (Result, error) {
	if ev.JoinToken == "" {
		return Result{}, refuse(ReasonNoToken, "join token required: create one with `rampart token create`, or present a valid SVID to renew", nil)
	}
	if j.Tokens == nil {
		return Result{}, refuse(ReasonInternal, "no join-token store", nil)
	}
	id, err := j.Tokens.Consume(ev.JoinToken)
	switch {
	case err == nil:
		if id.IsZero() {
			return Result{}, refuse(ReasonInternal, "the join-token store returned no identity", nil)
		}
		return Result{Attestor: AttestorJoinToken, ID: id}, nil
	case errors.Is(err, identity.ErrTokenMalformed):
		return Result{}, refuse(ReasonBadToken, "join token is malformed; copy it exactly as `rampart token create` printed it", err)
	case errors.Is(err, identity.ErrTokenUnknown):
		return Result{}, refuse(ReasonUnknownToken, "join token unknown to this controller; create one with `rampart token create`", err)
	case errors.Is(err, identity.ErrTokenUsed):
		return Result{}, refuse(ReasonUsedToken, "join token already used; create a new one with `rampart token create`", err)
	case errors.Is(err, identity.ErrTokenExpired):
		return Result{}, refuse(ReasonExpiredToken, "join token expired; create a new one with `rampart token create`", err)
	default:
		return Result{}, refuse(ReasonInternal, "internal error while checking the join token; see the controller's log", err)
	}
}
