// Package origdst recovers where a client meant to connect before iptables
// redirected its TCP connection to the proxy: the SO_ORIGINAL_DST socket
// option on Linux (IP6T_SO_ORIGINAL_DST for IPv6). It is a leaf: it depends
// only on the standard library and golang.org/x/sys, never on the rest of
// Rampart.
package origdst

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// syscallConner is what Get needs from a connection: *net.TCPConn has it,
// and a wrapper can expose its underlying connection's.
type syscallConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// netConner is implemented by wrappers such as *tls.Conn.
type netConner interface {
	NetConn() net.Conn
}

// Get returns the destination that the client originally dialed for a TCP
// connection that the kernel redirected (iptables REDIRECT or DNAT) to this
// process. c must be a *net.TCPConn or any connection with a
// SyscallConn() (syscall.RawConn, error) method; wrappers with a
// NetConn() net.Conn method (such as *tls.Conn) are unwrapped.
//
// Get reads the socket option through RawConn.Control: it neither
// duplicates the descriptor nor changes its blocking mode. For a connection
// that was not redirected but whose network namespace tracks connections,
// the result is the connection's own local address.
func Get(c net.Conn) (netip.AddrPort, error) {
	for c != nil {
		if sc, ok := c.(syscallConner); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
			}
			return get(rc, isIPv4(c.LocalAddr()))
		}
		nc, ok := c.(netConner)
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	return netip.AddrPort{}, fmt.Errorf("origdst: %T has no socket: pass the accepted *net.TCPConn, or give the wrapper a SyscallConn() (syscall.RawConn, error) method", c)
}

// isIPv4 reports whether a connection's local address is IPv4, including an
// IPv4 connection accepted on a dual-stack IPv6 socket (::ffff:a.b.c.d):
// the kernel tracks those as IPv4, so the IPv4 option applies.
func isIPv4(a net.Addr) bool {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.To4() != nil
	}
	if a == nil {
		return true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return err != nil || ap.Addr().Unmap().Is4()
}
