package sniff_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
)

const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// settingsFrame is an empty HTTP/2 SETTINGS frame, what follows the preface.
const settingsFrame = "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want sniff.Protocol
		// at is the length of the shortest prefix of in that Classify
		// decides on; 0 when in is too short to decide.
		at int
	}{
		{"empty", "", sniff.Opaque, 0},

		// HTTP/1.x: any request line, decided at the end of its version.
		{"GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", sniff.HTTP1, 14},
		{"HEAD", "HEAD / HTTP/1.1\r\n", sniff.HTTP1, 15},
		{"POST", "POST /v1/items HTTP/1.1\r\n", sniff.HTTP1, 23},
		{"PUT", "PUT /x HTTP/1.0\r\n", sniff.HTTP1, 15},
		{"DELETE", "DELETE /x HTTP/1.1\r\n", sniff.HTTP1, 18},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\n", sniff.HTTP1, 32},
		{"OPTIONS", "OPTIONS * HTTP/1.1\r\n", sniff.HTTP1, 18},
		{"TRACE", "TRACE / HTTP/1.1\r\n", sniff.HTTP1, 16},
		{"PATCH", "PATCH /x HTTP/1.1\r\n", sniff.HTTP1, 17},
		{"HTTP/0.9 request line", "GET /\r\n", sniff.HTTP1, 6},
		// Methods that no list holds, and methods in lower case, which
		// apps such as Go's ServeMux serve: the bypass of an advisory.
		{"lowercase method", "get / HTTP/1.1", sniff.HTTP1, 14},
		{"lowercase method and traversal", "get /a/../admin/x HTTP/1.1\r\n", sniff.HTTP1, 26},
		{"PROPFIND", "PROPFIND /x HTTP/1.1\r\n", sniff.HTTP1, 20},
		{"MKCOL", "MKCOL / HTTP/1.1", sniff.HTTP1, 16},
		{"tab separators", "HEAD\t/ HTTP/1.1", sniff.HTTP1, 15},
		{"runs of spaces, version in lower case", "GET  /x  http/1.1\r\n", sniff.HTTP1, 17},
		// Empty lines before the request line, which servers skip.
		{"leading CRLF", "\r\nGET / HTTP/1.1\r\n", sniff.HTTP1, 16},
		{"leading empty lines, lower case", "\n\r\n\r\nget /x HTTP/1.1\r\n", sniff.HTTP1, 20},
		{"more empty lines than peeked", strings.Repeat("\r\n", 5) + "GET", sniff.HTTP1, 9},
		// A method or target too long to see the end of is HTTP/1.
		{"long method", strings.Repeat("A", 100) + " /x HTTP/1.1", sniff.HTTP1, sniff.MaxPeek},
		{"long target", "GET /" + strings.Repeat("a", 100) + " HTTP/1.1", sniff.HTTP1, sniff.MaxPeek},

		// Prefixes of a request line need more bytes.
		{"G", "G", sniff.Opaque, 0},
		{"GET without space", "GET", sniff.Opaque, 0},
		{"method and space", "GET ", sniff.Opaque, 0},
		{"method and target", "GET /x", sniff.Opaque, 0},
		{"GE then space", "GE T", sniff.Opaque, 0},
		{"CR only", "\r", sniff.Opaque, 0},

		// Not a request line: opaque where it diverges.
		{"GET then slash", "GET/ HTTP/1.1", sniff.Opaque, 4},
		{"HTTP response", "HTTP/1.1 200 OK\r\n", sniff.Opaque, 5},
		{"bad version digit", "GET /x HTTP/x.1", sniff.Opaque, 13},
		{"bad version dot", "GET /x HTTP/1x", sniff.Opaque, 14},
		{"another protocol's version", "GET /x FTP/1.1", sniff.Opaque, 8},
		{"HTTP/0.9 shape without a path", "GET x\r\n", sniff.Opaque, 6},
		{"NUL in the target", "GET /x\x00", sniff.Opaque, 7},

		// HTTP/2 with prior knowledge: the whole preface is needed.
		{"h2 preface", preface, sniff.HTTP2, 24},
		{"h2 preface and SETTINGS", preface + settingsFrame, sniff.HTTP2, 24},
		{"PR", "PR", sniff.Opaque, 0},
		{"PRI", "PRI", sniff.Opaque, 0},
		{"PRI space", "PRI ", sniff.Opaque, 0},
		{"preface up to HTTP/2.0", "PRI * HTTP/2.0\r\n", sniff.Opaque, 0},
		{"preface less its last byte", preface[:23], sniff.Opaque, 0},
		{"PRI as HTTP/1.1", "PRI * HTTP/1.1\r\n\r\n", sniff.HTTP1, 14},
		{"preface with wrong SM line, a request line", "PRI * HTTP/2.0\r\n\r\nXM\r\n\r\n", sniff.HTTP1, 19},
		{"preface with wrong last byte, a request line", preface[:23] + "\r", sniff.HTTP1, 24},

		// TLS: a handshake record with version 3.0 to 3.4.
		{"SSL 3.0", "\x16\x03\x00\x00\x2f\x01", sniff.TLS, 3},
		{"TLS 1.0 record (TLS 1.3 ClientHello)", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", sniff.TLS, 3},
		{"TLS 1.1", "\x16\x03\x02\x00\x30", sniff.TLS, 3},
		{"TLS 1.2", "\x16\x03\x03\x00\x30", sniff.TLS, 3},
		{"TLS 1.3 version", "\x16\x03\x04", sniff.TLS, 3},
		{"TLS unknown minor", "\x16\x03\x05\x00\x30", sniff.Opaque, 3},
		{"TLS wrong major", "\x16\x02\x00", sniff.Opaque, 2},
		{"handshake type only", "\x16", sniff.Opaque, 0},
		{"handshake and major", "\x16\x03", sniff.Opaque, 0},
		{"TLS alert record", "\x15\x03\x03\x00\x02", sniff.Opaque, 1},
		{"TLS application data", "\x17\x03\x03\x00\x20", sniff.Opaque, 1},
		{"SSLv2 ClientHello", "\x80\x2e\x01\x00\x02", sniff.Opaque, 1},

		// Other client-first protocols are opaque at their first byte.
		{"SSH", "SSH-2.0-OpenSSH_9.6\r\n", sniff.Opaque, 20},
		{"PostgreSQL startup", "\x00\x00\x00\x08\x04\xd2\x16\x2f", sniff.Opaque, 1},
		{"PostgreSQL v3 startup", "\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00", sniff.Opaque, 1},
		{"Redis", "*1\r\n$4\r\nPING\r\n", sniff.Opaque, 3},
		{"Redis inline PING", "PING\r\n", sniff.Opaque, 5},
		{"Redis inline SET", "SET key value\r\n", sniff.Opaque, 9},
		{"memcached", "get key\r\n", sniff.Opaque, 8},
		{"SMTP EHLO", "EHLO mail.example.com\r\n", sniff.Opaque, 22},
		{"Kafka", "\x00\x00\x00\x1f\x00\x12\x00\x03", sniff.Opaque, 1},
		{"NUL", "\x00", sniff.Opaque, 1},
		{"binary junk", "\xff\xfe\xfd\x00\x01", sniff.Opaque, 1},
		{"space", " ", sniff.Opaque, 1},
		{"long junk", strings.Repeat("\xff", 100), sniff.Opaque, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, complete := sniff.Classify([]byte(tt.in))
			if p != tt.want || complete != (tt.at > 0) {
				t.Fatalf("Classify(%q) = %v, %v; want %v, %v", tt.in, p, complete, tt.want, tt.at > 0)
			}
			at := 0
			for n := 0; n <= len(tt.in); n++ {
				if _, ok := sniff.Classify([]byte(tt.in[:n])); ok {
					at = n
					break
				}
			}
			if at != tt.at {
				t.Errorf("Classify decides %q after %d bytes; want %d", tt.in, at, tt.at)
			}
		})
	}
}

