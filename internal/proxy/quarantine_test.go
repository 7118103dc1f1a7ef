package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rampart-mesh/rampart/internal/ca"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
)

func TestValidateQuarantine(t *testing.T) {
	until := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	orders := "spiffe://example.org/ns/shop/sa/orders"
	good := func() *meshv1.Quarantine {
		return &meshv1.Quarantine{Identities: []*meshv1.QuarantinedIdentity{
			{SpiffeId: orders, Until: timestamppb.New(until), Reason: "route_scan evt-1"},
		}}
	}
	tests := []struct {
		name    string
		mutate  func(*meshv1.Quarantine)
		wantErr string
	}{
		{"good", func(*meshv1.Quarantine) {}, ""},
		{"bad identity", func(q *meshv1.Quarantine) { q.Identities[0].SpiffeId = "orders" }, "quarantine.identities[0]: spiffe_id \"orders\""},
		{"empty identity", func(q *meshv1.Quarantine) { q.Identities[0].SpiffeId = "" }, "quarantine.identities[0]: spiffe_id"},
		{"duplicate", func(q *meshv1.Quarantine) {
			q.Identities = append(q.Identities, &meshv1.QuarantinedIdentity{SpiffeId: orders, Until: timestamppb.New(until.Add(time.Hour))})
		}, "quarantine.identities[1]: " + orders + " listed twice"},
		{"no until", func(q *meshv1.Quarantine) { q.Identities[0].Until = nil }, "until"},
		{"until out of range", func(q *meshv1.Quarantine) { q.Identities[0].Until = &timestamppb.Timestamp{Seconds: 1 << 40} }, "until"},
		{"long reason", func(q *meshv1.Quarantine) { q.Identities[0].Reason = strings.Repeat("x", 257) }, "reason longer than 256 bytes"},
		{"too many", func(q *meshv1.Quarantine) {
			for i := range maxQuarantine {
				q.Identities = append(q.Identities, &meshv1.QuarantinedIdentity{
					SpiffeId: fmt.Sprintf("spiffe://example.org/ns/n/sa/s%d", i), Until: timestamppb.New(until)})
			}
		}, "more than the 10000 allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pc := goodConfig()
			pc.Quarantine = good()
			tc.mutate(pc.Quarantine)
			v, err := validateConfig(pc, self)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("validateConfig: %v", err)
				}
				leaf := &x509.Certificate{SerialNumber: big.NewInt(7), URIs: []*url.URL{spiffeid.RequireFromString(orders).URL()}}
				if err := v.quarantined.Check(leaf, until.Add(-time.Second)); meshtls.Reason(err) != meshtls.ReasonQuarantined {
					t.Fatalf("before until: Check = %v, want quarantined", err)
				}
				if err := v.quarantined.Check(leaf, until); err != nil {
					t.Fatalf("at until: Check = %v, want nil: the quarantine has ended", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validateConfig error = %v, want one containing %q", err, tc.wantErr)
			}
			if got := rejectReason(err); got != rejectQuarantine {
				t.Fatalf("reject reason %q, want %q", got, rejectQuarantine)
			}
		})
	}

	v, err := validateConfig(goodConfig(), self)
	if err != nil || v.quarantined.Len() != 0 {
		t.Fatalf("validateConfig without a quarantine list = %v, %v", v, err)
	}
}

// TestQuarantineIgnoresController: an entry naming the controller would
// cut the proxy off the control plane; it is left out, the others apply.
func TestQuarantineIgnoresController(t *testing.T) {
	until := time.Now().Add(time.Hour)
	ctrl := identity.ControllerID(self.TrustDomain())
	orders := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/orders")
	pc := goodConfig()
	pc.Quarantine = &meshv1.Quarantine{Identities: []*meshv1.QuarantinedIdentity{
		{SpiffeId: ctrl.String(), Until: timestamppb.New(until)},
		{SpiffeId: orders.String(), Until: timestamppb.New(until)},
	}}
	v, err := validateConfig(pc, self)
	if err != nil {
		t.Fatalf("validateConfig: %v", err)
	}
	if len(v.quarantineIgnored) != 1 || v.quarantineIgnored[0] != ctrl.String() {
		t.Errorf("ignored = %v, want [%s]", v.quarantineIgnored, ctrl)
	}
	if _, ok := v.quarantined.Quarantines(ctrl, time.Now()); ok {
		t.Error("the controller is quarantined")
	}
	if _, ok := v.quarantined.Quarantines(orders, time.Now()); !ok {
		t.Error("the other entry was not applied")
	}
}

