package proxy

// The request-path benchmark: two real proxies in this process (a client
// side with upstream listeners and a server side with the tunnel
// listener), certificates from an in-process CA, configured directly
// rather than by a controller, and real backends on loopback. Each case
// sends requests from concurrent clients through outbound → mTLS tunnel →
// inbound → app and reports time, allocations and bytes per request (of
// the whole process: clients and backends included, so compare cases
// across changes, not with other benchmarks).
//
//	go test -run '^$' -bench Path -benchtime 20000x ./internal/proxy/ \
//	    -cpuprofile cpu.out -memprofile mem.out

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"

	"github.com/rampart-mesh/rampart/internal/ca"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/outbound"
)

const benchNS = "bench"

// benchPath is a running pair of proxies and the apps behind the server
// side.
type benchPath struct {
	httpAddr, grpcAddr, tcpAddr string        // the client proxy's upstream listeners
	autoAddr                    string        // the client proxy's upstream of the Auto port
	clientID                    string        // the client proxy's SPIFFE ID
	serverLog                   *lockedBuffer // what the server proxy logs, as JSON

	server, client           *Proxy
	h1Port, h2Port, echoPort uint32 // the apps behind the server proxy
	autoPort                 uint32 // an HTTP/1 app on a port declared Auto
	serverConfig             *meshv1.ProxyConfig
	// uriHits counts the requests for /uri/... that reached the HTTP/1
	// app, which answers them with the request target it received.
	uriHits atomic.Int64
	// h1Hits and autoHits count every request that reached the HTTP/1
	// app and the Auto port's app.
	h1Hits, autoHits atomic.Int64
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newBenchPath starts the pair; everything stops when b ends.
func newBenchPath(b testing.TB) *benchPath {
	b.Helper()
	td := spiffeid.RequireTrustDomainFromString("bench.rampart.test")
	authority, err := ca.Open(ca.Config{Dir: b.TempDir(), TrustDomain: td})
	if err != nil {
		b.Fatal(err)
	}

	// Goroutines carry a label naming their part (load, client, server,
	// app), so that a profile splits by part: pprof -tagfocus part=client.
	// Goroutines inherit the label of the goroutine that starts them.
	setPart := func(part string) {
		pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("part", part)))
	}
	setPart("app")
	defer setPart("load")

	bp := &benchPath{}
	// The apps.
	h1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bp.h1Hits.Add(1)
		if strings.HasPrefix(r.RequestURI, "/uri/") {
			bp.uriHits.Add(1)
			io.WriteString(w, r.RequestURI)
			return
		}
		if r.URL.Path == "/headers" {
			echoHeaders(w, r)
			return
		}
		if r.Header.Get("Rampart-Client-Id") == "" {
			http.Error(w, "no caller identity", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost {
			io.Copy(io.Discard, r.Body)
		}
		io.WriteString(w, "hello")
	}))
	b.Cleanup(h1.Close)
	auto := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bp.autoHits.Add(1)
		io.WriteString(w, r.Method+" "+r.Host+" "+r.RequestURI)
	}))
	b.Cleanup(auto.Close)
	h2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/headers" {
			echoHeaders(w, r)
			return
		}
		grpcLikeUnary(w, r)
	}))
	h2.Config.Protocols = new(http.Protocols)
	h2.Config.Protocols.SetUnencryptedHTTP2(true)
	h2.Start()
	b.Cleanup(h2.Close)
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	b.Cleanup(func() { echo.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	bp.serverLog = &lockedBuffer{}
	start := func(sa string, upstreams ...string) *Proxy {
		cfg := Config{
			TrustBundle:  authority.Roots(),
			TrustDomain:  td.Name(),
			Namespace:    benchNS,
			Workload:     sa,
			TunnelListen: "127.0.0.1:0",
			AdminListen:  "127.0.0.1:0",
			DrainTimeout: time.Second,
		}
		if sa == "server" {
			cfg.Logger = slog.New(slog.NewJSONHandler(bp.serverLog, nil))
		}
		for _, u := range upstreams {
			up, err := outbound.ParseUpstream(u + "=127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			cfg.Upstreams = append(cfg.Upstreams, up)
		}
		p, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{p.id.URL()}}, key)
		chain, err := authority.SignCSR(csr, p.id, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.svid.Set(&x509svid.SVID{ID: p.id, Certificates: chain, PrivateKey: key}); err != nil {
			b.Fatal(err)
		}
		// What Run does after bootstrap, minus the controller.
		setPart(sa)
		wg.Add(2)
		go func() { defer wg.Done(); p.serveTunnel(ctx) }()
		go func() { defer wg.Done(); p.outbound.Run(ctx) }()
		setPart("app")
		b.Cleanup(func() { p.dialer.Close(); p.admin.Close() })
		return p
	}
	server := start("server")
	client := start("client", "orders:http", "orders:grpc", "orders:tcp", "orders:auto")

	port := func(addr string) uint32 {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return uint32(n)
	}
	h1Port, h2Port, echoPort := port(h1.Listener.Addr().String()), port(h2.Listener.Addr().String()), port(echo.Addr().String())
	autoPort := port(auto.Listener.Addr().String())
	serverConfig := &meshv1.ProxyConfig{
		Version: "1", SpiffeId: server.id.String(),
		Inbound: []*meshv1.InboundPort{
			{Port: h1Port, Protocol: meshv1.Protocol_PROTOCOL_HTTP},
			{Port: h2Port, Protocol: meshv1.Protocol_PROTOCOL_HTTP2},
			{Port: echoPort, Protocol: meshv1.Protocol_PROTOCOL_TCP},
			{Port: autoPort, Protocol: meshv1.Protocol_PROTOCOL_AUTO},
		},
		// The mesh's default: strict mTLS, any mesh identity allowed.
		Authorization: &meshv1.WorkloadPolicy{
			Namespace:            benchNS,
			DefaultAuthorization: meshv1.DefaultAuthorization_DEFAULT_AUTHORIZATION_ALLOW_AUTHENTICATED,
			Tls:                  &meshv1.TLSPolicy{Mode: meshv1.TLSMode_TLS_MODE_STRICT},
		},
	}
	if err := server.apply(serverConfig); err != nil {
		b.Fatal(err)
	}
	if err := client.apply(&meshv1.ProxyConfig{
		Version: "1", SpiffeId: client.id.String(),
		Services: []*meshv1.Service{{
			Name: "orders", Namespace: benchNS,
			Ports: []*meshv1.ServicePort{
				{Name: "http", Port: 80, TargetPort: h1Port, Protocol: meshv1.Protocol_PROTOCOL_HTTP},
				{Name: "grpc", Port: 50051, TargetPort: h2Port, Protocol: meshv1.Protocol_PROTOCOL_HTTP2},
				{Name: "tcp", Port: 7, TargetPort: echoPort, Protocol: meshv1.Protocol_PROTOCOL_TCP},
				{Name: "auto", Port: 8080, TargetPort: autoPort, Protocol: meshv1.Protocol_PROTOCOL_AUTO},
			},
			Endpoints: []*meshv1.Endpoint{{Address: server.TunnelAddr(), SpiffeId: server.id.String(), Workload: "server"}},
		}},
	}); err != nil {
		b.Fatal(err)
	}
	bp.httpAddr, bp.grpcAddr, bp.tcpAddr = client.UpstreamAddr(0), client.UpstreamAddr(1), client.UpstreamAddr(2)
	bp.autoAddr, bp.autoPort = client.UpstreamAddr(3), autoPort
	bp.clientID, bp.server, bp.client = client.id.String(), server, client
	bp.h1Port, bp.h2Port, bp.echoPort, bp.serverConfig = h1Port, h2Port, echoPort, serverConfig
	return bp
}

// echoHeaders answers with the request's protocol and the header fields
// that the mesh sets or strips, one per line, sorted.
func echoHeaders(w http.ResponseWriter, r *http.Request) {
	var lines []string
	for k, v := range r.Header {
		if strings.HasPrefix(k, "Rampart-") || strings.HasPrefix(k, "X-") || k == "Connection" {
			lines = append(lines, k+": "+strings.Join(v, ","))
		}
	}
	sort.Strings(lines)
	fmt.Fprintf(w, "%s\n%s", r.Proto, strings.Join(lines, "\n"))
}

// grpcLikeUnary answers a gRPC unary call without gRPC: it echoes the
// request's length-prefixed message and ends with grpc-status 0.
func grpcLikeUnary(w http.ResponseWriter, r *http.Request) {
	msg, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Trailer", "Grpc-Status, Grpc-Message")
	w.WriteHeader(http.StatusOK)
	w.Write(msg)
	h.Set("Grpc-Status", "0")
	h.Set("Grpc-Message", "")
}

// TestPathHeaders checks, through the path the benchmark measures (the
// lean HTTP/1 server and client, and h2c), what the app is told: the
// caller's identity as mTLS proved it, whatever the calling app claimed,
// and none of the tunnel's own fields or the client's forwarding and
// hop-by-hop fields.
func TestPathHeaders(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	forged := map[string]string{
		"Rampart-Client-Id":    "spiffe://evil/ns/x/sa/y",
		"Rampart-Target-Port":  "1",
		"Rampart-App-Protocol": "h2c",
		// Lookalikes that CGI-style apps read as the real fields.
		"Rampart_Client_Id":   "spiffe://evil/ns/x/sa/z",
		"Rampart_target_port": "2",
		"X-Forwarded-For":     "10.0.0.1",
		"X-Hop":               "dropped",
		"X-Kept":              "yes",
	}
	want := "Rampart-Client-Id: " + p.clientID + "\nX-Kept: yes"
	for _, tc := range []struct {
		name  string
		addr  string
		proto string
		rt    http.RoundTripper
	}{
		{"HTTP/1.1", p.httpAddr, "HTTP/1.1", &http.Transport{}},
		{"h2c", p.grpcAddr, "HTTP/2.0", newGRPCLikeTransport(p.grpcAddr)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+tc.addr+"/headers", nil)
			for k, v := range forged {
				req.Header.Set(k, v)
			}
			if tc.proto == "HTTP/1.1" {
				req.Header.Set("Connection", "X-Hop")
			} else {
				delete(req.Header, "X-Hop") // no connection options in HTTP/2
			}
			res, err := tc.rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if got, wantAll := string(b), tc.proto+"\n"+want; res.StatusCode != http.StatusOK || got != wantAll {
				t.Fatalf("status %d, the app saw\n%s\nwant\n%s", res.StatusCode, got, wantAll)
			}
		})
	}
}

