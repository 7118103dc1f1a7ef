package apps

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; empty: valid
	}{
		{"web", Config{Role: RoleWeb, Listen: "127.0.0.1:0", Orders: "http://127.0.0.1:1"}, ""},
		{"orders", Config{Role: RoleOrders, Listen: "127.0.0.1:0", Payments: "127.0.0.1:1"}, ""},
		{"payments", Config{Role: RolePayments, Listen: "127.0.0.1:0"}, ""},
		{"loadgen", Config{Role: RoleLoadgen, Target: "http://127.0.0.1:1/", Rate: 2}, ""},
		{"no role", Config{}, `unknown role ""`},
		{"unknown role", Config{Role: "db"}, `unknown role "db"`},
		{"web without orders", Config{Role: RoleWeb, Listen: "127.0.0.1:0"}, "web needs the orders URL: none given"},
		{"web with relative orders", Config{Role: RoleWeb, Listen: "127.0.0.1:0", Orders: "/orders"}, "not an absolute http URL"},
		{"orders without payments", Config{Role: RoleOrders, Listen: "127.0.0.1:0"}, "orders needs the payments address"},
		{"payments without listen", Config{Role: RolePayments}, "payments needs a listen address"},
		{"loadgen without target", Config{Role: RoleLoadgen}, "loadgen needs the target URL"},
		{"negative rate", Config{Role: RoleLoadgen, Target: "http://x/", Rate: -1}, "rate -1 is negative"},
		{"negative timeout", Config{Role: RolePayments, Listen: ":0", Timeout: -time.Second}, "timeout -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewBadListen(t *testing.T) {
	if _, err := New(Config{Role: RolePayments, Listen: "127.0.0.1:notaport"}); err == nil {
		t.Fatal("New with a bad listen address succeeded")
	}
}

// TestChain runs the three services and loadgen on real loopback listeners,
// wired to each other directly (no proxies, so no caller identities).
func TestChain(t *testing.T) {
	newApp := func(cfg Config) *App {
		t.Helper()
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	payments := newApp(Config{Role: RolePayments, Listen: "127.0.0.1:0", Work: time.Millisecond})
	orders := newApp(Config{Role: RoleOrders, Listen: "127.0.0.1:0", Payments: payments.Addr()})
	web := newApp(Config{Role: RoleWeb, Listen: "127.0.0.1:0", Orders: "http://" + orders.Addr()})
	loadgen := newApp(Config{Role: RoleLoadgen, Target: "http://" + web.Addr() + "/", Rate: 50})
	if loadgen.Addr() != "" {
		t.Errorf("loadgen listens on %q", loadgen.Addr())
	}

	ctx, cancel := context.WithCancel(t.Context())
	g, gctx := errgroup.WithContext(ctx)
	for _, a := range []*App{payments, orders, web, loadgen} {
		g.Go(func() error { return a.Run(gctx) })
	}
	defer func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + web.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET web: %s", resp.Status)
	}
	var got WebResponse
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Service != "web" || got.Order.Service != "orders" || got.Order.AmountCents != AmountFor(must(got.Order.OrderID)) ||
		!strings.HasPrefix(got.Order.Payment.AuthorizationID, "auth-") || got.Caller != "" || got.Order.Caller != "" || got.Order.Payment.Caller != "" {
		t.Errorf("GET web = %+v", got)
	}
}

func must(s string) uint64 {
	var n uint64
	for _, c := range s {
		n = n*10 + uint64(c-'0')
	}
	return n
}