// TestRefusedConfigAppliesQuarantine: a configuration refused for a
// reason unrelated to its quarantine list still puts that list in force;
// a malformed list leaves the one in force.
func TestRefusedConfigAppliesQuarantine(t *testing.T) {
	authority, err := ca.Open(ca.Config{Dir: t.TempDir(), TrustDomain: self.TrustDomain()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{TrustBundle: authority.Roots(), TrustDomain: "example.org", Namespace: "shop", Workload: "web",
		TunnelListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.dialer.Close(); p.admin.Close() })
	orders := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/orders")
	leaf := &x509.Certificate{SerialNumber: big.NewInt(7), URIs: []*url.URL{orders.URL()}}

	pc := goodConfig()
	pc.Quarantine = &meshv1.Quarantine{Identities: []*meshv1.QuarantinedIdentity{{SpiffeId: orders.String(), Until: timestamppb.New(time.Now().Add(time.Hour))}}}
	pc.Services[0].Ports[0].Port = 0 // refused: services
	err = p.apply(pc)
	if rejectReason(err) != rejectServices {
		t.Fatalf("apply = %v, want a refusal of the services", err)
	}
	p.applyRefusedQuarantine(pc, err)
	if meshtls.Reason(p.tls.CheckPeer(leaf)) != meshtls.ReasonQuarantined {
		t.Fatal("the quarantine list of a configuration refused for its services is not in force")
	}

	bad := goodConfig()
	bad.Services[0].Ports[0].Port = 0
	bad.Quarantine = &meshv1.Quarantine{Identities: []*meshv1.QuarantinedIdentity{{SpiffeId: "orders"}}}
	err = p.apply(bad)
	if rejectReason(err) != rejectServices {
		t.Fatalf("apply = %v, want a refusal of the services first", err)
	}
	p.applyRefusedQuarantine(bad, err)
	if meshtls.Reason(p.tls.CheckPeer(leaf)) != meshtls.ReasonQuarantined {
		t.Fatal("a malformed list in a refused configuration replaced the one in force")
	}
	bad.Services[0].Ports[0].Port = 80
	if err := p.apply(bad); rejectReason(err) != rejectQuarantine {
		t.Fatalf("apply of a malformed quarantine list = %v, want reason %q", err, rejectQuarantine)
	}
	if got := testutil.ToFloat64(p.metrics.ConfigRejected.WithLabelValues(rejectQuarantine)); got != 1 {
		t.Fatalf("config rejected{reason=quarantine} = %v, want 1", got)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// securityCounts collects p's telemetry report and returns its security
// counts of kind.
func securityCounts(p *Proxy, kind meshv1.SecurityKind) []*meshv1.SecurityCount {
	var out []*meshv1.SecurityCount
	for _, s := range p.metrics.Telemetry().Collect("w", time.Now(), 0).GetSecurity() {
		if s.GetKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

func portOf(t *testing.T, addr string) uint32 {
	t.Helper()
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}

// TestQuarantineInForce quarantines, with real proxies, the client at the
// server: its open tunnel connection is closed with the stream on it,
// its next handshake is refused (metric reason quarantined, security
// count TLS_QUARANTINED with its claimed identity); releasing it lets
// traffic through again. Then the server at the client: the client
// refuses to dial it.
func TestQuarantineInForce(t *testing.T) {
	bp := newBenchPath(t)
	get := func() (int, error) {
		res, err := http.Get("http://" + bp.httpAddr + "/")
		if err != nil {
			return 0, err
		}
		defer res.Body.Close()
		io.Copy(io.Discard, res.Body)
		return res.StatusCode, nil
	}
	if code, err := get(); err != nil || code != http.StatusOK {
		t.Fatalf("GET before the quarantine = %d, %v", code, err)
	}
	stream, err := net.Dial("tcp", bp.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	buf := make([]byte, 4)
	if _, err := io.WriteString(stream, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(stream, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the tunnel = %q, %v", buf, err)
	}
	bp.server.metrics.Telemetry().Collect("w", time.Now(), 0) // start a clean interval

	quarantined := proto.Clone(bp.serverConfig).(*meshv1.ProxyConfig)
	quarantined.Version = "2"
	quarantined.Quarantine = &meshv1.Quarantine{Identities: []*meshv1.QuarantinedIdentity{
		{SpiffeId: bp.clientID, Until: timestamppb.New(time.Now().Add(time.Hour)), Reason: "operator"},
	}}
	if err := bp.server.apply(quarantined); err != nil {
		t.Fatal(err)
	}
	// The tunnel connection is closed on both sides, and the stream on it
	// with it: what the app sends is no longer echoed.
	if n := bp.server.tunnelLis.Load().OpenConns(); n != 0 {
		t.Fatalf("the server keeps %d tunnel connections open with a quarantined client", n)
	}
	waitFor(t, "the client to see its tunnel connection closed", func() bool { return bp.client.dialer.OpenConns() == 0 })
	io.WriteString(stream, "pong")
	stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.ReadFull(stream, buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a stream of a quarantined peer = %q, %v; want it closed", buf[:n], err)
	}
	if code, err := get(); err == nil && code == http.StatusOK {
		t.Fatal("GET from a quarantined client succeeded")
	}
	refused := bp.server.metrics.TLSRefusals.WithLabelValues(metrics.Inbound, meshtls.ReasonQuarantined)
	waitFor(t, "the server to count the refusal", func() bool { return testutil.ToFloat64(refused) >= 1 })
	sec := securityCounts(bp.server, meshv1.SecurityKind_SECURITY_KIND_TLS_QUARANTINED)
	if len(sec) != 1 {
		t.Fatalf("server security counts of TLS_QUARANTINED: %v, want one entry", sec)
	}
	s := sec[0]
	clientSerial := meshtls.SerialOf(bp.client.svid.Get().Certificates[0])
	if s.GetPresentedSpiffeId() != bp.clientID || s.GetPeerIp() != "127.0.0.1" || s.GetPresentedSerial() != clientSerial ||
		s.GetPort() != portOf(t, bp.server.TunnelAddr()) || s.GetCount() < 1 || s.GetPresentedIssuer() == "" {
		t.Fatalf("security count %v: want client %s serial %s from 127.0.0.1 on port %s", s, bp.clientID, clientSerial, bp.server.TunnelAddr())
	}

	// Released: traffic flows again.
	released := proto.Clone(bp.serverConfig).(*meshv1.ProxyConfig)
	released.Version = "3"
	if err := bp.server.apply(released); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "traffic after the release", func() bool { code, err := get(); return err == nil && code == http.StatusOK })

	// The server quarantined at the client: the client refuses it.
	cfg := bp.client.config.Load()
	atClient := proto.Clone(cfg).(*meshv1.ProxyConfig)
	atClient.Version = "2"
	atClient.Quarantine = &meshv1.Quarantine{Identities: []*meshv1.QuarantinedIdentity{
		{SpiffeId: bp.server.id.String(), Until: timestamppb.New(time.Now().Add(time.Hour))},
	}}
	if err := bp.client.apply(atClient); err != nil {
		t.Fatal(err)
	}
	if bp.client.dialer.OpenConns() != 0 {
		t.Fatalf("the client keeps %d connections to a quarantined server", bp.client.dialer.OpenConns())
	}
	if code, err := get(); err == nil && code == http.StatusOK {
		t.Fatal("GET to a quarantined server succeeded")
	}
	out := bp.client.metrics.TLSRefusals.WithLabelValues(metrics.Outbound, meshtls.ReasonQuarantined)
	if testutil.ToFloat64(out) < 1 {
		t.Fatal("the client counted no outbound refusal for the quarantine")
	}
	sec = securityCounts(bp.client, meshv1.SecurityKind_SECURITY_KIND_TLS_QUARANTINED)
	if len(sec) != 1 || sec[0].GetPresentedSpiffeId() != bp.server.id.String() || sec[0].GetPort() != portOf(t, bp.server.TunnelAddr()) {
		t.Fatalf("client security counts of TLS_QUARANTINED: %v, want the server on its tunnel port", sec)
	}
}

// TestSecurityCountsUnknownCA: a client whose certificate chains to
// another authority is refused by the tunnel listener and counted as
// TLS_UNKNOWN_CA with what its certificate claims; a handshake that fails
// for no certificate reason (plain bytes) is not counted.
func TestSecurityCountsUnknownCA(t *testing.T) {
	bp := newBenchPath(t)
	bp.server.metrics.Telemetry().Collect("w", time.Now(), 0)

	td := bp.server.id.TrustDomain()
	rogue, err := ca.Open(ca.Config{Dir: t.TempDir(), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	claimed := spiffeid.RequireFromPath(td, "/ns/"+benchNS+"/sa/client")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{claimed.URL()}}, key)
	chain, err := rogue.SignCSR(csr, claimed, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	for range 2 {
		conn, err := tls.Dial("tcp", bp.server.TunnelAddr(), &tls.Config{
			Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
			InsecureSkipVerify: true, //nolint:gosec // the test's client does not care who the server is
		})
		if err == nil {
			// TLS 1.3: the server's refusal arrives after the client's
			// side of the handshake.
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatal("a client of another authority was served")
		}
	}
	plain, err := net.Dial("tcp", bp.server.TunnelAddr())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	io.Copy(io.Discard, plain)
	plain.Close()

	refused := bp.server.metrics.TLSRefusals.WithLabelValues(metrics.Inbound, meshtls.ReasonUnknownAuthority)
	waitFor(t, "the server to count both refusals", func() bool { return testutil.ToFloat64(refused) >= 2 })
	handshake := bp.server.metrics.TLSRefusals.WithLabelValues(metrics.Inbound, meshtls.ReasonHandshake)
	waitFor(t, "the server to count the plaintext handshake", func() bool { return testutil.ToFloat64(handshake) >= 1 })
	all := bp.server.metrics.Telemetry().Collect("w", time.Now(), 0).GetSecurity()
	if len(all) != 1 {
		t.Fatalf("security counts %v, want one entry", all)
	}
	s := all[0]
	want := meshtls.PresentedBy(chain[0])
	if s.GetKind() != meshv1.SecurityKind_SECURITY_KIND_TLS_UNKNOWN_CA || s.GetCount() != 2 ||
		s.GetPresentedSpiffeId() != claimed.String() || s.GetPresentedSerial() != want.Serial ||
		s.GetPresentedIssuer() != chain[0].Issuer.String() || s.GetPeerIp() != "127.0.0.1" ||
		s.GetPort() != portOf(t, bp.server.TunnelAddr()) {
		t.Fatalf("security count %v, want 2 TLS_UNKNOWN_CA claiming %s serial %s", s, claimed, want.Serial)
	}
}