// BenchmarkPath measures the request path, one case per traffic kind, with
// 1 and 10 concurrent clients (as wrk -c).
func BenchmarkPath(b *testing.B) {
	if testing.Short() {
		b.Skip("starts two proxies")
	}
	p := newBenchPath(b)
	post := bytes.Repeat([]byte("x"), 4096)
	cases := []struct {
		name string
		// client returns one client's request function; all state a
		// client needs (its connection) is its own.
		client func(b *testing.B) (do func() error, done func())
	}{
		{"http1-get", func(b *testing.B) (func() error, func()) {
			return newHTTP1Client(b, p.httpAddr, "GET / HTTP/1.1\r\nHost: orders\r\n\r\n", nil)
		}},
		{"http1-post-4k", func(b *testing.B) (func() error, func()) {
			return newHTTP1Client(b, p.httpAddr, "POST /upload HTTP/1.1\r\nHost: orders\r\nContent-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n", post)
		}},
		{"h2c-grpc-unary", nil}, // clients share one connection, as gRPC's do
		{"tcp-echo", func(b *testing.B) (func() error, func()) {
			return newEchoClient(b, p.tcpAddr, 64)
		}},
	}
	for _, tc := range cases {
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/c=%d", tc.name, n), func(b *testing.B) {
				newClient := tc.client
				if newClient == nil {
					t := newGRPCLikeTransport(p.grpcAddr)
					defer t.CloseIdleConnections()
					newClient = func(b *testing.B) (func() error, func()) {
						return grpcLikeClient(t, p.grpcAddr), func() {}
					}
				}
				runClients(b, n, newClient)
			})
		}
	}
}

