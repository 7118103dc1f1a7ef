package outbound

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in      string
		want    Upstream
		wantErr bool
	}{
		{in: "orders=127.0.0.1:9001", want: Upstream{Service: "orders", Listen: "127.0.0.1:9001"}},
		{in: "orders.shop=127.0.0.1:9001", want: Upstream{Service: "orders.shop", Listen: "127.0.0.1:9001"}},
		{in: "orders.shop:grpc=127.0.0.1:9001", want: Upstream{Service: "orders.shop", Port: "grpc", Listen: "127.0.0.1:9001"}},
		{in: "orders:8080=[::1]:9001", want: Upstream{Service: "orders", Port: "8080", Listen: "[::1]:9001"}},
		{in: "orders", wantErr: true},
		{in: "=127.0.0.1:9001", wantErr: true},
		{in: "Orders=127.0.0.1:9001", wantErr: true},
		{in: "orders.Shop=127.0.0.1:9001", wantErr: true},
		{in: "orders=127.0.0.1", wantErr: true},
		{in: "orders=", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseUpstream(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
			if round, err := ParseUpstream(got.String()); err != nil || round != got {
				t.Fatalf("String() does not round-trip: %q -> %v, %v", got.String(), round, err)
			}
		})
	}
}

func TestPickPort(t *testing.T) {
	http := &meshv1.ServicePort{Name: "http", Port: 80}
	grpc := &meshv1.ServicePort{Name: "grpc", Port: 50051}
	tests := []struct {
		name  string
		ports []*meshv1.ServicePort
		want  string
		got   *meshv1.ServicePort
	}{
		{"only port", []*meshv1.ServicePort{http}, "", http},
		{"ambiguous", []*meshv1.ServicePort{http, grpc}, "", nil},
		{"by name", []*meshv1.ServicePort{http, grpc}, "grpc", grpc},
		{"by number", []*meshv1.ServicePort{http, grpc}, "80", http},
		{"missing", []*meshv1.ServicePort{http}, "9090", nil},
		{"none", nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickPort(tt.ports, tt.want); got != tt.got {
				t.Fatalf("pickPort = %v, want %v", got, tt.got)
			}
		})
	}
}
