package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// do sends req through c and returns the status, the body and the
// trailers.
func do(t *testing.T, c *Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	res.Body.Close()
	return res, string(b)
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestClientAgainstNetHTTP(t *testing.T) {
	var conns atomic.Int32
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
		w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-UA", r.Header.Get("User-Agent"))
		w.Header().Set("X-Trailer", r.Trailer.Get("Checksum"))
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "Grpc-Status")
			io.WriteString(w, "part one;")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part two")
			w.Header().Set("Grpc-Status", "0")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			w.WriteHeader(http.StatusNotModified)
		case "/hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "after hints")
		default:
			fmt.Fprintf(w, "%s %s?%s %q", r.Method, r.URL.Path, r.URL.RawQuery, body)
		}
	}))
	app.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	app.Start()
	defer app.Close()
	c := &Client{}
	defer c.CloseIdleConnections()

	t.Run("get", func(t *testing.T) {
		req := newRequest(t, "GET", app.URL+"/a%20b?x=1&y=2", nil)
		req.Host = "orders.example"
		res, body := do(t, c, req)
		if res.StatusCode != 200 || body != `GET /a b?x=1&y=2 ""` {
			t.Fatalf("got %d %q", res.StatusCode, body)
		}
		if got := res.Header.Get("X-Host"); got != "orders.example" {
			t.Errorf("app saw Host %q", got)
		}
		if got := res.Header.Get("X-UA"); got != "" {
			t.Errorf("app saw User-Agent %q, want none", got)
		}
		if res.ContentLength != int64(len(body)) {
			t.Errorf("ContentLength %d, want %d", res.ContentLength, len(body))
		}
	})
	t.Run("post small", func(t *testing.T) {
		res, body := do(t, c, newRequest(t, "POST", app.URL+"/p", strings.NewReader("hello")))
		if body != `POST /p? "hello"` || res.Header.Get("X-Length") != "5" {
			t.Fatalf("got %q, length %s", body, res.Header.Get("X-Length"))
		}
	})
	t.Run("post large", func(t *testing.T) {
		big := strings.Repeat("x", 3*syncBodyMax)
		_, body := do(t, c, newRequest(t, "POST", app.URL+"/p", strings.NewReader(big)))
		if body != fmt.Sprintf("POST /p? %q", big) {
			t.Fatalf("large body came back as %d bytes", len(body))
		}
	})
	t.Run("post of unknown length with trailers", func(t *testing.T) {
		req := newRequest(t, "POST", app.URL+"/p", io.NopCloser(strings.NewReader("streamed")))
		req.ContentLength = -1
		req.Trailer = http.Header{"Checksum": {"abc"}}
		res, body := do(t, c, req)
		if body != `POST /p? "streamed"` || res.Header.Get("X-TE") != "chunked" || res.Header.Get("X-Trailer") != "abc" {
			t.Fatalf("got %q, TE %q, trailer %q", body, res.Header.Get("X-TE"), res.Header.Get("X-Trailer"))
		}
	})
	t.Run("empty body of a method that may have one", func(t *testing.T) {
		res, _ := do(t, c, newRequest(t, "DELETE", app.URL+"/d", nil))
		if got := res.Header.Get("X-Length"); got != "0" {
			t.Fatalf("app saw length %s", got)
		}
	})
	t.Run("chunked response with trailers", func(t *testing.T) {
		res, body := do(t, c, newRequest(t, "GET", app.URL+"/chunked", nil))
		if body != "part one;part two" {
			t.Fatalf("body %q", body)
		}
		if res.ContentLength != -1 || res.Header.Get("Transfer-Encoding") != "" || res.Header.Get("Trailer") != "" {
			t.Errorf("framing fields leaked: %v", res.Header)
		}
		if diff := cmp.Diff(http.Header{"Grpc-Status": {"0"}}, res.Trailer); diff != "" {
			t.Errorf("trailers (-want +got):\n%s", diff)
		}
	})
	for _, path := range []string{"/nocontent", "/notmodified"} {
		t.Run(path, func(t *testing.T) {
			res, body := do(t, c, newRequest(t, "GET", app.URL+path, nil))
			if body != "" || res.Body != http.NoBody {
				t.Fatalf("body %q", body)
			}
		})
	}
	t.Run("head", func(t *testing.T) {
		res, body := do(t, c, newRequest(t, "HEAD", app.URL+"/h", nil))
		if body != "" || res.ContentLength != int64(len(`HEAD /h? ""`)) {
			t.Fatalf("body %q, length %d", body, res.ContentLength)
		}
	})
	t.Run("1xx reach the trace", func(t *testing.T) {
		var got []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		}}
		req := newRequest(t, "GET", app.URL+"/hints", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		_, body := do(t, c, req)
		if body != "after hints" || len(got) != 1 || got[0] != "103 </style.css>; rel=preload" {
			t.Fatalf("body %q, 1xx %q", body, got)
		}
	})
	t.Run("keep-alive", func(t *testing.T) {
		before := conns.Load()
		for range 5 {
			do(t, c, newRequest(t, "GET", app.URL+"/k", nil))
		}
		if n := conns.Load() - before; n > 0 {
			t.Fatalf("%d new connections for sequential requests, want 0", n)
		}
	})
}

