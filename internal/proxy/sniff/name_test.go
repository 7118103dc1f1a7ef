package sniff_test

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
)

// helloConn records what a TLS client writes and fails its reads, so
// that the client's handshake stops after the ClientHello.
type helloConn struct {
	net.Conn
	out []byte
}

func (c *helloConn) Write(p []byte) (int, error) { c.out = append(c.out, p...); return len(p), nil }
func (c *helloConn) Read([]byte) (int, error)    { return 0, errors.New("no server") }
func (c *helloConn) Close() error                { return nil }
func (c *helloConn) SetDeadline(time.Time) error { return nil }

// clientHello returns the ClientHello crypto/tls sends with cfg.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := &helloConn{}
	tls.Client(c, cfg).Handshake() //nolint:errcheck // fails by design after the hello
	if len(c.out) == 0 {
		t.Fatal("no ClientHello written")
	}
	return c.out
}

// splitRecords rewrites a one-record ClientHello as records of at most n
// bytes of handshake data each.
func splitRecords(hello []byte, n int) []byte {
	body := hello[5:]
	var out []byte
	for len(body) > 0 {
		k := min(n, len(body))
		out = append(out, 0x16, 0x03, 0x01, byte(k>>8), byte(k))
		out = append(out, body[:k]...)
		body = body[k:]
	}
	return out
}

func TestServerName(t *testing.T) {
	withSNI := clientHello(t, &tls.Config{ServerName: "API.Example.com"})
	tls12 := clientHello(t, &tls.Config{ServerName: "legacy.example.com", MaxVersion: tls.VersionTLS12})
	noSNI := clientHello(t, &tls.Config{InsecureSkipVerify: true})   // no ServerName: no SNI
	ipOnly := clientHello(t, &tls.Config{ServerName: "203.0.113.7"}) // crypto/tls sends no SNI for an IP
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr error // nil, ErrIncomplete, or any other error (errOther)
	}{
		{"crypto/tls hello", withSNI, "api.example.com", nil},
		{"TLS 1.2 hello", tls12, "legacy.example.com", nil},
		{"no server name", noSNI, "", nil},
		{"IP address: no server name", ipOnly, "", nil},
		{"split across records", splitRecords(withSNI, 100), "api.example.com", nil},
		{"followed by more bytes", append(append([]byte{}, withSNI...), "junk"...), "api.example.com", nil},
		{"empty", nil, "", sniff.ErrIncomplete},
		{"header only", withSNI[:5], "", sniff.ErrIncomplete},
		{"cut short", withSNI[:len(withSNI)-1], "", sniff.ErrIncomplete},
		{"cut short across records", splitRecords(withSNI, 100)[:150], "", sniff.ErrIncomplete},
		{"not TLS", []byte("GET / HTTP/1.1\r\n\r\n"), "", errOther},
		{"not a ClientHello", []byte{0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00}, "", errOther},
		{"empty record", []byte{0x16, 0x03, 0x01, 0x00, 0x00}, "", errOther},
		{"too long", []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00}, "", errOther},
		{"truncated body", []byte{0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0x03, 0x03, 0x00, 0x00}, "", errOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sniff.ServerName(tt.in)
			checkNameErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("ServerName = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestServerNameHostile rewrites the server name of a real ClientHello
// with bytes no DNS name has: refused, never passed on.
func TestServerNameHostile(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "aaaaaaaaaaa.example.com"})
	for _, bad := range []string{"aaaaaaaaaaa.exampl\x00.com", "aaaaaaaaaaa.exa/ple.com", "aaaaaaaaaaa.exa ple.com", "*aaaaaaaaaa.example.com"} {
		in := []byte(strings.Replace(string(hello), "aaaaaaaaaaa.example.com", bad, 1))
		if got, err := sniff.ServerName(in); err == nil {
			t.Errorf("ServerName with %q = %q, want an error", bad, got)
		}
	}
}

var errOther = errors.New("any error but ErrIncomplete")

func checkNameErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("error %v, want none", err)
	case want == sniff.ErrIncomplete && !errors.Is(err, sniff.ErrIncomplete):
		t.Errorf("error %v, want ErrIncomplete", err)
	case want == errOther && (err == nil || errors.Is(err, sniff.ErrIncomplete)):
		t.Errorf("error %v, want a parse error", err)
	}
}

