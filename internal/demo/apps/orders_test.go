package apps

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// failing makes every call fail with code.
func failing(code codes.Code) grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
		return nil, status.Error(code, "payments is down")
	})
}

func TestOrders(t *testing.T) {
	tests := []struct {
		name     string
		payments PaymentsConfig
		opt      grpc.ServerOption
		timeout  time.Duration
		method   string
		path     string
		caller   string
		wantCode int
		want     any // *OrderResponse or *ErrorResponse; nil: body not checked
	}{
		{
			name: "authorized through the mesh", opt: asProxy(ordersID),
			method: "GET", path: "/orders/2", caller: webID,
			wantCode: http.StatusOK,
			want: &OrderResponse{
				Service: "orders", OrderID: "2", AmountCents: AmountFor(2), Caller: webID,
				Payment: PaymentResult{Approved: true, Caller: ordersID},
			},
		},
		{
			name: "declined", payments: PaymentsConfig{LimitCents: 100}, opt: asProxy(ordersID),
			method: "GET", path: "/orders/7", caller: webID,
			wantCode: http.StatusOK,
			want: &OrderResponse{
				Service: "orders", OrderID: "7", AmountCents: AmountFor(7), Caller: webID,
				Payment: PaymentResult{Approved: false, Reason: "amount 55533 is over the limit of 100", Caller: ordersID},
			},
		},
		{
			name:   "not through the mesh",
			method: "GET", path: "/orders/1",
			wantCode: http.StatusOK,
			want: &OrderResponse{
				Service: "orders", OrderID: "1", AmountCents: AmountFor(1),
				Payment: PaymentResult{Approved: true},
			},
		},
		{
			name:   "id not a number",
			method: "GET", path: "/orders/abc",
			wantCode: http.StatusBadRequest,
			want:     &ErrorResponse{Service: "orders", Error: `order id must be a positive integer, got "abc"`},
		},
		{
			name:   "id zero",
			method: "GET", path: "/orders/0",
			wantCode: http.StatusBadRequest,
		},
		{
			name:   "payments down",
			opt:    failing(codes.Unavailable),
			method: "GET", path: "/orders/1",
			wantCode: http.StatusBadGateway,
			want:     &ErrorResponse{Service: "orders", Error: "payments: payments is down"},
		},
		{
			name: "payments too slow", payments: PaymentsConfig{Work: time.Hour}, timeout: 50 * time.Millisecond,
			method: "GET", path: "/orders/1",
			wantCode: http.StatusGatewayTimeout,
		},
		{
			name:   "wrong method",
			method: "POST", path: "/orders/1",
			wantCode: http.StatusMethodNotAllowed,
		},
		{
			name:   "unknown path",
			method: "GET", path: "/",
			wantCode: http.StatusNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []grpc.ServerOption
			if tt.opt != nil {
				opts = append(opts, tt.opt)
			}
			h := NewOrders(startPayments(t, NewPayments(tt.payments), opts...), tt.timeout, nil)
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.caller != "" {
				req.Header.Set(CallerHeader, tt.caller)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("%s %s: %d %s, want %d", tt.method, tt.path, rec.Code, rec.Body, tt.wantCode)
			}
			checkJSON(t, rec.Body.String(), tt.want)
		})
	}
}

// checkJSON decodes body into a value of want's type and compares, ignoring
// authorization ids (they come from a counter).
func checkJSON(t *testing.T, body string, want any) {
	t.Helper()
	var got any
	switch want.(type) {
	case nil:
		return
	case *OrderResponse:
		got = new(OrderResponse)
	case *WebResponse:
		got = new(WebResponse)
	case *ErrorResponse:
		got = new(ErrorResponse)
	default:
		t.Fatalf("checkJSON: unexpected %T", want)
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(got); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(PaymentResult{}, "AuthorizationID")); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	var o *OrderResponse
	switch g := got.(type) {
	case *OrderResponse:
		o = g
	case *WebResponse:
		o = &g.Order
	}
	if o != nil && !strings.HasPrefix(o.Payment.AuthorizationID, "auth-") {
		t.Errorf("authorization id %q, want auth-…", o.Payment.AuthorizationID)
	}
}
