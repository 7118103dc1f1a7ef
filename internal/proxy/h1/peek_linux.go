package h1

import (
	"syscall"
	"unsafe"
)

// peekIdle reports whether an idle socket has nothing to read and is not
// closed: a receive that neither waits nor consumes finds no data.
func peekIdle(fd uintptr) bool {
	var b [1]byte
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno == syscall.EAGAIN && int(n) == -1
}
