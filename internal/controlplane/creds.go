package controlplane

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"

	"github.com/rampart-mesh/rampart/internal/attest"
)

// ServerCredentials returns the transport credentials of the controller's
// gRPC server: TLS with cfg on every listener and, on a connection to a
// Unix socket, the process at the other end captured from the kernel
// (attest.CaptureUnixPeer) before the TLS handshake starts, so that
// Certify can attest it. Serve the TCP and the Unix listener with one
// grpc.Server built with these credentials.
func ServerCredentials(cfg *tls.Config) credentials.TransportCredentials {
	return &serverCreds{TransportCredentials: credentials.NewTLS(cfg)}
}

type serverCreds struct {
	credentials.TransportCredentials
}

func (c *serverCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := raw.(*net.UnixConn)
	if !ok {
		return c.TransportCredentials.ServerHandshake(raw)
	}
	// First, before the peer can do anything more: the process that
	// connected, pinned.
	peer := attest.CaptureUnixPeer(uc)
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		peer.Close()
		return nil, nil, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok {
		peer.Close()
		conn.Close()
		return nil, nil, errors.New("controlplane: TLS handshake returned no TLS information")
	}
	return &unixConn{Conn: conn, peer: peer}, unixAuthInfo{TLSInfo: tlsInfo, peer: peer}, nil
}

func (c *serverCreds) Clone() credentials.TransportCredentials {
	return &serverCreds{TransportCredentials: c.TransportCredentials.Clone()}
}

// unixAuthInfo is the TLS information of a Unix-socket connection and the
// process at its other end.
type unixAuthInfo struct {
	credentials.TLSInfo
	peer *attest.UnixPeer
}

// unixConn releases the handles that pin the peer process when the
// connection closes.
type unixConn struct {
	net.Conn
	peer *attest.UnixPeer
	once sync.Once
	err  error
}

func (c *unixConn) Close() error {
	c.once.Do(func() {
		c.err = errors.Join(c.Conn.Close(), c.peer.Close())
	})
	return c.err
}
