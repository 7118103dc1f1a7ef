//go:build !linux

package attest

import "net"

type peerSys struct{}

func (peerSys) close() error { return nil }

// CaptureUnixPeer is Linux-only: elsewhere the peer it returns always
// refuses (peer_unreadable).
func CaptureUnixPeer(*net.UnixConn) *UnixPeer {
	return &UnixPeer{err: refuse(ReasonPeerUnreadable, "Unix-socket attestation needs Linux", nil), closed: true}
}

// CaptureApp is Linux-only: elsewhere the app it returns always refuses
// (peer_unreadable).
func (p *UnixPeer) CaptureApp(uint32) *UnixPeer {
	return &UnixPeer{parent: p, err: refuse(ReasonPeerUnreadable, "Unix-socket attestation needs Linux", nil), closed: true}
}

func (p *UnixPeer) measure(int64) (string, error) { return "", p.err }

func (p *UnixPeer) signature() ([]byte, error) { return nil, p.err }
