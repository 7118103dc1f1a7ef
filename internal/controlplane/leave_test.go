package controlplane

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/grpc/codes"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// TestLeaveWithdrawsTheEndpointAtOnce: a draining proxy calls Leave while
// its stream is still open; its callers are told at once, and only the
// workload's own identity can take it out.
func TestLeaveWithdrawsTheEndpointAtOnce(t *testing.T) {
	e := newEnv(t)
	e.model.SetResources(&localconfig.Resources{Services: []v1alpha1.Service{{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindService},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: v1alpha1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []v1alpha1.ServicePort{{Port: 80, TargetPort: 8080, Protocol: v1alpha1.ProtocolHTTP}},
		},
	}}})
	webID := workloadID("shop", "web")
	webConn := e.dial(t, e.svidFor(t, webID))
	web := &meshv1.Workload{Name: "web-1", Labels: map[string]string{"app": "web"}, TunnelAddress: "127.0.0.1:15002"}
	server, cancelServer := watch(t, webConn, &meshv1.WatchRequest{Workload: web})
	defer cancelServer()
	if _, err := server.Recv(); err != nil {
		t.Fatal(err)
	}
	client, cancelClient := watch(t, e.dial(t, e.svidFor(t, workloadID("shop", "client"))), &meshv1.WatchRequest{
		Workload:  &meshv1.Workload{Name: "client-1", TunnelAddress: "127.0.0.1:15001"},
		Upstreams: []string{"web"},
	})
	defer cancelClient()
	endpoints := func() int {
		t.Helper()
		cfg, err := client.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return len(cfg.GetServices()[0].GetEndpoints())
	}
	if n := endpoints(); n != 1 {
		t.Fatalf("endpoints before Leave = %d, want 1", n)
	}

	ctx := context.Background()
	// No certificate: refused.
	_, err := meshv1.NewDiscoveryClient(e.dial(t, nil)).Leave(ctx, &meshv1.LeaveRequest{Workload: web})
	wantCode(t, err, codes.Unauthenticated)
	// Nothing to name: refused.
	_, err = meshv1.NewDiscoveryClient(webConn).Leave(ctx, &meshv1.LeaveRequest{})
	wantCode(t, err, codes.InvalidArgument)
	// Another identity naming web-1 takes nothing out.
	other := meshv1.NewDiscoveryClient(e.dial(t, e.svidFor(t, workloadID("shop", "thief"))))
	if _, err := other.Leave(ctx, &meshv1.LeaveRequest{Workload: web}); err != nil {
		t.Fatalf("Leave by another identity: %v", err)
	}
	if eps := e.model.ConfigFor(workloadID("shop", "client"), "client-1", []string{"web"}).GetServices()[0].GetEndpoints(); len(eps) != 1 {
		t.Fatalf("endpoints after another identity's Leave = %v, want web-1 still there", eps)
	}
	// The workload itself leaves; its stream is still open.
	if _, err := meshv1.NewDiscoveryClient(webConn).Leave(ctx, &meshv1.LeaveRequest{Workload: web}); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if n := endpoints(); n != 0 {
		t.Fatalf("endpoints after Leave = %d, want 0", n)
	}
	if v := metricValue(t, e.reg, "rampart_controller_watch_refused_total", map[string]string{"reason": WatchBadRequest}); v != 1 {
		t.Errorf("refused bad Leave requests = %v, want 1", v)
	}
}
