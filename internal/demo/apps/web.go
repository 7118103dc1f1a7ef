package apps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxBody bounds what web reads of an answer from orders.
const maxBody = 1 << 20

// WebResponse is what web answers to GET /.
type WebResponse struct {
	Service string `json:"service"`
	// Caller is who called web, as web's proxy verified it; empty when the
	// request did not come through the mesh.
	Caller string        `json:"caller"`
	Order  OrderResponse `json:"order"`
}

type web struct {
	orders  string // base URL, no trailing slash
	client  *http.Client
	timeout time.Duration
	log     *slog.Logger
	seq     atomic.Uint64
}

// NewWeb returns the web HTTP handler: GET / looks up the next order from
// orders at the base URL ordersURL and reports it. Each call to orders is
// bounded by timeout.
func NewWeb(ordersURL string, client *http.Client, timeout time.Duration, log *slog.Logger) http.Handler {
	if client == nil {
		client = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wb := &web{orders: strings.TrimSuffix(ordersURL, "/"), client: client, timeout: timeout, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", wb.index)
	return mux
}

func (wb *web) index(w http.ResponseWriter, r *http.Request) {
	caller := r.Header.Get(CallerHeader)
	id := wb.seq.Add(1)
	order, code, err := wb.order(r.Context(), id)
	if err != nil {
		wb.log.Error("orders call failed", "order_id", id, "caller", caller, "err", err)
		writeError(w, "web", code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, WebResponse{Service: "web", Caller: caller, Order: order})
}

// order fetches order id from orders; on failure it also returns the status
// web should answer with.
func (wb *web) order(ctx context.Context, id uint64) (OrderResponse, int, error) {
	ctx, cancel := context.WithTimeout(ctx, wb.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wb.orders+"/orders/"+strconv.FormatUint(id, 10), nil)
	if err != nil {
		return OrderResponse{}, http.StatusInternalServerError, fmt.Errorf("orders: %w", err)
	}
	resp, err := wb.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return OrderResponse{}, http.StatusGatewayTimeout, fmt.Errorf("orders: no answer within %v", wb.timeout)
		}
		return OrderResponse{}, http.StatusBadGateway, fmt.Errorf("orders: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return OrderResponse{}, http.StatusBadGateway, fmt.Errorf("orders: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		var e ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return OrderResponse{}, http.StatusBadGateway, fmt.Errorf("orders answered %d: %s", resp.StatusCode, msg)
	}
	var o OrderResponse
	if err := json.Unmarshal(body, &o); err != nil {
		return OrderResponse{}, http.StatusBadGateway, fmt.Errorf("orders: bad answer: %w", err)
	}
	return o, http.StatusOK, nil
}
