package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// serve runs s on a loopback listener until the test ends.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.ServeConn(context.Background(), c, nil)
			}()
		}
	}()
	return l.Addr().String()
}

// exchange writes raw requests on one connection and returns what came
// back until the server closed it or stopped answering for a moment.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, raw)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	b, _ := io.ReadAll(c)
	return string(b)
}

func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/unread" {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/stream":
			w.Header().Set("Trailer", "Grpc-Status")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "one;")
			w.(http.Flusher).Flush()
			io.WriteString(w, "two")
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Late", "yes")
			return
		case "/big":
			w.Write([]byte(strings.Repeat("b", 3*bufferBeforeChunking)))
			return
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
			return
		}
		fmt.Fprintf(w, "%s %s %s host=%s len=%d te=%v body=%q trailer=%v conn=%q", r.Method, r.RequestURI, r.Proto,
			r.Host, r.ContentLength, r.TransferEncoding, body, r.Trailer, r.Header.Get("Connection"))
	})
}

func TestServerAgainstNetHTTPClient(t *testing.T) {
	addr := serve(t, &Server{Handler: echoHandler()})
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var dials int
	tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		dials++
		var d net.Dialer
		return d.DialContext(ctx, network, a)
	}
	get := func(t *testing.T, req *http.Request) (*http.Response, string) {
		t.Helper()
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, string(b)
	}
	t.Run("get", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/a?b=c", nil)
		res, body := get(t, req)
		want := `GET /a?b=c HTTP/1.1 host=` + addr + ` len=0 te=[] body="" trailer=map[] conn=""`
		if body != want {
			t.Fatalf("body\n%s\nwant\n%s", body, want)
		}
		if res.ContentLength != int64(len(want)) || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" || res.Header.Get("Date") == "" {
			t.Errorf("header %v, length %d", res.Header, res.ContentLength)
		}
	})
	t.Run("post chunked with trailers", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "http://"+addr+"/p", io.NopCloser(strings.NewReader("streamed")))
		req.ContentLength = -1
		req.Trailer = http.Header{"Checksum": nil}
		req.Body = &trailerBody{Reader: strings.NewReader("streamed"), req: req}
		_, body := get(t, req)
		if !strings.Contains(body, `te=[chunked] body="streamed" trailer=map[Checksum:[abc]]`) {
			t.Fatalf("body %s", body)
		}
	})
	t.Run("streamed response with trailers", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/stream", nil)
		res, body := get(t, req)
		if body != "one;two" || res.ContentLength != -1 {
			t.Fatalf("body %q, length %d", body, res.ContentLength)
		}
		if diff := cmp.Diff(http.Header{"Grpc-Status": {"0"}, "Late": {"yes"}}, res.Trailer); diff != "" {
			t.Errorf("trailers (-want +got):\n%s", diff)
		}
	})
	t.Run("large response", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/big", nil)
		_, body := get(t, req)
		if len(body) != 3*bufferBeforeChunking {
			t.Fatalf("%d bytes", len(body))
		}
	})
	t.Run("no content", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/empty", nil)
		res, body := get(t, req)
		if res.StatusCode != http.StatusNoContent || body != "" {
			t.Fatalf("%d %q", res.StatusCode, body)
		}
	})
	t.Run("head", func(t *testing.T) {
		req, _ := http.NewRequest("HEAD", "http://"+addr+"/h", nil)
		res, body := get(t, req)
		if body != "" || res.ContentLength <= 0 {
			t.Fatalf("body %q, length %d", body, res.ContentLength)
		}
	})
	t.Run("expect continue", func(t *testing.T) {
		tr.ExpectContinueTimeout = 5 * time.Second
		defer func() { tr.ExpectContinueTimeout = 0 }()
		req, _ := http.NewRequest("PUT", "http://"+addr+"/c", strings.NewReader("after continue"))
		req.Header.Set("Expect", "100-continue")
		_, body := get(t, req)
		if !strings.Contains(body, `body="after continue"`) {
			t.Fatalf("body %s", body)
		}
	})
	if dials != 1 {
		t.Errorf("%d connections for sequential requests, want 1", dials)
	}
}