// runClients runs b.N requests spread over n concurrent clients, each
// warmed up by one request before the clock starts.
func runClients(b *testing.B, n int, newClient func(*testing.B) (func() error, func())) {
	dos := make([]func() error, n)
	for i := range n {
		do, done := newClient(b)
		defer done()
		if err := do(); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
		dos[i] = do
	}
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
	)
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	for _, do := range dos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := do(); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	// CPU time of the whole process (clients and apps included) per
	// request: steadier than ns/op on a machine shared with other work.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	if err := firstErr.Load(); err != nil {
		b.Fatal(*err)
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// newHTTP1Client is a lean HTTP/1.1 keep-alive client on one connection:
// it writes a fixed request and reads the response, so that the profile
// shows the proxy rather than the client.
func newHTTP1Client(b *testing.B, addr, head string, body []byte) (func() error, func()) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	req := append([]byte(head), body...)
	br := bufio.NewReaderSize(conn, 4096)
	do := func() error {
		if _, err := conn.Write(req); err != nil {
			return err
		}
		return readHTTP1Response(br)
	}
	return do, func() { conn.Close() }
}

// readHTTP1Response reads one response, which must be 200, and discards its
// body (Content-Length or chunked).
func readHTTP1Response(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("response %q", bytes.TrimSpace(line))
	}
	length, chunked := -1, false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(v))
		case bytes.EqualFold(k, []byte("Transfer-Encoding")) && bytes.EqualFold(v, []byte("chunked")):
			chunked = true
		}
	}
	if !chunked {
		if length < 0 {
			return errors.New("response without length")
		}
		_, err := br.Discard(length)
		return err
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, err := strconv.ParseUint(string(bytes.TrimRight(line, "\r\n")), 16, 32)
		if err != nil {
			return fmt.Errorf("chunk size %q", line)
		}
		if _, err := br.Discard(int(size) + 2); err != nil {
			return err
		}
		if size == 0 {
			return nil
		}
	}
}

