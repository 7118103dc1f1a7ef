package proxy

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// TestValidateConfigTraffic checks that a configuration whose traffic
// policy the proxy cannot apply as written is refused with reason
// traffic, naming the service.
func TestValidateConfigTraffic(t *testing.T) {
	for _, tt := range []struct {
		name    string
		tp      *meshv1.TrafficPolicy
		wantErr string
	}{
		{"good", &meshv1.TrafficPolicy{LoadBalancer: meshv1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN, IdleTimeout: durationpb.New(time.Minute)}, ""},
		{"unknown balancer", &meshv1.TrafficPolicy{LoadBalancer: 9}, "service orders.shop: traffic: unknown load balancer"},
		{"idle out of range", &meshv1.TrafficPolicy{IdleTimeout: durationpb.New(48 * time.Hour)}, "idle timeout"},
		{"status not a failure", &meshv1.TrafficPolicy{Retry: &meshv1.TrafficPolicy_Retry{RetryOn: &meshv1.TrafficPolicy_RetryOn{HttpStatuses: []uint32{200}}}}, "HTTP status 200"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := goodConfig()
			c.Services[0].Traffic = tt.tp
			_, err := validateConfig(c, self)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if got := rejectReason(err); got != rejectTraffic {
				t.Fatalf("reason %q, want %q", got, rejectTraffic)
			}
		})
	}
}
