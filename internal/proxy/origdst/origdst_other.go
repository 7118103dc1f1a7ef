//go:build !linux

package origdst

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
)

func get(syscall.RawConn, bool) (netip.AddrPort, error) {
	return netip.AddrPort{}, fmt.Errorf("origdst: transparent interception (SO_ORIGINAL_DST) needs Linux, this is %s: run the proxy with explicit --upstream listeners instead: %w", runtime.GOOS, errors.ErrUnsupported)
}