// newEchoClient holds one opaque connection and sends size bytes per
// round trip.
func newEchoClient(b *testing.B, addr string, size int) (func() error, func()) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	out, in := bytes.Repeat([]byte("e"), size), make([]byte, size)
	do := func() error {
		if _, err := conn.Write(out); err != nil {
			return err
		}
		_, err := io.ReadFull(conn, in)
		return err
	}
	return do, func() { conn.Close() }
}

// newGRPCLikeTransport speaks h2c with prior knowledge, as gRPC clients do.
func newGRPCLikeTransport(addr string) *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// grpcLikeClient sends one unary call: a 5-byte gRPC frame header and a
// small message, and checks the echo and grpc-status.
func grpcLikeClient(t *http2.Transport, addr string) func() error {
	msg := make([]byte, 5+32)
	binary.BigEndian.PutUint32(msg[1:5], 32)
	u := &url.URL{Scheme: "http", Host: addr, Path: "/bench.Echo/Unary"}
	buf := make([]byte, 0, 64)
	return func() error {
		req := &http.Request{
			Method: http.MethodPost, URL: u, Host: "orders", Proto: "HTTP/2.0", ProtoMajor: 2,
			Header: http.Header{
				"Content-Type": {"application/grpc"},
				"Te":           {"trailers"},
			},
			Body:          io.NopCloser(bytes.NewReader(msg)),
			ContentLength: int64(len(msg)),
		}
		resp, err := t.RoundTrip(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		buf = buf[:0]
		for {
			n, err := resp.Body.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if len(buf) == cap(buf) {
				return errors.New("response too long")
			}
		}
		if resp.StatusCode != http.StatusOK || len(buf) != len(msg) || resp.Trailer.Get("Grpc-Status") != "0" {
			return fmt.Errorf("status %d, %d bytes, grpc-status %q", resp.StatusCode, len(buf), resp.Trailer.Get("Grpc-Status"))
		}
		return nil
	}
}

// TestPathRefusesConnectFromApp: an app's CONNECT would name any opaque
// port of the peer; the outbound side answers 405 instead.
func TestPathRefusesConnectFromApp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two proxies")
	}
	p := newBenchPath(t)
	conn, err := net.Dial("tcp", p.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("CONNECT from the app: %s, want 405", res.Status)
	}
}
