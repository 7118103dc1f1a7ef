package apps

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/rampart-mesh/rampart/internal/demo/paymentspb"
)

const (
	webID    = "spiffe://rampart.local/ns/demo/sa/web"
	ordersID = "spiffe://rampart.local/ns/demo/sa/orders"
)

// startPayments serves p over an in-memory connection and returns a client.
func startPayments(t *testing.T, p paymentspb.PaymentsServer, opts ...grpc.ServerOption) paymentspb.PaymentsClient {
	t.Helper()
	l := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(opts...)
	paymentspb.RegisterPaymentsServer(srv, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l) //nolint:errcheck // ends with Stop
	}()
	conn, err := grpc.NewClient("passthrough:///payments",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return paymentspb.NewPaymentsClient(conn)
}

// asProxy makes the server see every call as coming through a proxy that
// verified caller, as payments' proxy does.
func asProxy(caller string) grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		md = md.Copy()
		md.Set(CallerMetadataKey, caller)
		return h(metadata.NewIncomingContext(ctx, md), req)
	})
}

func TestAuthorize(t *testing.T) {
	tests := []struct {
		name     string
		cfg      PaymentsConfig
		caller   string // sent as rampart-client-id when set
		timeout  time.Duration
		req      *paymentspb.AuthorizeRequest
		wantCode codes.Code
		want     *paymentspb.AuthorizeResponse // AuthorizationId only checked for its prefix
	}{
		{
			name:   "approved, caller echoed",
			caller: ordersID,
			req:    &paymentspb.AuthorizeRequest{OrderId: "1", AmountCents: 100, Currency: "EUR"},
			want:   &paymentspb.AuthorizeResponse{Approved: true, CallerId: ordersID},
		},
		{
			name: "not through the mesh: no caller",
			req:  &paymentspb.AuthorizeRequest{OrderId: "2", AmountCents: 100},
			want: &paymentspb.AuthorizeResponse{Approved: true},
		},
		{
			name:   "over the limit",
			cfg:    PaymentsConfig{LimitCents: 1000},
			caller: ordersID,
			req:    &paymentspb.AuthorizeRequest{OrderId: "3", AmountCents: 1001},
			want:   &paymentspb.AuthorizeResponse{Approved: false, Reason: "amount 1001 is over the limit of 1000", CallerId: ordersID},
		},
		{
			name:     "no order",
			req:      &paymentspb.AuthorizeRequest{AmountCents: 100},
			wantCode: codes.InvalidArgument,
		},
		{
			name:     "no amount",
			req:      &paymentspb.AuthorizeRequest{OrderId: "4"},
			wantCode: codes.InvalidArgument,
		},
		{
			name:     "deadline shorter than the work",
			cfg:      PaymentsConfig{Work: time.Hour},
			timeout:  50 * time.Millisecond,
			req:      &paymentspb.AuthorizeRequest{OrderId: "5", AmountCents: 100},
			wantCode: codes.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startPayments(t, NewPayments(tt.cfg))
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			if tt.caller != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, CallerMetadataKey, tt.caller)
			}
			got, err := c.Authorize(ctx, tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("Authorize: %v, want code %v", err, tt.wantCode)
			}
			if tt.wantCode != codes.OK {
				return
			}
			if !strings.HasPrefix(got.GetAuthorizationId(), "auth-") {
				t.Errorf("authorization id %q, want auth-…", got.GetAuthorizationId())
			}
			if got.GetApproved() != tt.want.GetApproved() || got.GetReason() != tt.want.GetReason() || got.GetCallerId() != tt.want.GetCallerId() {
				t.Errorf("Authorize = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWatch(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	c := startPayments(t, NewPayments(PaymentsConfig{Now: func() time.Time { return now }}), asProxy(ordersID))

	watch := func(order string) (grpc.ServerStreamingClient[paymentspb.PaymentEvent], context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		s, err := c.Watch(ctx, &paymentspb.WatchRequest{OrderId: order})
		if err != nil {
			t.Fatal(err)
		}
		// The server sends headers once the watcher is registered.
		if _, err := s.Header(); err != nil {
			t.Fatal(err)
		}
		return s, cancel
	}
	all, cancelAll := watch("")
	defer cancelAll()
	only2, cancel2 := watch("2")
	defer cancel2()

	for _, id := range []string{"1", "2"} {
		if _, err := c.Authorize(t.Context(), &paymentspb.AuthorizeRequest{OrderId: id, AmountCents: 100}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name   string
		stream grpc.ServerStreamingClient[paymentspb.PaymentEvent]
		want   []string
	}{
		{"all orders", all, []string{"1", "2"}},
		{"order 2", only2, []string{"2"}},
	} {
		for _, want := range tt.want {
			ev, err := tt.stream.Recv()
			if err != nil {
				t.Fatalf("%s: Recv: %v", tt.name, err)
			}
			if ev.GetOrderId() != want || ev.GetCallerId() != ordersID || !ev.GetApproved() || !ev.GetTime().AsTime().Equal(now) {
				t.Errorf("%s: event %v, want order %s from %s at %v", tt.name, ev, want, ordersID, now)
			}
		}
	}
	cancel2()
	if _, err := only2.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel: %v, want Canceled", err)
	}
}