// trailerBody sets its request's trailer when it ends, as a streaming
// client does.
type trailerBody struct {
	io.Reader
	req *http.Request
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF {
		b.req.Trailer.Set("Checksum", "abc")
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }

func TestServerRawExchanges(t *testing.T) {
	addr := serve(t, &Server{Handler: echoHandler()})
	tests := []struct {
		name string
		raw  string
		want []string // substrings, in order
		not  []string
	}{
		{"pipelined", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"HTTP/1.1 200 OK", "GET /1", "HTTP/1.1 200 OK", "GET /2"}, nil},
		{"close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"Connection: close", `conn=""`}, []string{"/never"}},
		{"unread body is dropped", "POST /unread HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"HTTP/1.1 202 Accepted", "GET /next"}, []string{"Connection: close"}},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", []string{"HTTP/1.0 200 OK", "GET / HTTP/1.0"}, []string{"keep-alive"}},
		{"HTTP/1.0 keep-alive", "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
			[]string{"Connection: keep-alive", "GET /1", "GET /2"}, nil},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", []string{"HTTP/1.1 200 OK", "Content-Length: 0"}, []string{"OPTIONS *"}},
		{"absolute form", "GET http://b.example/x HTTP/1.1\r\nHost: a\r\n\r\n", []string{"GET http://b.example/x", "host=b.example"}, nil},
		{"chunked wins over length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
			[]string{`len=-1 te=[chunked] body="ok"`}, nil},
		{"expect continue", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok",
			[]string{"HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 200 OK", `body="ok"`}, nil},
		{"expect something else", "POST / HTTP/1.1\r\nHost: a\r\nExpect: telepathy\r\n\r\n", []string{"HTTP/1.1 417 Expectation Failed"}, nil},
		{"no host", "GET / HTTP/1.1\r\n\r\n", []string{"HTTP/1.1 400 Bad Request", "missing required Host header"}, nil},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", []string{"HTTP/1.1 400 Bad Request"}, nil},
		{"differing lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok", []string{"HTTP/1.1 400 Bad Request"}, nil},
		{"unknown coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", []string{"HTTP/1.1 501 Not Implemented"}, nil},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", []string{"HTTP/1.1 400 Bad Request"}, nil},
		{"HTTP/2 as HTTP/1", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", []string{"HTTP/1.1 505 HTTP Version Not Supported"}, nil},
		{"header too large", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("x", MaxHeaderBytes) + "\r\n\r\n",
			[]string{"HTTP/1.1 431 Request Header Fields Too Large"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := exchange(t, addr, tt.raw)
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("missing %q in\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Fatalf("unexpected %q in\n%s", n, got)
				}
			}
		})
	}
}

func TestServerCancelsWhenTheClientGoes(t *testing.T) {
	canceled := make(chan struct{})
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(10 * time.Second):
		}
	})})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(20 * time.Millisecond) // the request is being served; not a timed assertion
	c.Close()
	<-canceled
}

func TestServerAbortHandlerCutsTheResponse(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "12345")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})})
	got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if !strings.HasSuffix(got, "\r\n\r\n12345") || strings.Count(got, "HTTP/1.1") != 1 {
		t.Fatalf("got %q, want one response cut after 5 bytes", got)
	}
}

func TestServerShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	})}
	addr := serve(t, s)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("%v %v", res, err)
	}
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	// The idle connection is closed at once.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: read %d, %v; want EOF", n, err)
	}
	// The busy one finishes its response, told that the connection closes.
	close(release)
	br := bufio.NewReader(busy)
	res, err := http.ReadResponse(br, nil)
	if err != nil || !res.Close {
		t.Fatalf("busy connection: %v %v, want a last response", res, err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestServerHandsHTTP2PrefaceOver(t *testing.T) {
	got := make(chan string, 1)
	s := &Server{
		Handler: echoHandler(),
		H2C: func(_ context.Context, nc net.Conn, br *bufio.Reader) {
			defer nc.Close()
			b := make([]byte, len(http2Preface))
			io.ReadFull(br, b)
			got <- string(b)
		},
	}
	addr := serve(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, http2Preface)
	if p := <-got; p != http2Preface {
		t.Fatalf("H2C read %q", p)
	}
	// A method that starts with P is HTTP/1 all the same.
	if out := exchange(t, addr, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"); !strings.Contains(out, "PUT / HTTP/1.1") {
		t.Fatalf("PUT answered %q", out)
	}
}

const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