func TestProtocolString(t *testing.T) {
	for p, want := range map[sniff.Protocol]string{
		sniff.Opaque: "tcp",
		sniff.HTTP1:  "http/1.1",
		sniff.HTTP2:  "h2c",
		sniff.TLS:    "tls",
		9:            "Protocol(9)",
	} {
		if got := p.String(); got != want {
			t.Errorf("Protocol(%d).String() = %q; want %q", uint8(p), got, want)
		}
	}
}

// FuzzClassify checks that Classify never panics, that a decision is final
// once made (it holds for every longer input), that an undecided result is
// Opaque, and that MaxPeek bytes always suffice.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"", "G", "GET / HTTP/1.1\r\n", "PATCH ", "get /x HTTP/1.1", "\r\nPROPFIND / HTTP/1.0", "GET /\r\n", "PRI * HTTP/2.0", preface + settingsFrame,
		"\x16\x03\x01\x02\x00", "\x16\x03\x09", "SSH-2.0-Go\r\n", "*1\r\n$4\r\nPING\r\n",
		"\x00\x00\x00\x08\x04\xd2\x16\x2f",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, complete := sniff.Classify(b)
		if !complete && p != sniff.Opaque {
			t.Fatalf("Classify(%q) = %v, undecided; want Opaque when undecided", b, p)
		}
		if len(b) >= sniff.MaxPeek && !complete {
			t.Fatalf("Classify(%q) undecided after %d bytes", b, len(b))
		}
		// The first decided prefix must agree with every longer one.
		for n := 0; n <= len(b); n++ {
			q, ok := sniff.Classify(b[:n])
			if !ok {
				continue
			}
			for m := n + 1; m <= len(b); m++ {
				if r, ok := sniff.Classify(b[:m]); !ok || r != q {
					t.Fatalf("Classify(%q) = %v, decided; Classify(%q) = %v, %v", b[:n], q, b[:m], r, ok)
				}
			}
			break
		}
		if complete {
			for _, tail := range [][]byte{{0}, {' '}, []byte(preface)} {
				if q, ok := sniff.Classify(append(bytes.Clone(b), tail...)); !ok || q != p {
					t.Fatalf("Classify(%q) = %v, decided; with %q appended = %v, %v", b, p, tail, q, ok)
				}
			}
		}
	})
}

// TestDependencies keeps the package on the standard library alone, and so
// away from Kubernetes, the controller and the rest of the proxy.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const self = "github.com/rampart-mesh/rampart/internal/proxy/sniff"
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list listed nothing; the check would prove nothing")
	}
	for _, d := range deps {
		if d != self {
			t.Errorf("sniff depends on %s; it must use the standard library only", d)
		}
	}
}