func TestClientRefusesWhatWouldReframe(t *testing.T) {
	c := &Client{}
	for _, tc := range []struct {
		name   string
		mutate func(*http.Request)
	}{
		{"newline in a value", func(r *http.Request) { r.Header.Set("X-Evil", "a\r\nContent-Length: 5") }},
		{"bad field name", func(r *http.Request) { r.Header["Bad Name"] = []string{"x"} }},
		{"bad host", func(r *http.Request) { r.Host = "a b" }},
		{"space in the query", func(r *http.Request) { r.URL.RawQuery = "a=b HTTP/1.1" }},
		{"bad method", func(r *http.Request) { r.Method = "GET /" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest(t, "GET", "http://127.0.0.1:1/", nil)
			tc.mutate(req)
			if _, err := c.RoundTrip(req); err == nil || !strings.HasPrefix(err.Error(), "h1: ") {
				t.Fatalf("err = %v, want a refusal", err)
			}
		})
	}
}

// rawApp answers each connection's requests with the responses given, in
// order, one per request, then ends its side of the connection.
func rawApp(t *testing.T, responses ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for _, r := range responses {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, r)
				}
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, br)
			}()
		}
	}()
	return l.Addr().String()
}

func TestClientParsesStrictly(t *testing.T) {
	tests := []struct {
		name     string
		response string
		wantErr  bool
		wantBody string
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, "ok"},
		{"repeated equal lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", false, "ok"},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nall of it", false, "all of it"},
		{"chunked wins over length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false, "ok"},
		{"folded value", "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok", true, ""},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false, "ok"},
		{"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", true, ""},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", true, ""},
		{"unknown coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", true, ""},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", true, ""},
		{"control character", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", true, ""},
		{"bad status line", "HTTP/1.1 2000 OK\r\n\r\n", true, ""},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", true, ""},
		{"switching unasked", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", true, ""},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", false, "!unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawApp(t, tt.response)
			c := &Client{}
			defer c.CloseIdleConnections()
			res, err := c.RoundTrip(newRequest(t, "GET", "http://"+addr+"/", nil))
			if tt.wantErr {
				if err == nil {
					res.Body.Close()
					t.Fatal("response accepted, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			if strings.HasPrefix(tt.wantBody, "!") {
				if err == nil || !strings.Contains(err.Error(), tt.wantBody[1:]) {
					t.Fatalf("err = %v, want %s", err, tt.wantBody[1:])
				}
				return
			}
			if err != nil || string(b) != tt.wantBody {
				t.Fatalf("body %q, %v; want %q", b, err, tt.wantBody)
			}
		})
	}
}

func TestClientRetriesAConnectionTheAppClosed(t *testing.T) {
	// The app answers one request per connection and closes it without
	// saying so, as an app whose keep-alive timeout passed does.
	addr := rawApp(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	c := &Client{}
	defer c.CloseIdleConnections()
	for i := range 3 {
		_, body := do(t, c, newRequest(t, "GET", "http://"+addr+"/", nil))
		if body != "ok" {
			t.Fatalf("request %d: body %q", i, body)
		}
	}
}

func TestClientAbandonsWhenTheContextEnds(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	gone := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(gone)
		case <-release:
		}
	}))
	defer app.Close()
	c := &Client{}
	ctx, cancel := context.WithCancel(context.Background())
	req := newRequest(t, "GET", app.URL, nil).WithContext(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.RoundTrip(req)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the request reach the app; not a timed assertion
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	<-gone // the app saw its connection go
}

func TestClientEarlyResponseDoesNotWaitForTheBody(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	defer app.Close()
	c := &Client{}
	pr, pw := io.Pipe()
	defer pw.Close()
	req := newRequest(t, "POST", app.URL, pr)
	req.ContentLength = -1
	go pw.Write(bytes.Repeat([]byte("x"), 1<<10)) // and then nothing more
	res, body := do(t, c, req)
	if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "too large") {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
}
