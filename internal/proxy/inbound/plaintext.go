package inbound

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/rampart-mesh/rampart/internal/authz"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/accept"
	"github.com/rampart-mesh/rampart/internal/proxy/h1"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
	"github.com/rampart-mesh/rampart/internal/proxy/telemetry"
	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
)

// Actions counted for plaintext connections.
const (
	// PlaintextRefused: closed, under strict mTLS or for lack of room.
	PlaintextRefused = "refused"
	// PlaintextAccepted: served, on a PERMISSIVE port.
	PlaintextAccepted = "accepted"
)

// plaintextDetectTimeout bounds how long a refused plaintext connection is
// read from to name its protocol in metrics.
const plaintextDetectTimeout = 200 * time.Millisecond

// plaintextIdleTimeout bounds how long an accepted plaintext connection
// may wait between requests, holding one of the MaxPlaintextConns slots.
const plaintextIdleTimeout = 30 * time.Second

// maxPlaintextRefusals bounds the plaintext connections being classified
// for refusal at once.
const maxPlaintextRefusals = 256

// ServePlaintext accepts, on l, the connections that iptables redirected
// to the workload from outside the tunnel, until ctx ends; then it lets
// the connections it serves finish for up to DrainTimeout.
//
// A connection whose original destination is a declared app port that the
// policy makes PERMISSIVE is accepted (at most MaxPlaintextConns at once)
// and served as the tunnel serves peers, without an identity: HTTP/1.x and
// h2c request by request, each authorized and forwarded to the app; on a
// TCP port, any bytes as one opaque stream, authorized once (an HTTP or
// Auto port takes only HTTP, so that nothing skips per-request
// authorization). A request refused by policy closes its connection after
// the answer. Every other connection is
// refused under strict mTLS: it is classified by its first bytes for the
// metrics, logged at debug level and closed.
func (h *Handler) ServePlaintext(ctx context.Context, l net.Listener) error {
	ps := h.newPlainServer(l.Addr())
	var refusals sync.WaitGroup
	// Refusing takes a moment (classifying the first bytes); bound how
	// many run at once so that a flood costs a bounded number of
	// goroutines. Beyond that, connections are closed unclassified.
	refusing := make(chan struct{}, maxPlaintextRefusals)
	serving := make(chan struct{}, h.cfg.MaxPlaintextConns)
	err := accept.Loop(ctx, l, func(conn net.Conn) {
		dst, derr := h.cfg.OriginalDst(conn)
		st := h.state.Load()
		var app *appPort
		if derr == nil {
			if a, ok := st.port(uint64(dst.Port())); ok {
				if st.policy.Engine.TLSMode(a.port) == authz.TLSPermissive {
					app = a
				} else {
					h.plaintextOnStrict(remoteIP(conn.RemoteAddr().String()), dst.Port())
				}
			}
		}
		if app == nil {
			select {
			case refusing <- struct{}{}:
			default:
				h.cfg.Metrics.Plaintext.WithLabelValues("unclassified", PlaintextRefused).Inc()
				conn.Close()
				return
			}
			refusals.Add(1)
			go func() {
				defer func() { <-refusing; refusals.Done() }()
				h.refusePlaintext(conn, dst, derr)
			}()
			return
		}
		select {
		case serving <- struct{}{}:
		default:
			h.cfg.Metrics.Plaintext.WithLabelValues("unclassified", PlaintextRefused).Inc()
			if ok, suppressed := h.plainLog.allow(time.Now()); ok {
				h.log.Warn("refused plaintext connection: too many plaintext connections at once",
					"direction", metrics.Inbound, "remote", conn.RemoteAddr().String(), "limit", h.cfg.MaxPlaintextConns,
					"suppressed_since_last", suppressed)
			}
			conn.Close()
			return
		}
		ps.dispatching.Add(1)
		go ps.dispatch(&plainConn{Conn: conn, port: app.port, ip: remoteIP(conn.RemoteAddr().String()), release: func() { <-serving }})
	})
	ps.drain(ctx)
	refusals.Wait()
	if err != nil {
		return fmt.Errorf("inbound: plaintext listener: %w", err)
	}
	return nil
}

func (h *Handler) refusePlaintext(conn net.Conn, dst netip.AddrPort, derr error) {
	defer conn.Close()
	d := "unknown"
	if derr == nil {
		d = dst.String()
	}
	proto, _, err := sniff.Detect(conn, plaintextDetectTimeout)
	name := proto.String()
	if err != nil {
		name = "none"
	}
	h.cfg.Metrics.Plaintext.WithLabelValues(name, PlaintextRefused).Inc()
	h.log.Debug("refused plaintext connection: the workload requires mTLS",
		"direction", metrics.Inbound, "remote", conn.RemoteAddr().String(), "destination", d, "protocol", name)
}

