package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/identity"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/meshtls"
	"github.com/rampart-mesh/rampart/internal/proxy"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
	"github.com/rampart-mesh/rampart/internal/telemetry/sketch"
)

func withAdmin(c *controller.Config) { c.AdminListen = "127.0.0.1:0" }

// trafficCLI runs `rampart <args> --controller-admin <admin> -o json` and
// decodes its output into v.
func trafficCLI(t *testing.T, cli, admin string, v any, args ...string) error {
	t.Helper()
	cmd := exec.Command(cli, append(args, "--controller-admin", admin, "-o", "json")...)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return fmt.Errorf("rampart %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("rampart %s printed %q: %v", strings.Join(args, " "), out, err)
	}
	return nil
}

// fakeReporter is a workload whose "proxy" is this test: it certifies,
// registers with Watch and reports over the real control plane.
type fakeReporter struct {
	id     spiffeid.ID
	conn   *grpc.ClientConn
	stream grpc.ClientStreamingClient[meshv1.TelemetryReport, meshv1.TelemetryAck]
}

func (m *mesh) fakeReporter(sa, workload string) *fakeReporter {
	m.t.Helper()
	id, err := identity.WorkloadID(m.td, ns, sa)
	if err != nil {
		m.t.Fatal(err)
	}
	roots, err := proxy.LoadBundle(m.bundlePath)
	if err != nil {
		m.t.Fatal(err)
	}
	bundle := &meshtls.Bundle{}
	bundle.SetRoots(m.td, roots)
	holder := &meshtls.SVID{}
	dial := func() *grpc.ClientConn {
		tlsCfg := meshtls.Config{SVID: holder, Bundle: bundle}.Client(controller.ControllerID(m.td))
		cc, err := grpc.NewClient(m.ctrlAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
		if err != nil {
			m.t.Fatal(err)
		}
		m.t.Cleanup(func() { cc.Close() })
		return cc
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.t.Cleanup(cancel)

	// Certify with a join token, as a proxy's first start does.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		m.t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		m.t.Fatal(err)
	}
	resp, err := meshv1.NewIdentityClient(dial()).Certify(ctx, &meshv1.CertifyRequest{Csr: csr, JoinToken: m.token(sa)})
	if err != nil {
		m.t.Fatalf("certify %s: %v", id, err)
	}
	var chain []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			m.t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if err := holder.Set(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}); err != nil {
		m.t.Fatal(err)
	}

	cc := dial()
	watch, err := meshv1.NewDiscoveryClient(cc).Watch(ctx, &meshv1.WatchRequest{
		Workload: &meshv1.Workload{Name: workload, TunnelAddress: "127.0.0.1:9"},
	})
	if err != nil {
		m.t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		m.t.Fatalf("watch %s: %v", workload, err)
	}
	go func() { // keep the registration while the test runs
		for {
			if _, err := watch.Recv(); err != nil {
				return
			}
		}
	}()
	stream, err := meshv1.NewTelemetryClient(cc).Report(ctx)
	if err != nil {
		m.t.Fatal(err)
	}
	return &fakeReporter{id: id, conn: cc, stream: stream}
}

func (f *fakeReporter) send(t *testing.T, workload string, edges ...*meshv1.EdgeSummary) {
	t.Helper()
	now := time.Now()
	if err := f.stream.Send(&meshv1.TelemetryReport{
		Workload: workload, Start: timestamppb.New(now.Add(-5 * time.Second)), Interval: durationpb.New(5 * time.Second), Edges: edges,
	}); err != nil {
		t.Fatalf("report: %v", err)
	}
}

