package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzReadRequest feeds arbitrary bytes to the server's request parser and
// to net/http's. Whatever the parser accepts, net/http must accept too and
// frame the same way, with the same body: a request is never split
// differently by the proxy and by a server behind it.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\nX: a\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc := &serverConn{s: &Server{}, br: bufio.NewReader(bytes.NewReader(data)), remote: "test"}
		sc.base = (&http.Request{}).WithContext(context.Background())
		got, err := sc.readRequest()
		if err != nil {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("accepted a request net/http refuses (%v):\n%q", err, data)
		}
		if got.Method != want.Method || got.RequestURI != want.RequestURI || got.ContentLength != want.ContentLength ||
			len(got.TransferEncoding) != len(want.TransferEncoding) || got.Close != want.Close {
			t.Fatalf("framed differently from net/http:\n%q\ngot  %s %s len %d te %v close %v\nwant %s %s len %d te %v close %v",
				data, got.Method, got.RequestURI, got.ContentLength, got.TransferEncoding, got.Close,
				want.Method, want.RequestURI, want.ContentLength, want.TransferEncoding, want.Close)
		}
		gotBody, gotErr := io.ReadAll(got.Body)
		wantBody, wantErr := io.ReadAll(want.Body)
		if !sameBody(gotBody, wantBody, gotErr, wantErr) {
			t.Fatalf("body differs from net/http's:\n%q\ngot  %q %v\nwant %q %v", data, gotBody, gotErr, wantBody, wantErr)
		}
	})
}

// sameBody reports whether two readings of a body agree: a body read
// whole was read whole and the same by net/http. Failing where net/http
// does not is allowed (stricter, as with a trailer section that does not
// end in CRLF CRLF), if what came before agrees. And net/http looks two
// bytes ahead for the end of a trailer section, failing where the input
// ends just after it: that is the input's end, not a framing difference.
func sameBody(got, want []byte, gotErr, wantErr error) bool {
	if gotErr != nil {
		return bytes.HasPrefix(want, got)
	}
	if !bytes.Equal(got, want) {
		return false
	}
	return wantErr == nil || strings.Contains(wantErr.Error(), "unexpected EOF")
}

// FuzzReadResponse feeds arbitrary bytes to the client's response parser
// and to net/http's, with the same rule: what it accepts, net/http
// accepts, with the same status and body.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n2\r\nok\r\n0\r\nGrpc-Status: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: "a", Path: "/"}}
		if head {
			req.Method = http.MethodHead
		}
		pc := &conn{c: &Client{}, br: bufio.NewReader(bytes.NewReader(data))}
		pc.nc = nopConn{}
		got, err := pc.readResponse(req)
		if err != nil {
			return
		}
		want, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), req)
		if err != nil {
			t.Fatalf("accepted a response net/http refuses (%v):\n%q", err, data)
		}
		if got.StatusCode != want.StatusCode || got.StatusCode >= 200 && got.ContentLength != want.ContentLength {
			t.Fatalf("framed differently from net/http:\n%q\ngot  %d len %d\nwant %d len %d",
				data, got.StatusCode, got.ContentLength, want.StatusCode, want.ContentLength)
		}
		if got.StatusCode < 200 {
			return
		}
		gotBody, gotErr := io.ReadAll(got.Body)
		wantBody, wantErr := io.ReadAll(want.Body)
		if !sameBody(gotBody, wantBody, gotErr, wantErr) {
			t.Fatalf("body differs from net/http's:\n%q\ngot  %q %v\nwant %q %v", data, gotBody, gotErr, wantBody, wantErr)
		}
	})
}

// nopConn stands for a connection whose bytes come from elsewhere.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
