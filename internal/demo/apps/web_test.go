package apps

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWeb(t *testing.T) {
	order := OrderResponse{
		Service: "orders", OrderID: "1", AmountCents: AmountFor(1), Caller: webID,
		Payment: PaymentResult{Approved: true, AuthorizationID: "auth-000001", Caller: ordersID},
	}
	loadgenID := "spiffe://rampart.local/ns/demo/sa/loadgen"
	tests := []struct {
		name     string
		orders   http.HandlerFunc // nil: orders is not listening
		timeout  time.Duration
		path     string
		caller   string
		wantCode int
		want     any
	}{
		{
			name: "order found",
			orders: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/orders/1" {
					http.NotFound(w, r)
					return
				}
				writeJSON(w, http.StatusOK, order)
			},
			path: "/", caller: loadgenID,
			wantCode: http.StatusOK,
			want:     &WebResponse{Service: "web", Caller: loadgenID, Order: order},
		},
		{
			name: "orders fails",
			orders: func(w http.ResponseWriter, _ *http.Request) {
				writeError(w, "orders", http.StatusBadGateway, "payments: payments is down")
			},
			path:     "/",
			wantCode: http.StatusBadGateway,
			want:     &ErrorResponse{Service: "web", Error: "orders answered 502: payments: payments is down"},
		},
		{
			name: "proxy answers in plain text",
			orders: func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "no healthy endpoint", http.StatusServiceUnavailable)
			},
			path:     "/",
			wantCode: http.StatusBadGateway,
			want:     &ErrorResponse{Service: "web", Error: "orders answered 503: no healthy endpoint"},
		},
		{
			name: "orders answers garbage",
			orders: func(w http.ResponseWriter, _ *http.Request) {
				w.Write([]byte("{not json"))
			},
			path:     "/",
			wantCode: http.StatusBadGateway,
		},
		{
			name: "orders too slow",
			orders: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			},
			timeout:  50 * time.Millisecond,
			path:     "/",
			wantCode: http.StatusGatewayTimeout,
			want:     &ErrorResponse{Service: "web", Error: "orders: no answer within 50ms"},
		},
		{
			name:     "orders not listening",
			path:     "/",
			wantCode: http.StatusBadGateway,
		},
		{
			name:     "unknown path",
			orders:   func(http.ResponseWriter, *http.Request) { t.Error("orders called") },
			path:     "/admin",
			wantCode: http.StatusNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var url string
			if tt.orders != nil {
				srv := httptest.NewServer(tt.orders)
				defer srv.Close()
				url = srv.URL
			} else {
				srv := httptest.NewServer(http.NotFoundHandler())
				url = srv.URL
				srv.Close()
			}
			h := NewWeb(url+"/", nil, tt.timeout, nil)
			req := httptest.NewRequest("GET", tt.path, nil)
			if tt.caller != "" {
				req.Header.Set(CallerHeader, tt.caller)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("GET %s: %d %s, want %d", tt.path, rec.Code, rec.Body, tt.wantCode)
			}
			if rec.Code != http.StatusOK && rec.Code != http.StatusNotFound {
				var e ErrorResponse
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
					t.Errorf("error body %q is not an ErrorResponse", rec.Body)
				}
			}
			checkJSON(t, rec.Body.String(), tt.want)
		})
	}
}

func TestWebNextOrder(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path) // requests are sequential
		writeJSON(w, http.StatusOK, OrderResponse{})
	}))
	defer srv.Close()
	h := NewWeb(srv.URL, srv.Client(), time.Second, nil)
	for range 3 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	want := []string{"/orders/1", "/orders/2", "/orders/3"}
	if len(paths) != len(want) {
		t.Fatalf("orders saw %q, want %q", paths, want)
	}
	for i := range want {
		if paths[i] != want[i] {
			t.Errorf("orders saw %q, want %q", paths, want)
		}
	}
}