// checkGraph asks `rampart stat` and `rampart edges` until client's calls
// to server (requests of them, failed share of them) show, then checks
// what they say.
func checkGraph(t *testing.T, m *mesh, clientWL, serverWL string, clientID, serverID string, requests uint64, success float64) {
	t.Helper()
	cli := rampartCLI(t)
	admin := m.ctrl.AdminAddr()
	var st graph.StatResponse
	eventually(t, 45*time.Second, func() error {
		if err := trafficCLI(t, cli, admin, &st, "stat", "--window", "10m"); err != nil {
			return err
		}
		got := map[string]graph.WorkloadStat{}
		for _, w := range st.Workloads {
			got[w.Name] = w
		}
		if got[serverWL].Inbound.Requests < requests || got[clientWL].Outbound.Requests < requests {
			return fmt.Errorf("waiting for reports of %d requests: %+v", requests, st.Workloads)
		}
		return nil
	})
	for _, w := range st.Workloads {
		var tr graph.Traffic
		switch w.Name {
		case serverWL:
			tr = w.Inbound
		case clientWL:
			tr = w.Outbound
		default:
			continue
		}
		if w.Name == clientWL {
			// The caller's own view may hold more: requests that reached
			// no peer (before its configuration arrived) are its too.
			if tr.Requests < requests {
				t.Errorf("%s: %d requests, want at least %d", w.Name, tr.Requests, requests)
			}
			continue
		}
		if tr.Requests != requests {
			t.Errorf("%s: %d requests, want %d", w.Name, tr.Requests, requests)
		}
		if tr.SuccessRate == nil || math.Abs(*tr.SuccessRate-success) > 0.01 {
			t.Errorf("%s: success rate %v, want %v", w.Name, tr.SuccessRate, success)
		}
		if tr.MTLSShare == nil || *tr.MTLSShare != 1 {
			t.Errorf("%s: mTLS share %v, want 1", w.Name, tr.MTLSShare)
		}
		if tr.LatencyMs == nil || tr.LatencyMs.P99 <= 0 {
			t.Errorf("%s: latency %+v", w.Name, tr.LatencyMs)
		}
	}

	var es graph.EdgesResponse
	if err := trafficCLI(t, cli, admin, &es, "edges", ns+"/"+serverWL, "--window", "10m"); err != nil {
		t.Fatal(err)
	}
	var e graph.EdgeStat
	for _, x := range es.Edges {
		if x.Source.Workload == clientWL && x.Destination.Workload == serverWL {
			e = x
		}
	}
	if e.Source.Workload != clientWL || e.Source.Identity != clientID || e.Destination.Workload != serverWL || e.Destination.Identity != serverID {
		t.Errorf("edge %+v -> %+v, want %s (%s) -> %s (%s)", e.Source, e.Destination, clientWL, clientID, serverWL, serverID)
	}
	if e.ReportedBy != graph.ByBoth || !e.MTLS || !e.Authorized || e.Requests != requests {
		t.Errorf("edge reported by %q, mTLS %v, authorized %v, %d requests; want both, true, true, %d",
			e.ReportedBy, e.MTLS, e.Authorized, e.Requests, requests)
	}
	if e.SuccessRate == nil || math.Abs(*e.SuccessRate-success) > 0.01 {
		t.Errorf("edge success rate %v, want %v", e.SuccessRate, success)
	}

	// The tables (docs/observability.md shows them).
	for _, args := range [][]string{{"stat", "--window", "10m"}, {"edges", ns + "/" + serverWL, "--window", "10m"}} {
		out, err := exec.Command(cli, append(args, "--controller-admin", admin)...).Output()
		if err != nil {
			t.Fatalf("rampart %v: %v", args, err)
		}
		t.Logf("rampart %s\n%s", strings.Join(args, " "), out)
		if !strings.Contains(string(out), "Over the last 10 minutes") || !strings.Contains(string(out), ns+"/"+clientWL) && args[0] == "edges" {
			t.Errorf("rampart %v printed:\n%s", args, out)
		}
	}

	// An unknown workload is an error that says so, not an empty answer.
	if err := trafficCLI(t, cli, admin, &st, "stat", ns+"/nobody"); err == nil || !strings.Contains(err.Error(), "has not reported traffic") {
		t.Errorf("stat of an unknown workload: %v", err)
	}
}

// TestTrafficGraphFromReports drives the graph with reports sent over the
// real control plane by an in-process reporter, and reads it back with the
// CLI: it stands without the proxies' reporter.
func TestTrafficGraphFromReports(t *testing.T) {
	m := newMesh(t, time.Hour, "", withAdmin)
	client := m.fakeReporter("client", "client")
	server := m.fakeReporter("server", "server")
	var lat sketch.Sketch
	for range 40 {
		lat.Observe(0.003)
	}
	for range 3 {
		client.send(t, "client", &meshv1.EdgeSummary{
			Direction: meshv1.Direction_DIRECTION_OUTBOUND, PeerSpiffeId: server.id.String(), PeerWorkload: "server",
			Service: ns + "/web", Mtls: true, Requests: 40, Failures: 10, Latency: latencyPB(&lat),
		})
		server.send(t, "server", &meshv1.EdgeSummary{
			Direction: meshv1.Direction_DIRECTION_INBOUND, PeerSpiffeId: client.id.String(),
			Mtls: true, Requests: 40, Failures: 10, Latency: latencyPB(&lat),
		})
	}
	// A report for a workload the identity did not register ends the
	// stream with PermissionDenied.
	client.send(t, "server")
	if _, err := client.stream.CloseAndRecv(); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("report for another identity's workload: %v", err)
	}
	checkGraph(t, m, "client", "server", client.id.String(), server.id.String(), 120, 0.75)
}

// TestTrafficGraphFromProxies sends traffic with a known failure share
// through real proxies and waits (with a deadline) for their reports to
// show in `rampart stat` and `rampart edges`.
func TestTrafficGraphFromProxies(t *testing.T) {
	app := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/fail") {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})}
	go srv.Serve(app)
	t.Cleanup(func() { srv.Close() })
	m := newMesh(t, time.Hour, fmt.Sprintf(`apiVersion: rampart.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %s}
spec:
  selector: {app: server}
  serviceAccounts: [server]
  ports: [{name: http, port: 80, targetPort: %d, protocol: HTTP}]
`, ns, port(app)), withAdmin)
	server := m.startProxy(proxyOpts{name: "server", labels: map[string]string{"app": "server"}}, true)
	client := m.startProxy(proxyOpts{name: "client", upstreams: []string{"web"}}, true)

	// The first request may race the client's configuration: retry it,
	// then send exactly 100, a fifth of them failing.
	eventually(t, 10*time.Second, func() error {
		code, _, err := get(client.UpstreamAddr(0), "/warm", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("warm-up: %d %v", code, err)
		}
		return nil
	})
	for i := range 100 {
		path := fmt.Sprintf("/ok/%d", i)
		want := 200
		if i%5 == 0 {
			path, want = fmt.Sprintf("/fail/%d", i), 500
		}
		if code, _, err := get(client.UpstreamAddr(0), path, nil); err != nil || code != want {
			t.Fatalf("GET %s: %d %v, want %d", path, code, err, want)
		}
	}
	// The warm-up requests count too: 101 requests, 20 failed.
	checkGraph(t, m, "client", "server", client.ID().String(), server.ID().String(), 101, 81.0/101)
}

func latencyPB(s *sketch.Sketch) *meshv1.LatencySketch {
	counts, sum := s.Encode()
	return &meshv1.LatencySketch{Counts: counts, SumSeconds: sum}
}
