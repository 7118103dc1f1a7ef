// Package e2e runs the local mesh end to end on loopback: a controller and
// several proxies in this process, real apps behind them, real mTLS
// between them.
package e2e

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/proxy"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/outbound"
)

const (
	ns          = "e2e"
	trustDomain = "e2e.rampart.test"
)

// mesh is a controller with its state, plus the proxies started against it.
type mesh struct {
	t         *testing.T
	stateDir  string
	configDir string
	td        spiffeid.TrustDomain
	ttl       time.Duration

	ctrlOpts   []func(*controller.Config) // applied to every controller started
	ctrl       *controller.Controller
	ctrlAddr   string
	stopCtrl   context.CancelFunc
	ctrlDone   chan error
	bundlePath string
}

func newMesh(t *testing.T, ttl time.Duration, config string, opts ...func(*controller.Config)) *mesh {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	m := &mesh{
		t:         t,
		stateDir:  t.TempDir(),
		configDir: t.TempDir(),
		td:        spiffeid.RequireTrustDomainFromString(trustDomain),
		ttl:       ttl,
		ctrlOpts:  opts,
	}
	m.writeConfig("mesh.yaml", config)
	m.startController("127.0.0.1:0")
	return m
}

func (m *mesh) logger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{m.t, name}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func (m *mesh) writeConfig(name, content string) {
	m.t.Helper()
	// Write then rename, as editors do, so that the watcher never reads a
	// half-written file.
	tmp := filepath.Join(m.configDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.configDir, name)); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mesh) startController(listen string) {
	m.t.Helper()
	cfg := controller.Config{
		StateDir:    m.stateDir,
		ConfigDir:   m.configDir,
		Listen:      listen,
		AdminListen: "off",
		TrustDomain: trustDomain,
		SVIDTTL:     m.ttl,
		Logger:      m.logger("controller"),
	}
	for _, o := range m.ctrlOpts {
		o(&cfg)
	}
	c, err := controller.New(cfg)
	if err != nil {
		m.t.Fatalf("controller: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-done:
		cancel()
		m.t.Fatalf("controller stopped: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		m.t.Fatal("controller not ready after 10s")
	}
	m.ctrl, m.ctrlAddr, m.stopCtrl, m.ctrlDone = c, c.Addr(), cancel, done
	m.bundlePath = filepath.Join(m.stateDir, controller.BundleFile)
	m.t.Cleanup(m.stopController)
}

func (m *mesh) stopController() {
	if m.stopCtrl == nil {
		return
	}
	m.stopCtrl()
	if err := <-m.ctrlDone; err != nil {
		m.t.Errorf("controller: %v", err)
	}
	m.stopCtrl = nil
}

func (m *mesh) token(sa string) string {
	m.t.Helper()
	id, err := identity.WorkloadID(m.td, ns, sa)
	if err != nil {
		m.t.Fatal(err)
	}
	tok, err := m.ctrl.Tokens().Create(id, time.Hour)
	if err != nil {
		m.t.Fatal(err)
	}
	return tok
}

type proxyOpts struct {
	name      string
	sa        string // default: name
	labels    map[string]string
	upstreams []string // service=... listen addresses are picked here
	token     string   // default: a fresh one for sa
	// controller overrides the controller's address (a unix:// socket,
	// say); with noToken the proxy starts without a join token.
	controller string
	noToken    bool
	// telemetryInterval overrides the proxy's report interval (5 s).
	telemetryInterval time.Duration
}

type runningProxy struct {
	*proxy.Proxy
	cancel context.CancelFunc
	done   chan error
}

// start builds and runs a proxy; it waits for readiness unless wait is false.
func (m *mesh) startProxy(o proxyOpts, wait bool) *runningProxy {
	m.t.Helper()
	if o.sa == "" {
		o.sa = o.name
	}
	if o.token == "" && !o.noToken {
		o.token = m.token(o.sa)
	}
	roots, err := proxy.LoadBundle(m.bundlePath)
	if err != nil {
		m.t.Fatal(err)
	}
	cfg := proxy.Config{
		Controller:     cmp.Or(o.controller, m.ctrlAddr),
		TrustBundle:    roots,
		JoinToken:      o.token,
		Namespace:      ns,
		ServiceAccount: o.sa,
		Workload:       o.name,
		Labels:         o.labels,
		TunnelListen:   "127.0.0.1:0",
		AdminListen:    "127.0.0.1:0",
		DrainTimeout:   2 * time.Second,
		Logger:         m.logger(o.name),

		TelemetryInterval: o.telemetryInterval,
	}
	for _, u := range o.upstreams {
		up, err := outbound.ParseUpstream(u + "=127.0.0.1:0")
		if err != nil {
			m.t.Fatal(err)
		}
		cfg.Upstreams = append(cfg.Upstreams, up)
	}
	p, err := proxy.New(cfg)
	if err != nil {
		m.t.Fatalf("proxy %s: %v", o.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rp := &runningProxy{Proxy: p, cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- p.Run(ctx) }()
	m.t.Cleanup(func() {
		cancel()
		<-rp.done
	})
	if wait {
		eventually(m.t, 10*time.Second, func() error {
			select {
			case err := <-rp.done:
				rp.done <- err
				return fmt.Errorf("proxy %s stopped: %v", o.name, err)
			default:
			}
			if !p.Ready() {
				return fmt.Errorf("proxy %s not ready", o.name)
			}
			return nil
		})
	}
	return rp
}

// eventually retries f until it succeeds or the deadline passes.
func eventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s: %s", w.name, strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// apps are the servers behind the "server" proxy.
type apps struct {
	httpPort, grpcPort, tcpPort int
}

func startApps(t *testing.T) apps {
	t.Helper()
	var a apps
	// HTTP: echoes who called it, as the proxy said.
	hl := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "caller=%s host=%s path=%s", r.Header.Get("Rampart-Client-Id"), r.Host, r.URL.Path)
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	a.httpPort = port(hl)

	// gRPC: a bidirectional echo.
	gl := listen(t)
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, echoService{})
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)
	a.grpcPort = port(gl)

	a.tcpPort = startLineEcho(t)
	return a
}

// startLineEcho starts a TCP line echo that speaks first ("hello"), as
// server-first protocols do, and returns its port.
func startLineEcho(t *testing.T) int {
	t.Helper()
	tl := listen(t)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintln(c, "hello")
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { tl.Close() })
	return port(tl)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

type echoService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (echoService) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func servicesYAML(a apps) string {
	return fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec:
  selector: {app: server}
  serviceAccounts: [server]
  ports: [{name: http, port: 80, targetPort: %[2]d, protocol: HTTP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: echo, namespace: %[1]s}
spec:
  selector: {app: server}
  ports: [{name: grpc, port: 50051, targetPort: %[3]d, protocol: GRPC}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: lines, namespace: %[1]s}
spec:
  selector: {app: server}
  ports: [{name: tcp, port: 7, targetPort: %[4]d, protocol: TCP}]
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: empty, namespace: %[1]s}
spec:
  selector: {app: nobody}
  ports: [{name: grpc, port: 50051, targetPort: %[3]d, protocol: GRPC}]
`, ns, a.httpPort, a.grpcPort, a.tcpPort)
}

// get sends a GET through an outbound listener.
func get(addr, path string, hdr map[string]string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestMeshCarriesHTTPGRPCAndTCPWithIdentities(t *testing.T) {
	a := startApps(t)
	m := newMesh(t, time.Hour, servicesYAML(a))
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web", "echo", "lines"}}, true)
	clientID := client.ID().String()

	t.Run("http", func(t *testing.T) {
		var body string
		eventually(t, 5*time.Second, func() error {
			code, b, err := get(client.UpstreamAddr(0), "/orders/7", map[string]string{
				// A forged identity header must not reach the app.
				"Rampart-Client-Id": "spiffe://evil/ns/x/sa/y",
			})
			if err != nil || code != 200 {
				return fmt.Errorf("code %d err %v body %q", code, err, b)
			}
			body = b
			return nil
		})
		want := "caller=" + clientID + " host=" + client.UpstreamAddr(0) + " path=/orders/7"
		if body != want {
			t.Fatalf("app saw %q, want %q", body, want)
		}
	})

	t.Run("grpc bidirectional streaming", func(t *testing.T) {
		conn, err := grpc.NewClient(client.UpstreamAddr(1), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			msg := fmt.Sprintf("ping %d", i)
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(msg)}}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(resp.GetPayload().GetBody()); got != msg {
				t.Fatalf("echo %q, want %q", got, msg)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after CloseSend: %v, want EOF", err)
		}
	})

	t.Run("opaque tcp", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", client.UpstreamAddr(2), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		if line, err := r.ReadString('\n'); err != nil || line != "hello\n" {
			t.Fatalf("greeting %q, %v", line, err)
		}
		fmt.Fprintln(c, "over the tunnel")
		if line, err := r.ReadString('\n'); err != nil || line != "over the tunnel\n" {
			t.Fatalf("echo %q, %v", line, err)
		}
	})

	t.Run("grpc caller gets a grpc status when the mesh cannot route", func(t *testing.T) {
		empty := m.startProxy(proxyOpts{name: "client2", sa: "client", upstreams: []string{"empty"}}, true)
		conn, err := grpc.NewClient(empty.UpstreamAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = testgrpc.NewTestServiceClient(conn).EmptyCall(ctx, &testgrpc.Empty{})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no endpoints") {
			t.Fatalf("call to a service without endpoints: %v, want UNAVAILABLE naming the cause", err)
		}
		failed := metrics.Value(empty.Metrics().Requests, "direction", "outbound", "dst_identity", "", "dst_service", "empty."+ns, "code", "503")
		if got := failed; got != 1 {
			t.Fatalf("refused request counted %v times, want 1", got)
		}
	})

	t.Run("metrics name the peer", func(t *testing.T) {
		reqs := metrics.Value(client.Metrics().Requests, "direction", "outbound", "src_workload", "client", "src_identity", clientID,
			"dst_workload", "server", "dst_identity", server.ID().String(), "dst_service", "web."+ns, "route", "", "tls", "mtls", "code", "200")
		if got := reqs; got < 1 {
			t.Fatalf("outbound requests counted %v, want >= 1", got)
		}
		in := metrics.Value(server.Metrics().Requests, "direction", "inbound", "src_identity", clientID,
			"dst_workload", "server", "dst_identity", server.ID().String(), "dst_service", fmt.Sprintf(":%d", a.httpPort), "tls", "mtls", "code", "200")
		if got := in; got < 1 {
			t.Fatalf("inbound requests counted %v, want >= 1", got)
		}
	})
}

// rawTLS dials the proxy's tunnel listener as a client with the given
// certificate (nil for none) and reports whether the proxy let it through.
func rawTLS(t *testing.T, addr string, cert *tls.Certificate) error {
	t.Helper()
	cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	// In TLS 1.3 the server judges the client certificate after the
	// client's handshake is done: the verdict arrives on the first read.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	_, err = c.Read(make([]byte, 1))
	return err
}

// leaf issues a certificate for id from authority with a fresh key.
func leaf(t *testing.T, authority *ca.CA, id spiffeid.ID, ttl time.Duration) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := authority.SignCSR(csr, id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

func TestMeshRefusals(t *testing.T) {
	a := startApps(t)
	m := newMesh(t, time.Hour, servicesYAML(a))
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	refusals := func(dir, reason string) float64 {
		return testutil.ToFloat64(server.Metrics().TLSRefusals.WithLabelValues(dir, reason))
	}
	caller, _ := identity.WorkloadID(m.td, ns, "client")

	t.Run("client without certificate", func(t *testing.T) {
		if err := rawTLS(t, server.TunnelAddr(), nil); err == nil {
			t.Fatal("accepted a client without a certificate")
		}
		eventually(t, 5*time.Second, func() error {
			if refusals("inbound", "no_certificate") < 1 {
				return fmt.Errorf("no_certificate not counted")
			}
			return nil
		})
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		other, err := ca.Open(ca.Config{Dir: t.TempDir(), TrustDomain: m.td})
		if err != nil {
			t.Fatal(err)
		}
		if err := rawTLS(t, server.TunnelAddr(), leaf(t, other, caller, time.Hour)); err == nil {
			t.Fatal("accepted a certificate from another CA")
		}
		eventually(t, 5*time.Second, func() error {
			if refusals("inbound", "unknown_authority") < 1 {
				return fmt.Errorf("unknown_authority not counted")
			}
			return nil
		})
	})

	t.Run("expired certificate", func(t *testing.T) {
		mine, err := ca.Open(ca.Config{Dir: filepath.Join(m.stateDir, controller.CADir), TrustDomain: m.td})
		if err != nil {
			t.Fatal(err)
		}
		cert := leaf(t, mine, caller, time.Millisecond)
		time.Sleep(5 * time.Millisecond)
		if err := rawTLS(t, server.TunnelAddr(), cert); err == nil {
			t.Fatal("accepted an expired certificate")
		}
		eventually(t, 5*time.Second, func() error {
			if refusals("inbound", "expired") < 1 {
				return fmt.Errorf("expired not counted")
			}
			return nil
		})
	})

	t.Run("server with the wrong identity", func(t *testing.T) {
		// A proxy running as "rogue" is published at an address that
		// discovery says belongs to "server": clients must refuse it.
		rogue := m.startProxy(proxyOpts{name: "rogue"}, true)
		m.writeConfig("impostor.yaml", fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Workload
metadata: {name: impostor, namespace: %[1]s, labels: {app: impostor}}
spec: {serviceAccount: server, tunnelAddress: "%[2]s"}
---
apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: impostor, namespace: %[1]s}
spec:
  selector: {app: impostor}
  ports: [{port: 80, targetPort: %[3]d, protocol: HTTP}]
`, ns, rogue.TunnelAddr(), a.httpPort))
		client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"impostor"}}, true)
		eventually(t, 5*time.Second, func() error {
			code, body, err := get(client.UpstreamAddr(0), "/", nil)
			if err != nil {
				return err
			}
			if code != http.StatusBadGateway {
				return fmt.Errorf("code %d body %q, want 502", code, body)
			}
			return nil
		})
		if got := testutil.ToFloat64(client.Metrics().TLSRefusals.WithLabelValues("outbound", "wrong_identity")); got < 1 {
			t.Fatalf("wrong_identity refusals %v, want >= 1", got)
		}
	})

	t.Run("reused join token", func(t *testing.T) {
		tok := m.token("reuse")
		m.startProxy(proxyOpts{name: "reuse", token: tok}, true)
		second := m.startProxy(proxyOpts{name: "reuse-again", sa: "reuse", token: tok}, false)
		select {
		case err := <-second.done:
			second.done <- err
			if err == nil || !strings.Contains(err.Error(), "already used") {
				t.Fatalf("second use of a token: %v, want a refusal naming reuse", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a proxy with a used token is still running")
		}
	})

	t.Run("unknown join token", func(t *testing.T) {
		p := m.startProxy(proxyOpts{name: "stranger", token: "rjt.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, false)
		select {
		case err := <-p.done:
			p.done <- err
			if err == nil {
				t.Fatal("a proxy with an unknown token got an identity")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a proxy with an unknown token is still running")
		}
	})

	t.Run("token for another identity", func(t *testing.T) {
		// The token grants "server"; the proxy asks to be "payments".
		p := m.startProxy(proxyOpts{name: "thief", sa: "payments", token: m.token("server")}, false)
		select {
		case err := <-p.done:
			p.done <- err
			if err == nil || !strings.Contains(err.Error(), "payments") {
				t.Fatalf("CSR for another identity: %v, want a refusal naming it", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a proxy asking for another identity is still running")
		}
	})
}

func TestMeshRenewsCertificatesWithoutDroppingConnections(t *testing.T) {
	a := startApps(t)
	m := newMesh(t, 3*time.Second, servicesYAML(a))
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web", "echo", "lines"}}, true)

	c, err := net.DialTimeout("tcp", client.UpstreamAddr(2), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	first := server.SVID().Get().Certificates[0]
	firstClient := client.SVID().Get().Certificates[0]
	// Outlive the first certificates: every proxy must have renewed.
	eventually(t, 15*time.Second, func() error {
		now := time.Now()
		if now.Before(first.NotAfter.Add(500*time.Millisecond)) || now.Before(firstClient.NotAfter.Add(500*time.Millisecond)) {
			return fmt.Errorf("first certificates still valid")
		}
		return nil
	})
	if server.SVID().Get().Certificates[0].SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("server certificate was not renewed")
	}
	// The connection opened under the first certificates still works.
	fmt.Fprintln(c, "still here")
	if line, err := r.ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("long-lived connection after renewal: %q, %v", line, err)
	}
	// Discovery streams end with the certificate that opened them; the
	// proxies are back on a stream opened with the renewed one.
	eventually(t, 10*time.Second, func() error {
		if testutil.ToFloat64(client.Metrics().ControlPlaneConnected) != 1 {
			return fmt.Errorf("client not connected to the controller")
		}
		return nil
	})
	// New connections use the new certificates.
	if code, body, err := get(client.UpstreamAddr(0), "/", nil); err != nil || code != 200 {
		t.Fatalf("request after renewal: %d %q %v", code, body, err)
	}
}

func TestMeshFailsStaticWhenTheControllerIsAway(t *testing.T) {
	a := startApps(t)
	m := newMesh(t, time.Hour, servicesYAML(a))
	m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
	addr := m.ctrlAddr

	m.stopController()
	eventually(t, 5*time.Second, func() error {
		if testutil.ToFloat64(client.Metrics().ControlPlaneConnected) != 0 {
			return fmt.Errorf("client still connected")
		}
		return nil
	})
	for i := range 20 {
		if code, body, err := get(client.UpstreamAddr(0), "/", nil); err != nil || code != 200 {
			t.Fatalf("request %d with the controller away: %d %q %v", i, code, body, err)
		}
	}
	if !client.Ready() {
		t.Fatal("proxy stopped being ready when the controller went away")
	}

	// The controller comes back on the same state and address: proxies
	// reconnect by themselves.
	m.startController(addr)
	eventually(t, 40*time.Second, func() error {
		if testutil.ToFloat64(client.Metrics().ControlPlaneConnected) != 1 {
			return fmt.Errorf("client not reconnected")
		}
		return nil
	})
	if code, _, err := get(client.UpstreamAddr(0), "/", nil); err != nil || code != 200 {
		t.Fatalf("request after reconnect: %d %v", code, err)
	}
}

func TestMeshKeepsLastGoodConfig(t *testing.T) {
	a := startApps(t)
	m := newMesh(t, time.Hour, servicesYAML(a))
	m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)
	m.writeConfig("mesh.yaml", "apiVersion: rampart.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: x}, ports: [{port: 99999}]}\n")
	// The broken file must not take the service away.
	time.Sleep(500 * time.Millisecond)
	for i := range 5 {
		if code, body, err := get(client.UpstreamAddr(0), "/", nil); err != nil || code != 200 {
			t.Fatalf("request %d after a bad config: %d %q %v", i, code, body, err)
		}
	}
}
