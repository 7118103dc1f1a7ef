package controlplane

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
	"github.com/rampart-mesh/rampart/internal/attest"
	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/discovery"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/localconfig"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// clock is a settable clock for the token store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a control plane served over TLS on 127.0.0.1 by a real gRPC server.
type env struct {
	ca         *ca.CA
	tokens     *identity.TokenStore
	tokenClock *clock
	model      *discovery.Model
	reg        *prometheus.Registry
	addr       string
	serverID   spiffeid.ID
	bundle     *meshtls.Bundle
	srv        *Server
	unixAddr   string // "unix:///path" of the Unix listener; "" without one
}

// envOpts are the options of newEnvWith.
type envOpts struct {
	// unix also serves on a Unix socket.
	unix bool
	// policies, when not nil, are the attestation policies in force.
	policies *attest.Policies
	// logger receives the server's logs.
	logger *slog.Logger
	// insights, when not nil, is told what the server learns.
	insights Insights
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, envOpts{})
}

func newEnvWith(t *testing.T, o envOpts) *env {
	t.Helper()
	dir := t.TempDir()
	authority, err := ca.Open(ca.Config{Dir: filepath.Join(dir, "ca"), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	tc := &clock{t: time.Now()}
	tokens, err := identity.OpenTokenStore(filepath.Join(dir, "tokens.json"), tc.Now)
	if err != nil {
		t.Fatal(err)
	}
	model, err := discovery.New(discovery.Config{TrustDomain: td, TrustBundle: authority.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	bundle := &meshtls.Bundle{}
	bundle.SetRoots(td, authority.Roots())
	reg := prometheus.NewRegistry()
	srv, err := New(Config{CA: authority, Tokens: tokens, Policies: o.policies, Model: model, Bundle: bundle, Registerer: reg, SVIDTTL: time.Hour, Logger: o.logger, Insights: o.insights})
	if err != nil {
		t.Fatal(err)
	}

	serverID := spiffeid.RequireFromSegments(td, "ns", "rampart-system", "sa", "rampart-controller")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := authority.IssueServing(key.Public(), serverID, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving := &meshtls.SVID{}
	if err := serving.Set(&x509svid.SVID{ID: serverID, Certificates: chain, PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(ServerCredentials(&tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return serving.Certificate()
		},
	})))
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{ca: authority, tokens: tokens, tokenClock: tc, model: model, reg: reg, addr: lis.Addr().String(), serverID: serverID, bundle: bundle, srv: srv}
	listeners := []net.Listener{lis}
	if o.unix {
		// A short path: socket paths are limited to 107 bytes.
		sockDir, err := os.MkdirTemp("", "cp")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(sockDir) })
		ulis, err := net.Listen("unix", filepath.Join(sockDir, "attest.sock"))
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, ulis)
		e.unixAddr = "unix://" + ulis.Addr().String()
	}
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() { _ = gs.Serve(l) })
	}
	t.Cleanup(func() {
		srv.Drain()
		gs.GracefulStop()
		wg.Wait()
	})
	return e
}

// dial connects presenting svid as the client certificate (none if nil).
func (e *env) dial(t *testing.T, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	return e.dialAddr(t, e.addr, svid)
}

// dialUnix connects over the Unix socket, presenting svid (none if nil):
// this process is the peer the controller attests.
func (e *env) dialUnix(t *testing.T, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	if e.unixAddr == "" {
		t.Fatal("env has no Unix listener")
	}
	return e.dialAddr(t, e.unixAddr, svid)
}

func (e *env) dialAddr(t *testing.T, addr string, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	holder := &meshtls.SVID{}
	if svid != nil {
		if err := holder.Set(svid); err != nil {
			t.Fatal(err)
		}
	}
	tlsCfg := meshtls.Config{SVID: holder, Bundle: e.bundle}.Client(e.serverID)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func workloadID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ns, "sa", sa)
}

