package apps

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/demo/paymentspb"
)

// OrderResponse is what orders answers to GET /orders/{id}.
type OrderResponse struct {
	Service     string `json:"service"`
	OrderID     string `json:"order_id"`
	AmountCents int64  `json:"amount_cents"`
	// Caller is who called orders, as orders' proxy verified it; empty when
	// the request did not come through the mesh.
	Caller  string        `json:"caller"`
	Payment PaymentResult `json:"payment"`
}

// PaymentResult is payments' answer as orders reports it.
type PaymentResult struct {
	Approved        bool   `json:"approved"`
	AuthorizationID string `json:"authorization_id"`
	Reason          string `json:"reason,omitempty"`
	// Caller is who payments saw calling: orders' own identity.
	Caller string `json:"caller"`
}

// ErrorResponse is the body of every error answer of web and orders.
type ErrorResponse struct {
	Service string `json:"service"`
	Error   string `json:"error"`
}

// AmountFor is the amount of order id, in cents: made up, stable, and over
// DefaultLimitCents for about one order in six.
func AmountFor(id uint64) int64 {
	return int64(id*7919%60_000) + 100
}

type orders struct {
	payments paymentspb.PaymentsClient
	timeout  time.Duration
	log      *slog.Logger
}

// NewOrders returns the orders HTTP handler: GET /orders/{id} authorizes
// the order's payment with payments and reports the result. Each call to
// payments is bounded by timeout.
func NewOrders(payments paymentspb.PaymentsClient, timeout time.Duration, log *slog.Logger) http.Handler {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &orders{payments: payments, timeout: timeout, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", o.get)
	return mux
}

func (o *orders) get(w http.ResponseWriter, r *http.Request) {
	caller := r.Header.Get(CallerHeader)
	idText := r.PathValue("id")
	id, err := strconv.ParseUint(idText, 10, 32)
	if err != nil || id == 0 {
		writeError(w, "orders", http.StatusBadRequest, "order id must be a positive integer, got "+strconv.Quote(idText))
		return
	}
	amount := AmountFor(id)

	ctx, cancel := context.WithTimeout(r.Context(), o.timeout)
	defer cancel()
	resp, err := o.payments.Authorize(ctx, &paymentspb.AuthorizeRequest{
		OrderId:     idText,
		AmountCents: amount,
		Currency:    "EUR",
	})
	if err != nil {
		code := http.StatusBadGateway
		if status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		o.log.Error("payments.Authorize failed", "order_id", idText, "caller", caller, "err", err)
		writeError(w, "orders", code, "payments: "+status.Convert(err).Message())
		return
	}
	writeJSON(w, http.StatusOK, OrderResponse{
		Service:     "orders",
		OrderID:     idText,
		AmountCents: amount,
		Caller:      caller,
		Payment: PaymentResult{
			Approved:        resp.GetApproved(),
			AuthorizationID: resp.GetAuthorizationId(),
			Reason:          resp.GetReason(),
			Caller:          resp.GetCallerId(),
		},
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}

func writeError(w http.ResponseWriter, service string, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Service: service, Error: msg})
}