// plaintextOnStrict counts, in the telemetry report's security counts, a
// plaintext connection or request from ip refused because the app port
// port requires mTLS.
func (h *Handler) plaintextOnStrict(ip netip.Addr, port uint16) {
	peer := ""
	if ip.IsValid() {
		peer = ip.Unmap().WithZone("").String()
	}
	h.cfg.Metrics.Telemetry().Security(telemetry.Security{
		Kind:   meshv1.SecurityKind_SECURITY_KIND_PLAINTEXT_ON_STRICT,
		PeerIP: peer,
		Port:   uint32(port),
	})
}

// plainConn is an accepted plaintext connection, with what its requests
// are authorized with. Closing it frees its slot.
type plainConn struct {
	net.Conn
	port    uint16     // the app port it was going to
	ip      netip.Addr // the client's address
	h2c     bool       // it speaks h2c: an Auto port's app is spoken to in h2c too
	release func()
	once    sync.Once
}

func (c *plainConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

type plainConnKey struct{}

// plainServer serves the accepted plaintext connections of one
// ServePlaintext.
type plainServer struct {
	h           *Handler
	h1          *h1.Server           // HTTP/1.x
	h2          *http.Server         // h2c, from the connections pushed to h2l
	h2l         *accept.ChanListener //
	h2done      chan struct{}        // h2 stopped serving
	tcpCtx      context.Context
	cancelTCP   context.CancelFunc
	dispatching sync.WaitGroup // connections being classified
	h1conns     sync.WaitGroup
	tcp         sync.WaitGroup
}

func (h *Handler) newPlainServer(addr net.Addr) *plainServer {
	ps := &plainServer{h: h, h2l: accept.NewChanListener(addr), h2done: make(chan struct{})}
	handler := plainHandler{h}
	ps.h1 = &h1.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       plaintextIdleTimeout,
		Logger:            h.log,
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	ps.h2 = &http.Server{
		Handler:   handler,
		Protocols: &protos,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*plainConn); ok {
				return context.WithValue(ctx, plainConnKey{}, pc)
			}
			return ctx
		},
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       plaintextIdleTimeout,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
	}
	ps.tcpCtx, ps.cancelTCP = context.WithCancel(context.Background())
	go func() {
		defer close(ps.h2done)
		ps.h2.Serve(ps.h2l) //nolint:errcheck // always ErrServerClosed after Shutdown
	}()
	return ps
}

// dispatch classifies an accepted connection by its port's protocol,
// detecting it unless the port is TCP, and serves it.
func (ps *plainServer) dispatch(pc *plainConn) {
	h := ps.h
	st := h.state.Load()
	app, ok := st.port(uint64(pc.port))
	if !ok {
		// The port went away since accepting.
		ps.dispatching.Done()
		h.cfg.Metrics.Plaintext.WithLabelValues("unclassified", PlaintextRefused).Inc()
		h.cfg.Metrics.Refusals.WithLabelValues(metrics.Inbound, ReasonPortNotAllowed).Inc()
		h.log.Info("refused plaintext connection to an undeclared port", "direction", metrics.Inbound,
			"remote", pc.RemoteAddr().String(), "target_port", pc.port)
		pc.Close()
		return
	}
	proto := sniff.Opaque
	if app.proto != meshv1.Protocol_PROTOCOL_TCP {
		p, conn, err := sniff.Detect(pc.Conn, h.cfg.DetectTimeout)
		if err != nil {
			ps.dispatching.Done()
			h.cfg.Metrics.Plaintext.WithLabelValues("none", PlaintextAccepted).Inc()
			pc.Close()
			return
		}
		proto, pc.Conn = p, conn
	}
	if app.proto != meshv1.Protocol_PROTOCOL_TCP && proto != sniff.HTTP1 && proto != sniff.HTTP2 {
		// An opaque stream would skip per-request authorization: only a
		// TCP port takes one. On an Auto port, bytes that are not HTTP
		// could still be HTTP to the app (an HTTP/0.9 line, a request
		// started too slowly to classify).
		ps.dispatching.Done()
		h.cfg.Metrics.Plaintext.WithLabelValues(proto.String(), PlaintextRefused).Inc()
		h.cfg.Metrics.Refusals.WithLabelValues(metrics.Inbound, ReasonProtocolMismatch).Inc()
		if ok, suppressed := h.plainLog.allow(time.Now()); ok {
			h.log.Info("refused plaintext connection: the port takes only HTTP in plain text", "direction", metrics.Inbound,
				"remote", pc.RemoteAddr().String(), "target_port", pc.port, "protocol", proto.String(),
				"suppressed_since_last", suppressed)
		}
		pc.Close()
		return
	}
	h.cfg.Metrics.Plaintext.WithLabelValues(proto.String(), PlaintextAccepted).Inc()
	switch proto {
	case sniff.HTTP1:
		ps.h1conns.Add(1)
		ps.dispatching.Done()
		defer ps.h1conns.Done()
		ps.h1.ServeConn(context.WithValue(context.Background(), plainConnKey{}, pc), pc, nil)
	case sniff.HTTP2:
		pc.h2c = true
		ps.h2l.Push(pc)
		ps.dispatching.Done()
	default:
		ps.tcp.Add(1)
		ps.dispatching.Done()
		defer ps.tcp.Done()
		h.servePlainTCP(ps.tcpCtx, pc, st, app)
	}
}

