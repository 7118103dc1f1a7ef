package outbound

import (
	"net"
	"net/netip"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/proxy/egress"
	"github.com/rampart-mesh/rampart/internal/proxy/origdst"
)

// ReasonNotConfigured is the refusal of a transparent connection that
// arrives before the first configuration.
const ReasonNotConfigured = "not_configured"

// transparentTarget finds where a redirected connection was going. A mesh
// destination becomes a target; anything else is egress, passed through
// or refused as the egress mode and allow-list say (egress.go), and
// reported as handled.
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
		o.refuseEgress(conn, dst, egress.Hello{}, nil, "egress mode mesh-only")
		conn.Close()
		return nil, false
	}
	c.tcp.Add(1)
	go func() {
		defer c.tcp.Done()
		o.serveEgress(c, conn, dst, st)
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
