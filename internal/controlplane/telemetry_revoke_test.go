package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// TestTelemetryStreamEndsOnRevocation: a report stream opened before its
// certificate is revoked ends at the next report.
func TestTelemetryStreamEndsOnRevocation(t *testing.T) {
	e := newEnv(t)
	c := &clock{t: time.Now()}
	g, err := graph.New(graph.Config{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	var revoked atomic.Pointer[meshtls.RevocationSet]
	reg := prometheus.NewRegistry()
	srv, err := New(Config{CA: e.ca, Tokens: e.tokens, Model: e.model, Bundle: e.bundle, Registerer: reg,
		SVIDTTL: time.Hour, Now: c.Now, Telemetry: g, EndpointGrace: -1, ReconnectGrace: -1,
		Revocations: revoked.Load})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := e.ca.IssueServing(key.Public(), e.serverID, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving := &meshtls.SVID{}
	if err := serving.Set(&x509svid.SVID{ID: e.serverID, Certificates: chain, PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(ServerCredentials(&tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving.Certificate() },
	})))
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	t.Cleanup(func() {
		srv.Drain()
		gs.GracefulStop()
		wg.Wait()
	})
	e.addr = lis.Addr().String()
	te := &telemetryEnv{env: e, clock: c, graph: g, srv: srv, reg: reg}

	id := workloadID("shop", "web")
	svid := e.svidFor(t, id)
	cc := e.dial(t, svid)
	te.register(t, cc, "web-1")
	stream := reportStream(t, cc)
	if err := stream.Send(report(c.Now(), "web-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return te.reports(t, ReportAccepted, "") == 1 })

	revoked.Store(meshtls.NewRevocationSet([]string{meshtls.SerialOf(svid.Certificates[0])}, nil))
	c.Add(ReportRate)
	// The stream may already be ended by the server when Send runs.
	_ = stream.Send(report(c.Now(), "web-1"))
	_, err = stream.CloseAndRecv()
	wantCode(t, err, codes.PermissionDenied)
	if got := te.refusals(t, meshtls.ReasonRevoked); got != 1 {
		t.Errorf("telemetry_streams_refused_total{revoked} = %v, want 1", got)
	}
	if got := te.reports(t, ReportAccepted, ""); got != 1 {
		t.Errorf("accepted reports = %v, want 1: the report after the revocation was recorded", got)
	}
}