func TestHTTPHost(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr error
	}{
		{"GET / HTTP/1.1\r\nHost: API.example.com\r\nAccept: */*\r\n\r\n", "api.example.com", nil},
		{"POST /x HTTP/1.1\r\nhost:example.com:8080\r\n\r\nbody", "example.com", nil},
		{"\r\nGET / HTTP/1.1\r\nHost: example.com.\r\n\r\n", "example.com", nil},
		{"GET http://example.com:80/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n", "example.com", nil},
		{"GET http://example.com/ HTTP/1.1\r\n\r\n", "example.com", nil},
		{"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", "2001:db8::1", nil},
		{"GET / HTTP/1.1\r\nHost: example.com\r\n", "", sniff.ErrIncomplete},
		{"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "", errOther},
		{"GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n\r\n", "", errOther},
		{"GET / HTTP/1.1\r\nHost : b.example.com\r\n\r\n", "", errOther},
		{"GET http://evil.example/ HTTP/1.1\r\nHost: good.example.com\r\n\r\n", "", errOther},
		{"GET / HTTP/1.1\r\nHost: ex ample.com\r\n\r\n", "", errOther},
		{"GET / HTTP/1.1\r\nHost: \r\n\r\n", "", errOther},
		{"GET /\r\n\r\n", "", errOther},
		// Lines ended by a bare LF: servers that take LF alone as a line
		// end would read another Host than a strict parser.
		{"GET / HTTP/1.1\nHost: a.example.com\r\n\r\n", "", errOther},
		{"GET / HTTP/1.1\r\nX: y\nHost: evil.example\r\nHost: a.example.com\r\n\r\n", "", errOther},
		{"GET / HTTP/1.1\r\nHost: a.example.com\n\r\n\r\n", "", errOther},
		{"\nGET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n", "", errOther},
		// Refused as soon as seen, before the head ends.
		{"GET / HTTP/1.1\nHost: a.example.com\n\n", "", errOther},
		// A bare LF in the body is not the head's.
		{"POST / HTTP/1.1\r\nHost: a.example.com\r\n\r\nx\ny", "a.example.com", nil},
		// Targets whose host parsers disagree on.
		{"GET http://good.example.com#@evil.example/ HTTP/1.1\r\n\r\n", "", errOther},
		{"GET http://a@b@evil.example/ HTTP/1.1\r\n\r\n", "", errOther},
		{"GET /a#b HTTP/1.1\r\nHost: a.example.com\r\n\r\n", "", errOther},
		{"GET http://user@a.example.com/ HTTP/1.1\r\n\r\n", "a.example.com", nil},
		// userinfo belongs to an absolute target only.
		{"GET / HTTP/1.1\r\nHost: good.example.com@evil.example\r\n\r\n", "", errOther},
		{"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", sniff.MaxHello) + "\r\n\r\n", "", errOther},
	}
	for _, tt := range tests {
		got, err := sniff.HTTPHost([]byte(tt.in))
		t.Run(strings.Fields(tt.in + " x")[0], func(t *testing.T) {
			checkNameErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("HTTPHost(%.60q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	// A head that never ends is refused once it passes MaxHello.
	if _, err := sniff.HTTPHost([]byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", sniff.MaxHello))); err == nil || errors.Is(err, sniff.ErrIncomplete) {
		t.Errorf("unending head: error %v, want a parse error", err)
	}
}

// FuzzServerName checks that ServerName never panics, that a name it
// returns is a lower-case DNS name, and that its answer on a prefix of
// the input is ErrIncomplete or the same as on the whole.
func FuzzServerName(f *testing.F) {
	f.Add(clientHello(f, &tls.Config{ServerName: "api.example.com"}), uint16(100))
	f.Add(clientHello(f, &tls.Config{ServerName: "x.example", MaxVersion: tls.VersionTLS12}), uint16(7))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00}, uint16(0))
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		name, err := sniff.ServerName(in)
		if err == nil {
			checkFuzzName(t, name)
		}
		if int(cut) < len(in) {
			pn, perr := sniff.ServerName(in[:cut])
			if perr == nil && (err != nil || pn != name) {
				t.Errorf("prefix of %d bytes decided %q, whole input %q (%v)", cut, pn, name, err)
			}
		}
	})
}

// FuzzHTTPHost checks HTTPHost as FuzzServerName checks ServerName.
func FuzzHTTPHost(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), uint16(20))
	f.Add([]byte("GET http://a.example/ HTTP/1.1\r\nHost: a.example:80\r\n\r\n"), uint16(0))
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		name, err := sniff.HTTPHost(in)
		if err == nil {
			checkFuzzName(t, name)
		}
		if int(cut) < len(in) {
			pn, perr := sniff.HTTPHost(in[:cut])
			if perr == nil && (err != nil || pn != name) {
				t.Errorf("prefix of %d bytes decided %q, whole input %q (%v)", cut, pn, name, err)
			}
		}
	})
}

func checkFuzzName(t *testing.T, name string) {
	t.Helper()
	if name == "" {
		return
	}
	if len(name) > 253 || strings.ToLower(name) != name || strings.HasSuffix(name, ".") {
		t.Errorf("name %q is not canonical", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("-._:[]", c)) {
			t.Errorf("name %q holds %q", name, c)
		}
	}
}
