package egress

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
)

// Hello is what the first bytes of a connection say about its
// destination.
type Hello struct {
	// Protocol is what the bytes speak (sniff.Classify's answer).
	Protocol sniff.Protocol
	// Name is the destination host they name, lower case without a port:
	// the TLS server name, the HTTP/1 Host or the HTTP/2 :authority; ""
	// when they name none, or not in a form that can be trusted.
	// An IP literal is given in canonical form.
	Name string
}

// NameOf reads the destination name from the first bytes of a
// connection. complete is false while b is too short to tell.
func NameOf(b []byte) (h Hello, complete bool) {
	p, done := sniff.Classify(b)
	if !done {
		if len(b) >= sniff.MaxHello {
			return Hello{}, true
		}
		return Hello{}, false
	}
	h.Protocol = p
	var err error
	switch p {
	case sniff.TLS:
		h.Name, err = sniff.ServerName(b)
	case sniff.HTTP1:
		h.Name, err = sniff.HTTPHost(b)
	case sniff.HTTP2:
		h.Name, err = h2Authority(b)
	default:
		return h, true
	}
	if errors.Is(err, sniff.ErrIncomplete) {
		return Hello{}, false
	}
	if err != nil {
		h.Name = ""
	}
	h.Name = canonicalName(h.Name)
	return h, true
}

// canonicalName returns s when it is a DNS name in canonical form (lower
// case, no trailing dot, every label valid, the last not numeric), s as an
// IP address in canonical form when it is a literal one without a zone,
// and "" otherwise: the parsers accept the bytes a name may hold, in any
// order, and nothing else may become a name.
func canonicalName(s string) string {
	if s == "" || validName(s) {
		return s
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.String()
	}
	return ""
}

// Peek reads from c until NameOf decides, sniff.MaxHello bytes were read,
// the client stops sending, or timeout passes (timeout <= 0: no limit but
// c's own), and returns what it read, which the caller must send on
// before anything else c sends. An error is returned only when nothing
// could be read.
func Peek(c net.Conn, timeout time.Duration) (Hello, []byte, error) {
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return Hello{}, nil, fmt.Errorf("egress: set read deadline: %w", err)
		}
		defer c.SetReadDeadline(time.Time{}) //nolint:errcheck // a closed conn reports on its next read
	}
	buf := make([]byte, 0, 2048)
	for empty := 0; ; {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), sniff.MaxHello+5-len(buf)))...)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		h, done := NameOf(buf)
		if done || len(buf) >= sniff.MaxHello+5 {
			return h, buf, nil
		}
		if err != nil {
			if len(buf) == 0 && !errors.Is(err, os.ErrDeadlineExceeded) {
				return Hello{}, nil, fmt.Errorf("egress: read: %w", err)
			}
			// Timed out or closed with bytes read: they name nothing.
			p, _ := sniff.Classify(buf)
			return Hello{Protocol: p}, buf, nil
		}
		if n == 0 {
			if empty++; empty >= 100 {
				return Hello{}, buf, io.ErrNoProgress
			}
		}
	}
}

// HTTP/2 framing (RFC 9113, section 4.1).
const (
	h2Preface      = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2FrameHeaders = 0x1
	h2FrameCont    = 0x9
	h2FlagEndHdrs  = 0x4
	h2FlagPadded   = 0x8
	h2FlagPriority = 0x20
)

var errH2 = errors.New("egress: malformed HTTP/2 request head")

// h2Authority returns the :authority (or Host) of the first request an
// HTTP/2 client sends after the preface, without a port, in lower case.
// Frames before the first HEADERS (SETTINGS, WINDOW_UPDATE) are skipped.
func h2Authority(b []byte) (string, error) {
	if len(b) < len(h2Preface) {
		return "", sniff.ErrIncomplete
	}
	b = b[len(h2Preface):]
	var block []byte
	stream := uint32(0)
	for {
		if len(b) < 9 {
			return "", sniff.ErrIncomplete
		}
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		typ, flags := b[3], b[4]
		id := (uint32(b[5])<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8])) & 0x7fffffff
		if n > sniff.MaxHello {
			return "", errH2
		}
		if len(b) < 9+n {
			return "", sniff.ErrIncomplete
		}
		payload := b[9 : 9+n]
		b = b[9+n:]
		switch {
		case stream == 0 && typ == h2FrameHeaders:
			if id == 0 {
				return "", errH2
			}
			stream = id
			if flags&h2FlagPadded != 0 {
				if len(payload) < 1 || int(payload[0]) > len(payload)-1 {
					return "", errH2
				}
				payload = payload[1 : len(payload)-int(payload[0])]
			}
			if flags&h2FlagPriority != 0 {
				if len(payload) < 5 {
					return "", errH2
				}
				payload = payload[5:]
			}
		case stream == 0:
			continue // SETTINGS, WINDOW_UPDATE, PRIORITY...
		case typ != h2FrameCont || id != stream:
			return "", errH2 // a header block is contiguous
		}
		block = append(block, payload...)
		if flags&h2FlagEndHdrs != 0 {
			break
		}
	}
	var authority, host string
	var nAuth, nHost int
	d := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		switch f.Name {
		case ":authority":
			authority, nAuth = f.Value, nAuth+1
		case "host":
			host, nHost = f.Value, nHost+1
		}
	})
	d.SetMaxStringLength(sniff.MaxHello)
	if _, err := d.Write(block); err != nil {
		return "", errH2
	}
	if err := d.Close(); err != nil {
		return "", errH2
	}
	switch {
	case nAuth > 1 || nHost > 1:
		return "", errH2
	case nAuth == 1 && nHost == 1 && !strings.EqualFold(authority, host):
		return "", errH2
	case nAuth == 0:
		authority = host
	}
	// Reuse HTTPHost's checks of the name through a minimal request head.
	if authority == "" || strings.ContainsAny(authority, "\r\n") {
		return "", errH2
	}
	return sniff.HTTPHost([]byte("GET / HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"))
}
