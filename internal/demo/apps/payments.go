package apps

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rampart-mesh/rampart/internal/demo/paymentspb"
)

// DefaultLimitCents is the largest amount payments approves.
const DefaultLimitCents = 50_000

// watchBuffer is how many events a slow watcher may fall behind before
// events for it are dropped.
const watchBuffer = 64

// PaymentsConfig configures the payments service.
type PaymentsConfig struct {
	// LimitCents is the largest amount approved; zero means
	// DefaultLimitCents.
	LimitCents int64
	// Work is the mean simulated processing time (see Config.Work).
	Work time.Duration
	// Logger receives failures; nil discards them.
	Logger *slog.Logger
	// Now stamps events; nil means time.Now.
	Now func() time.Time
}

// Payments implements paymentspb.PaymentsServer.
type Payments struct {
	paymentspb.UnimplementedPaymentsServer

	cfg PaymentsConfig
	log *slog.Logger
	seq atomic.Uint64

	mu       sync.Mutex
	watchers map[chan *paymentspb.PaymentEvent]string // → order filter ("" for all)
}

var _ paymentspb.PaymentsServer = (*Payments)(nil)

// NewPayments returns the payments service.
func NewPayments(cfg PaymentsConfig) *Payments {
	if cfg.LimitCents == 0 {
		cfg.LimitCents = DefaultLimitCents
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Payments{cfg: cfg, log: cfg.Logger, watchers: make(map[chan *paymentspb.PaymentEvent]string)}
}

// callerOf returns the caller's SPIFFE ID as the receiving proxy stated it
// in the incoming metadata, or "" when the call did not come through one.
func callerOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(CallerMetadataKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Authorize implements paymentspb.PaymentsServer.
func (p *Payments) Authorize(ctx context.Context, req *paymentspb.AuthorizeRequest) (*paymentspb.AuthorizeResponse, error) {
	caller := callerOf(ctx)
	if req.GetOrderId() == "" {
		return nil, status.Error(codes.InvalidArgument, "order_id is required")
	}
	if req.GetAmountCents() <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "amount_cents must be positive, got %d", req.GetAmountCents())
	}
	if err := p.work(ctx); err != nil {
		p.log.Warn("authorize abandoned", "order_id", req.GetOrderId(), "caller", caller, "err", err)
		return nil, status.FromContextError(err).Err()
	}
	resp := &paymentspb.AuthorizeResponse{
		Approved:        req.GetAmountCents() <= p.cfg.LimitCents,
		AuthorizationId: fmt.Sprintf("auth-%06d", p.seq.Add(1)),
		CallerId:        caller,
	}
	if !resp.Approved {
		resp.Reason = fmt.Sprintf("amount %d is over the limit of %d", req.GetAmountCents(), p.cfg.LimitCents)
	}
	p.publish(&paymentspb.PaymentEvent{
		OrderId:         req.GetOrderId(),
		AuthorizationId: resp.AuthorizationId,
		Approved:        resp.Approved,
		AmountCents:     req.GetAmountCents(),
		CallerId:        caller,
		Time:            timestamppb.New(p.cfg.Now()),
	})
	return resp, nil
}

// work waits for the simulated processing time, or until ctx ends.
func (p *Payments) work(ctx context.Context) error {
	if p.cfg.Work <= 0 {
		return ctx.Err()
	}
	d := rand.N(2 * p.cfg.Work)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Watch implements paymentspb.PaymentsServer. It sends the response headers
// once the watcher is registered, so a caller that has read them sees every
// later decision.
func (p *Payments) Watch(req *paymentspb.WatchRequest, stream grpc.ServerStreamingServer[paymentspb.PaymentEvent]) error {
	ctx := stream.Context()
	ch := make(chan *paymentspb.PaymentEvent, watchBuffer)
	p.mu.Lock()
	p.watchers[ch] = req.GetOrderId()
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.watchers, ch)
		p.mu.Unlock()
	}()
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case ev := <-ch:
			if err := stream.Send(ev); err != nil {
				p.log.Warn("watch send failed", "caller", callerOf(ctx), "err", err)
				return err
			}
		}
	}
}

// publish hands ev to every interested watcher without blocking.
func (p *Payments) publish(ev *paymentspb.PaymentEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ch, order := range p.watchers {
		if order != "" && order != ev.GetOrderId() {
			continue
		}
		select {
		case ch <- ev:
		default:
			p.log.Warn("watcher too slow; event dropped", "order_id", ev.GetOrderId())
		}
	}
}
