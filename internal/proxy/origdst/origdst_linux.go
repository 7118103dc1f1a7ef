//go:build linux

package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDST is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h,
// which golang.org/x/sys/unix does not define. It has the same value as
// SO_ORIGINAL_DST but is read at level SOL_IPV6.
const ip6tSOOriginalDST = 80

// errNoEntry explains ENOENT, which is what the kernel answers for a
// connection it has no NAT record of.
var errNoEntry = errors.New("the kernel has no redirect record for this connection: was it redirected by iptables (REDIRECT or DNAT) in this network namespace?")

func get(rc syscall.RawConn, v4 bool) (netip.AddrPort, error) {
	var (
		ap   netip.AddrPort
		serr error
	)
	err := rc.Control(func(fd uintptr) {
		if v4 {
			ap, serr = get4(int(fd))
		} else {
			ap, serr = get6(int(fd))
		}
	})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	if serr != nil {
		if errors.Is(serr, unix.ENOENT) {
			return netip.AddrPort{}, fmt.Errorf("origdst: %w (%w)", errNoEntry, serr)
		}
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", serr)
	}
	return ap, nil
}

// get4 reads a struct sockaddr_in (16 bytes). x/sys has no getsockopt for
// arbitrary buffers, so it borrows the one for struct ipv6_mreq (20 bytes):
// the kernel fills the first 16.
func get4(fd int) (netip.AddrPort, error) {
	m, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
	}
	b := m.Multiaddr[:]
	// sin_family is in host byte order, sin_port and sin_addr in network order.
	if fam := binary.NativeEndian.Uint16(b[0:2]); fam != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: address family %d, want AF_INET", fam)
	}
	port := binary.BigEndian.Uint16(b[2:4])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
}

// get6 reads a struct sockaddr_in6 (28 bytes) through the getsockopt for
// struct ip6_mtuinfo, which begins with one.
func get6(fd int) (netip.AddrPort, error) {
	mi, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, ip6tSOOriginalDST)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: %w", err)
	}
	sa := mi.Addr
	if sa.Family != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: address family %d, want AF_INET6", sa.Family)
	}
	// The struct field holds the port's network-order bytes.
	port := binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, sa.Port))
	addr := netip.AddrFrom16(sa.Addr)
	if sa.Scope_id != 0 {
		addr = addr.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
	}
	return netip.AddrPortFrom(addr, port), nil
}
