package proxy

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// bigConfigServer sends one configuration on Watch.
type bigConfigServer struct {
	meshv1.UnimplementedDiscoveryServer
	pc *meshv1.ProxyConfig
}

func (s *bigConfigServer) Watch(_ *meshv1.WatchRequest, stream grpc.ServerStreamingServer[meshv1.ProxyConfig]) error {
	if err := stream.Send(s.pc); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// TestControlReceivesLargeConfig: a configuration above gRPC's default
// 4 MiB receive limit (a long revocation list in a large mesh) reaches the
// proxy over its control connection's options.
func TestControlReceivesLargeConfig(t *testing.T) {
	pc := goodConfig()
	pc.Revocations = &meshv1.Revocations{}
	for i := range 20000 {
		pc.Revocations.Identities = append(pc.Revocations.Identities, &meshv1.RevokedIdentity{
			SpiffeId:  fmt.Sprintf("spiffe://example.org/ns/shop/sa/workload-%d", i),
			RevokedAt: timestamppb.Now(), Reason: strings.Repeat("r", 200),
		})
	}
	if n := proto.Size(pc); n <= 4<<20 || n > MaxConfigSize {
		t.Fatalf("test configuration is %d bytes, want between 4 MiB and MaxConfigSize", n)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	meshv1.RegisterDiscoveryServer(srv, &bigConfigServer{pc: pc})
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), controlCallOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := meshv1.NewDiscoveryClient(cc).Watch(ctx, &meshv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv of a %d-byte configuration: %v", proto.Size(pc), err)
	}
	if len(got.GetRevocations().GetIdentities()) != 20000 {
		t.Fatalf("received %d identities, want 20000", len(got.GetRevocations().GetIdentities()))
	}
}
