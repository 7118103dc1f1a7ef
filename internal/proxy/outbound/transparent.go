package outbound

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/origdst"
)

// ReasonNotConfigured is the refusal of a transparent connection that
// arrives before the first configuration.
const ReasonNotConfigured = "not_configured"

// Egress actions counted in rampart_proxy_egress_connections_total.
const (
	EgressPassthrough = "passthrough"
	EgressRefused     = "refused"
)

// transparentTarget finds where a redirected connection was going. A mesh
// destination becomes a target; anything else is passed through or
// refused here, and reported as handled.
func (c *conns) transparentTarget(conn net.Conn) (target, bool) {
	o := c.o
	dst, err := origdst.Get(conn)
	if err != nil {
		// Not redirected by iptables: someone dialled the listener itself.
		o.refuse(ReasonNoDestination)
		o.log.Warn("refused connection: no original destination; the transparent listener only takes redirected connections",
			"remote", conn.RemoteAddr().String(), "err", err)
		conn.Close()
		return nil, false
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if isSelf(dst, conn.LocalAddr()) {
		// A connection to the listener's own address would come straight
		// back here if passed through.
		o.refuse(ReasonLoop)
		o.log.Warn("refused connection: its destination is the proxy's own transparent listener", "destination", dst.String())
		conn.Close()
		return nil, false
	}
	st := o.state.Load()
	if st.byAddr == nil {
		// No configuration yet: nothing says which destinations are the
		// mesh's, nor whether egress is allowed. Passing the connection
		// through would let it skip mTLS; refuse it (fail closed).
		o.refuse(ReasonNotConfigured)
		o.log.Warn("refused connection: no configuration from the controller yet", "destination", dst.String())
		conn.Close()
		return nil, false
	}
	if _, ok := st.byAddr[dst]; ok {
		return addrTarget{o: o, dst: dst}, true
	}
	if st.egress == meshv1.EgressMode_EGRESS_MESH_ONLY {
		o.refuse(ReasonEgressDenied)
		o.cfg.Metrics.Egress.WithLabelValues(EgressRefused).Inc()
		o.log.Info("refused connection outside the mesh (egress mode mesh-only)", "destination", dst.String())
		conn.Close()
		return nil, false
	}
	c.tcp.Add(1)
	go func() {
		defer c.tcp.Done()
		o.passthrough(c, conn, dst)
	}()
	return nil, false
}

// isSelf reports whether dst is the local address the connection was
// accepted on.
func isSelf(dst netip.AddrPort, local net.Addr) bool {
	la, ok := local.(*net.TCPAddr)
	if !ok {
		return false
	}
	return la.AddrPort().Port() == dst.Port() && la.AddrPort().Addr().Unmap() == dst.Addr()
}

// passthrough carries a connection to a destination outside the mesh as
// it is. The proxy's own connections are exempt from redirection, so the
// dial goes out directly.
func (o *Outbound) passthrough(c *conns, conn net.Conn, dst netip.AddrPort) {
	defer conn.Close()
	d := net.Dialer{Timeout: o.cfg.DialTimeout}
	up, err := d.DialContext(c.ctx, "tcp", dst.String())
	if err != nil {
		o.cfg.Metrics.Egress.WithLabelValues(EgressRefused).Inc()
		o.log.Info("destination outside the mesh unreachable", "destination", dst.String(), "err", err)
		return
	}
	defer up.Close()
	o.cfg.Metrics.Egress.WithLabelValues(EgressPassthrough).Inc()
	// The drain deadline cuts what is still open.
	stop := context.AfterFunc(c.ctx, func() { conn.Close(); up.Close() })
	defer stop()
	splice(conn, up)
}

// splice copies both ways until both directions end, half-closing each
// side as its peer finishes sending.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(b, a)
		closeWrite(b)
	}()
	io.Copy(a, b)
	closeWrite(a)
	wg.Wait()
}
