package egress

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
)

// h2Request returns what an HTTP/2 client sends first: the preface,
// SETTINGS, and a request's header block, split into a HEADERS frame
// (padded, with priority) and CONTINUATION frames of at most chunk bytes.
func h2Request(t testing.TB, fields [][2]string, chunk int) []byte {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteWindowUpdate(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	b := block.Bytes()
	first := b[:min(chunk, len(b))]
	b = b[len(first):]
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) == 0,
		PadLength: 3, Priority: http2.PriorityParam{Weight: 15}}); err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 {
		c := b[:min(chunk, len(b))]
		b = b[len(c):]
		if err := fr.WriteContinuation(1, len(b) == 0, c); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

func getFields(authority string) [][2]string {
	return [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", authority}, {":path", "/"}, {"user-agent", strings.Repeat("x", 40)}}
}

func tlsHello(t testing.TB, name string) []byte {
	t.Helper()
	var out bytes.Buffer
	c := tls.Client(&recorder{w: &out}, &tls.Config{ServerName: name})
	c.Handshake() //nolint:errcheck // fails by design after the hello
	return out.Bytes()
}

type recorder struct {
	net.Conn
	w *bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error)      { return r.w.Write(p) }
func (r *recorder) Read([]byte) (int, error)         { return 0, errors.New("no server") }
func (r *recorder) Close() error                     { return nil }
func (r *recorder) SetDeadline(time.Time) error      { return nil }
func (r *recorder) SetReadDeadline(time.Time) error  { return nil }
func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

func TestNameOf(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte
		proto sniff.Protocol
		host  string
	}{
		{"tls", tlsHello(t, "api.example.com"), sniff.TLS, "api.example.com"},
		{"http/1", []byte("GET / HTTP/1.1\r\nHost: Web.Example.com:8080\r\n\r\n"), sniff.HTTP1, "web.example.com"},
		{"h2c", h2Request(t, getFields("grpc.example.com:50051"), 1000), sniff.HTTP2, "grpc.example.com"},
		{"h2c continuation", h2Request(t, getFields("grpc.example.com"), 5), sniff.HTTP2, "grpc.example.com"},
		{"h2c host header", h2Request(t, [][2]string{{":method", "GET"}, {":path", "/"}, {"host", "h.example.com"}}, 1000), sniff.HTTP2, "h.example.com"},
		{"h2c two authorities", h2Request(t, [][2]string{{":authority", "a.example.com"}, {":authority", "b.example.com"}}, 1000), sniff.HTTP2, ""},
		{"h2c authority and host disagree", h2Request(t, [][2]string{{":authority", "a.example.com"}, {"host", "b.example.com"}}, 1000), sniff.HTTP2, ""},
		{"h2c bad authority", h2Request(t, getFields("a b.example.com"), 1000), sniff.HTTP2, ""},
		{"http/1 without host", []byte("GET / HTTP/1.1\r\n\r\n"), sniff.HTTP1, ""},
		{"http/1 empty label", []byte("GET / HTTP/1.1\r\nHost: a..example.com\r\n\r\n"), sniff.HTTP1, ""},
		{"http/1 numeric last label", []byte("GET / HTTP/1.1\r\nHost: 10.1.2\r\n\r\n"), sniff.HTTP1, ""},
		{"http/1 ipv4 literal", []byte("GET / HTTP/1.1\r\nHost: 203.0.113.7:80\r\n\r\n"), sniff.HTTP1, "203.0.113.7"},
		{"http/1 ipv6 literal", []byte("GET / HTTP/1.1\r\nHost: [2001:DB8:0::1]\r\n\r\n"), sniff.HTTP1, "2001:db8::1"},
		{"http/1 colons", []byte("GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n"), sniff.HTTP1, ""},
		{"tls empty label", tlsHello(t, "a..example.com"), sniff.TLS, ""},
		{"tls leading hyphen", tlsHello(t, "-a.example.com"), sniff.TLS, ""},
		{"opaque", []byte("\x00\x01binary"), sniff.Opaque, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, complete := NameOf(tt.in)
			if !complete || h.Protocol != tt.proto || h.Name != tt.host {
				t.Errorf("NameOf = %+v, %v; want %v %q, complete", h, complete, tt.proto, tt.host)
			}
			// Every proper prefix is incomplete or decides the same.
			for n := range len(tt.in) {
				ph, pc := NameOf(tt.in[:n])
				if pc && ph != h {
					t.Fatalf("prefix of %d bytes decided %+v, the whole %+v", n, ph, h)
				}
			}
		})
	}
}

// TestPeek reads names over real connections, in pieces, and checks that
// the bytes read are all handed back.
func TestPeek(t *testing.T) {
	hello := tlsHello(t, "api.example.com")
	tests := []struct {
		name   string
		chunks [][]byte
		close  bool
		want   Hello
	}{
		{"tls in pieces", [][]byte{hello[:3], hello[3:100], hello[100:]}, false, Hello{sniff.TLS, "api.example.com"}},
		{"http/1", [][]byte{[]byte("GET / HTTP/1.1\r\nHo"), []byte("st: a.example.com\r\n\r\n")}, false, Hello{sniff.HTTP1, "a.example.com"}},
		// The client stops before the end of the head: the bytes come
		// back, naming nothing.
		{"stops sending", [][]byte{[]byte("GET / HTTP/1.1\r\nHost: a.example.com\r\n")}, false, Hello{sniff.HTTP1, ""}},
		{"closes early", [][]byte{hello[:50]}, true, Hello{sniff.TLS, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			client, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			go func() {
				for _, c := range tt.chunks {
					client.Write(c)                  //nolint:errcheck // the server's reads tell
					time.Sleep(5 * time.Millisecond) // separate segments
				}
				if tt.close {
					client.(*net.TCPConn).CloseWrite()
				}
			}()
			timeout := 300 * time.Millisecond
			h, got, err := Peek(server, timeout)
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.want {
				t.Errorf("Peek = %+v, want %+v", h, tt.want)
			}
			var want []byte
			for _, c := range tt.chunks {
				want = append(want, c...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Peek handed back %q, the client sent %q", got, want)
			}
		})
	}
}

// FuzzNameOf checks that NameOf never panics, that a name it returns is
// canonical, and that a prefix never decides otherwise than the whole.
func FuzzNameOf(f *testing.F) {
	f.Add(h2Request(f, getFields("grpc.example.com"), 7), uint16(40))
	f.Add(h2Request(f, getFields("a.example"), 1000), uint16(70))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), uint16(3))
	f.Add(tlsHello(f, "x.example.com"), uint16(90))
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		h, complete := NameOf(in)
		if !complete && h != (Hello{}) {
			t.Errorf("undecided, yet said %+v", h)
		}
		if h.Name != "" && !validName(h.Name) {
			if a, err := netip.ParseAddr(h.Name); err != nil || a.Zone() != "" || a.String() != h.Name {
				t.Errorf("name %q is neither a canonical DNS name nor an IP literal", h.Name)
			}
		}
		if int(cut) < len(in) {
			ph, pc := NameOf(in[:cut])
			if pc && complete && ph != h {
				t.Errorf("prefix of %d bytes decided %+v, the whole %+v", cut, ph, h)
			}
		}
	})
}