func newCSR(t *testing.T, id spiffeid.ID) (crypto.Signer, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func (e *env) token(t *testing.T, id spiffeid.ID) string {
	t.Helper()
	tok, err := e.tokens.Create(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// certify asks for an SVID for id over cc and returns it ready to present.
func certify(t *testing.T, cc *grpc.ClientConn, id spiffeid.ID, token string) (*x509svid.SVID, error) {
	t.Helper()
	key, csr := newCSR(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := meshv1.NewIdentityClient(cc).Certify(ctx, &meshv1.CertifyRequest{Csr: csr, JoinToken: token})
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	got, err := spiffeid.FromString(resp.GetSpiffeId())
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: got, Certificates: chain, PrivateKey: key}, nil
}

// svidFor issues an SVID for id through the token path.
func (e *env) svidFor(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	svid, err := certify(t, e.dial(t, nil), id, e.token(t, id))
	if err != nil {
		t.Fatalf("certify %s: %v", id, err)
	}
	return svid
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got %v (%v), want code %v", got, err, want)
	}
}

// metricValue reads a counter or gauge from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := make(map[string]string)
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			if len(have) != len(labels) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

func refused(reason string) map[string]string {
	return map[string]string{"result": ResultRefused, "reason": reason}
}

func TestCertifyWithToken(t *testing.T) {
	e := newEnv(t)
	id := workloadID("shop", "web")
	svid, err := certify(t, e.dial(t, nil), id, e.token(t, id))
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != id {
		t.Errorf("spiffe_id = %s, want %s", svid.ID, id)
	}
	if got, err := meshtls.VerifyPeer(svid.Certificates, e.bundle, time.Now()); err != nil || got != id {
		t.Errorf("issued chain verifies as %s, %v; want %s", got, err, id)
	}
	if got := svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore); got > time.Hour+5*time.Minute {
		t.Errorf("lifetime %v is longer than the configured hour", got)
	}
	if v := metricValue(t, e.reg, "rampart_controller_certify_total", map[string]string{"result": ResultIssued, "reason": ""}); v != 1 {
		t.Errorf("issued = %v, want 1", v)
	}
}

func TestCertifyRefusals(t *testing.T) {
	e := newEnv(t)
	id := workloadID("shop", "web")
	cc := e.dial(t, nil)

	// A token from another controller's store is well formed but unknown here.
	otherStore, err := identity.OpenTokenStore(filepath.Join(t.TempDir(), "tokens.json"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherStore.Create(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	used := e.token(t, id)
	if _, err := certify(t, cc, id, used); err != nil {
		t.Fatal(err)
	}
	expired := e.token(t, id)

	tests := []struct {
		name   string
		run    func() error
		code   codes.Code
		reason string
	}{
		{"no token", func() error { _, err := certify(t, cc, id, ""); return err }, codes.Unauthenticated, CertifyNoToken},
		{"malformed token", func() error { _, err := certify(t, cc, id, "not a token"); return err }, codes.InvalidArgument, CertifyBadToken},
		{"unknown token", func() error { _, err := certify(t, cc, id, foreign); return err }, codes.Unauthenticated, CertifyUnknownToken},
		{"used token", func() error { _, err := certify(t, cc, id, used); return err }, codes.PermissionDenied, CertifyUsedToken},
		{"expired token", func() error {
			e.tokenClock.Add(2 * time.Hour)
			defer e.tokenClock.Add(-2 * time.Hour)
			_, err := certify(t, cc, id, expired)
			return err
		}, codes.Unauthenticated, CertifyExpiredToken},
		{"CSR for another identity", func() error {
			_, err := certify(t, cc, workloadID("shop", "admin"), e.token(t, id))
			return err
		}, codes.PermissionDenied, CertifyIdentityMismatch},
		{"garbage CSR", func() error {
			_, err := meshv1.NewIdentityClient(cc).Certify(context.Background(), &meshv1.CertifyRequest{Csr: []byte("nope"), JoinToken: e.token(t, id)})
			return err
		}, codes.InvalidArgument, CertifyBadCSR},
		{"empty CSR", func() error {
			_, err := meshv1.NewIdentityClient(cc).Certify(context.Background(), &meshv1.CertifyRequest{JoinToken: e.token(t, id)})
			return err
		}, codes.InvalidArgument, CertifyBadCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metricValue(t, e.reg, "rampart_controller_certify_total", refused(tt.reason))
			wantCode(t, tt.run(), tt.code)
			if got := metricValue(t, e.reg, "rampart_controller_certify_total", refused(tt.reason)) - before; got != 1 {
				t.Errorf("refused{reason=%q} grew by %v, want 1", tt.reason, got)
			}
		})
	}

	t.Run("token reuse message says what to do", func(t *testing.T) {
		_, err := certify(t, cc, id, used)
		if got := status.Convert(err).Message(); got != "join token already used; create a new one with `rampart token create`" {
			t.Errorf("message = %q", got)
		}
	})

	t.Run("a malformed CSR does not spend the token", func(t *testing.T) {
		tok := e.token(t, id)
		_, err := meshv1.NewIdentityClient(cc).Certify(context.Background(), &meshv1.CertifyRequest{Csr: []byte("nope"), JoinToken: tok})
		wantCode(t, err, codes.InvalidArgument)
		if _, err := certify(t, cc, id, tok); err != nil {
			t.Errorf("token refused after a malformed CSR: %v", err)
		}
	})
}

func TestCertifyRenewal(t *testing.T) {
	e := newEnv(t)
	id := workloadID("shop", "web")
	svid := e.svidFor(t, id)

	t.Run("valid SVID, no token", func(t *testing.T) {
		renewed, err := certify(t, e.dial(t, svid), id, "")
		if err != nil {
			t.Fatal(err)
		}
		if renewed.ID != id {
			t.Errorf("renewed as %s, want %s", renewed.ID, id)
		}
		if renewed.Certificates[0].SerialNumber.Cmp(svid.Certificates[0].SerialNumber) == 0 {
			t.Error("renewal returned the same certificate")
		}
	})
	t.Run("valid SVID asking for another identity", func(t *testing.T) {
		_, err := certify(t, e.dial(t, svid), workloadID("shop", "admin"), "")
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("valid SVID with a token", func(t *testing.T) {
		_, err := certify(t, e.dial(t, svid), id, e.token(t, id))
		wantCode(t, err, codes.InvalidArgument)
	})
	t.Run("certificate from another CA, even with a valid token", func(t *testing.T) {
		other, err := ca.Open(ca.Config{Dir: filepath.Join(t.TempDir(), "ca"), TrustDomain: td})
		if err != nil {
			t.Fatal(err)
		}
		key, csr := newCSR(t, id)
		chain, err := other.SignCSR(csr, id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		forged := &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
		before := metricValue(t, e.reg, "rampart_controller_certify_total", refused(CertifyBadCertificate))
		_, err = certify(t, e.dial(t, forged), id, e.token(t, id))
		wantCode(t, err, codes.Unauthenticated)
		if got := metricValue(t, e.reg, "rampart_controller_certify_total", refused(CertifyBadCertificate)) - before; got != 1 {
			t.Errorf("bad_certificate grew by %v, want 1", got)
		}
	})
}

func watch(t *testing.T, cc *grpc.ClientConn, req *meshv1.WatchRequest) (grpc.ServerStreamingClient[meshv1.ProxyConfig], context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	stream, err := meshv1.NewDiscoveryClient(cc).Watch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return stream, cancel
}

func TestWatchRefusals(t *testing.T) {
	e := newEnv(t)
	id := workloadID("shop", "client")
	svid := e.svidFor(t, id)
	good := &meshv1.Workload{Name: "client-1", TunnelAddress: "127.0.0.1:15008"}

	// An SVID of this trust domain that is not a workload identity.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	odd := spiffeid.RequireFromPath(td, "/not/a/workload")
	chain, err := e.ca.IssueServing(key.Public(), odd, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	oddSVID := &x509svid.SVID{ID: odd, Certificates: chain, PrivateKey: key}

	manyUpstreams := make([]string, discovery.MaxUpstreams+1)
	for i := range manyUpstreams {
		manyUpstreams[i] = "web"
	}
	tests := []struct {
		name   string
		svid   *x509svid.SVID
		req    *meshv1.WatchRequest
		code   codes.Code
		reason string
	}{
		{"no client certificate", nil, &meshv1.WatchRequest{Workload: good}, codes.Unauthenticated, meshtls.ReasonNoCertificate},
		{"not a workload identity", oddSVID, &meshv1.WatchRequest{Workload: good}, codes.PermissionDenied, WatchNotWorkload},
		{"no workload", svid, &meshv1.WatchRequest{}, codes.InvalidArgument, WatchBadRequest},
		{"bad workload name", svid, &meshv1.WatchRequest{Workload: &meshv1.Workload{Name: "Client_1", TunnelAddress: "127.0.0.1:15008"}}, codes.InvalidArgument, WatchBadRequest},
		{"bad tunnel address", svid, &meshv1.WatchRequest{Workload: &meshv1.Workload{Name: "client-1", TunnelAddress: "127.0.0.1"}}, codes.InvalidArgument, WatchBadRequest},
		{"bad label", svid, &meshv1.WatchRequest{Workload: &meshv1.Workload{Name: "client-1", TunnelAddress: "127.0.0.1:1", Labels: map[string]string{"a b": "c"}}}, codes.InvalidArgument, WatchBadRequest},
		{"bad upstream", svid, &meshv1.WatchRequest{Workload: good, Upstreams: []string{"web", "Web..x"}}, codes.InvalidArgument, WatchBadRequest},
		{"too many upstreams", svid, &meshv1.WatchRequest{Workload: good, Upstreams: manyUpstreams}, codes.InvalidArgument, WatchBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metricValue(t, e.reg, "rampart_controller_watch_refused_total", map[string]string{"reason": tt.reason})
			stream, _ := watch(t, e.dial(t, tt.svid), tt.req)
			_, err := stream.Recv()
			wantCode(t, err, tt.code)
			if got := metricValue(t, e.reg, "rampart_controller_watch_refused_total", map[string]string{"reason": tt.reason}) - before; got != 1 {
				t.Errorf("watch_refused{reason=%q} grew by %v, want 1", tt.reason, got)
			}
		})
	}
	if v := metricValue(t, e.reg, "rampart_controller_watch_streams", nil); v != 0 {
		t.Errorf("watch_streams = %v after refusals, want 0", v)
	}
}

func TestWatchPushesChanges(t *testing.T) {
	e := newEnv(t)
	e.model.SetResources(&localconfig.Resources{Services: []v1alpha1.Service{{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.KindService},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: v1alpha1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []v1alpha1.ServicePort{{Port: 80, TargetPort: 8080, Protocol: v1alpha1.ProtocolHTTP}},
		},
	}}})

	clientID := workloadID("shop", "client")
	client, cancelClient := watch(t, e.dial(t, e.svidFor(t, clientID)), &meshv1.WatchRequest{
		Workload:  &meshv1.Workload{Name: "client-1", TunnelAddress: "127.0.0.1:15001"},
		Upstreams: []string{"web", "missing.elsewhere"},
	})
	first, err := client.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetSpiffeId() != clientID.String() || len(first.GetServices()) != 2 || len(first.GetTrustBundle()) == 0 {
		t.Fatalf("first config = %v", first)
	}
	for _, s := range first.GetServices() {
		if len(s.GetEndpoints()) != 0 {
			t.Fatalf("endpoints before any server registered: %v", s)
		}
	}

	// A server proxy comes up: the client is told about its endpoint, the
	// server gets its inbound port.
	webID := workloadID("shop", "web")
	server, cancelServer := watch(t, e.dial(t, e.svidFor(t, webID)), &meshv1.WatchRequest{
		Workload: &meshv1.Workload{Name: "web-1", Labels: map[string]string{"app": "web"}, TunnelAddress: "127.0.0.1:15002"},
	})
	serverCfg, err := server.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if in := serverCfg.GetInbound(); len(in) != 1 || in[0].GetPort() != 8080 || in[0].GetProtocol() != meshv1.Protocol_PROTOCOL_HTTP {
		t.Errorf("server inbound = %v, want 8080/HTTP", in)
	}

	second, err := client.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if second.GetVersion() == first.GetVersion() {
		t.Errorf("second config has the same version %q", second.GetVersion())
	}
	var web *meshv1.Service
	for _, s := range second.GetServices() {
		if s.GetName() == "web" {
			web = s
		}
	}
	if eps := web.GetEndpoints(); len(eps) != 1 || eps[0].GetAddress() != "127.0.0.1:15002" || eps[0].GetSpiffeId() != webID.String() || eps[0].GetWorkload() != "web-1" {
		t.Errorf("web endpoints = %v", eps)
	}
	if v := metricValue(t, e.reg, "rampart_controller_watch_streams", nil); v != 2 {
		t.Errorf("watch_streams = %v, want 2", v)
	}
	if v := metricValue(t, e.reg, "rampart_controller_config_pushes_total", nil); v != 3 {
		t.Errorf("config_pushes_total = %v, want 3", v)
	}

	// The server goes away: its endpoint is withdrawn.
	cancelServer()
	third, err := client.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if third.GetVersion() != first.GetVersion() {
		t.Errorf("after the server left, version = %q, want the first %q", third.GetVersion(), first.GetVersion())
	}
	cancelClient()
	waitFor(t, func() bool { return metricValue(t, e.reg, "rampart_controller_watch_streams", nil) == 0 })
}

func TestWatchDrain(t *testing.T) {
	e := newEnv(t)
	id := workloadID("shop", "client")
	stream, _ := watch(t, e.dial(t, e.svidFor(t, id)), &meshv1.WatchRequest{
		Workload: &meshv1.Workload{Name: "client-1", TunnelAddress: "127.0.0.1:15001"},
	})
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	e.srv.Drain()
	_, err := stream.Recv()
	wantCode(t, err, codes.Unavailable)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New(Config{}) succeeded")
	}
}

// TestConfigRefusesPoliciesOfAnotherTrustDomain: they would apply to no
// identity this CA issues, and so admit any code.
func TestConfigRefusesPoliciesOfAnotherTrustDomain(t *testing.T) {
	authority, err := ca.Open(ca.Config{Dir: filepath.Join(t.TempDir(), "ca"), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{CA: authority, Tokens: &identity.TokenStore{}, Model: &discovery.Model{}, Bundle: &meshtls.Bundle{},
		Policies: attest.NewPolicies(spiffeid.RequireTrustDomainFromString("other.org"))}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "other.org") {
		t.Errorf("Validate = %v, want an error naming the policies' trust domain", err)
	}
	cfg.Policies = attest.NewPolicies(td)
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with policies of the CA's trust domain: %v", err)
	}
}
