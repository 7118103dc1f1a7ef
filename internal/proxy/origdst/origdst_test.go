package origdst

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
)

// wrapped hides a connection's concrete type, as a metrics or logging
// wrapper would.
type wrapped struct{ net.Conn }

func TestGetNeedsASocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for _, c := range []net.Conn{a, wrapped{a}, tls.Server(a, &tls.Config{})} {
		_, err := Get(c)
		if err == nil || !strings.Contains(err.Error(), "SyscallConn") {
			t.Errorf("Get(%T) = %v, want an error naming SyscallConn", c, err)
		}
	}
}