// drain stops the servers once accepting has stopped: connections in
// flight have DrainTimeout to finish, then what is left is cut.
func (ps *plainServer) drain(ctx context.Context) {
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ps.h.cfg.DrainTimeout)
	defer cancel()
	// Connections still being classified finish dispatching first, so
	// that none reaches a server after it shut down.
	ps.dispatching.Wait()
	ps.h2l.Close()
	h1Done := make(chan struct{})
	go func() {
		defer close(h1Done)
		ps.h1.Shutdown(drainCtx) //nolint:errcheck // past the deadline it cuts what is left
		ps.h1conns.Wait()
	}()
	if err := ps.h2.Shutdown(drainCtx); err != nil {
		ps.h2.Close()
	}
	<-h1Done
	done := make(chan struct{})
	go func() { ps.tcp.Wait(); close(done) }()
	select {
	case <-done:
	case <-drainCtx.Done():
		ps.cancelTCP()
		<-done
	}
	ps.cancelTCP()
	<-ps.h2done
}

// plainHandler serves the HTTP requests of accepted plaintext
// connections.
type plainHandler struct{ h *Handler }

func (p plainHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := p.h
	pc, ok := r.Context().Value(plainConnKey{}).(*plainConn)
	if !ok {
		// Unreachable: every connection served carries one.
		h.refuse(w, http.StatusForbidden, ReasonPortNotAllowed, "no destination port")
		return
	}
	st := h.state.Load()
	app, ok := st.port(uint64(pc.port))
	if !ok {
		h.log.Info("refused plaintext request to an undeclared port", "direction", metrics.Inbound,
			"remote", r.RemoteAddr, "target_port", pc.port)
		h.refuse(w, http.StatusForbidden, ReasonPortNotAllowed, "target port is not served by this workload")
		return
	}
	var rt http.RoundTripper
	switch app.proto {
	case meshv1.Protocol_PROTOCOL_HTTP:
		rt = h.http1
	case meshv1.Protocol_PROTOCOL_HTTP2:
		rt = h.http2
	case meshv1.Protocol_PROTOCOL_AUTO:
		rt = h.http1
		if pc.h2c {
			rt = h.http2
		}
	default:
		h.refuse(w, http.StatusForbidden, ReasonProtocolMismatch, "target port does not speak HTTP")
		return
	}
	// The policy decides with Authenticated false: on a port made STRICT
	// since the connection was accepted, the request is denied.
	src := &peer{ip: pc.ip}
	start := time.Now()
	code := 0
	if h.cfg.Tracer != nil || h.cfg.AccessLog != nil {
		span := h.cfg.Tracer.Start(r, tracing.Unverified)
		defer func() { h.observed(r, w.Header(), src, start, span, code) }()
	}
	code = h.serveRequest(w, r, st, app, rt, src)
	app.seriesOf(h.cfg.Metrics, "").ObserveHTTP(r, w.Header(), code, time.Since(start).Seconds())
}

// servePlainTCP authorizes an opaque plaintext connection, without an
// identity, and carries it to the app until either side ends or ctx does.
func (h *Handler) servePlainTCP(ctx context.Context, conn *plainConn, st *state, app *appPort) {
	defer conn.Close()
	req := authz.Request{SourceIP: conn.ip, Port: app.port, Protocol: authz.ProtocolTCP, Time: time.Now()}
	if v := h.check(st, &req); v.status != 0 {
		return // logged and counted; a stream has no answer but closing
	}
	appConn, err := net.DialTimeout("tcp", app.addr, h.cfg.DialTimeout)
	if err != nil {
		h.cfg.Metrics.Refusals.WithLabelValues(metrics.Inbound, ReasonAppUnavailable).Inc()
		h.log.Warn("app unreachable", "target_port", app.port, "err", err)
		return
	}
	defer appConn.Close()
	stop := context.AfterFunc(ctx, func() {
		conn.Close()
		appConn.Close()
	})
	defer stop()
	h.cfg.Metrics.StreamOpened(app.edge(""))
	var wg sync.WaitGroup
	var received int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		received, _ = io.Copy(appConn, conn.Conn) // conn.Conn: its WriteTo replays the peeked bytes
		closeWrite(appConn)
	}()
	sent, _ := io.Copy(conn.Conn, appConn)
	closeWrite(conn.Conn)
	wg.Wait()
	h.cfg.Metrics.StreamClosed(app.edge(""), sent, received)
}
