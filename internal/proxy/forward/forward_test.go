package forward_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/internal/proxy/forward"
)

// proxyTo returns a server that passes every request on to backend with
// forward, as the proxy's hops do.
func proxyTo(t *testing.T, backend string) *httptest.Server {
	t.Helper()
	target, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x, err := forward.NewExchange(w, r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer x.Close()
		x.Out.URL.Scheme, x.Out.URL.Host = target.Scheme, target.Host
		res, err := tr.RoundTrip(x.Out)
		x.RoundTripDone()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if err := x.WriteResponse(res); err != nil {
			panic(http.ErrAbortHandler)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

func TestRequestHeadersPassedOn(t *testing.T) {
	var seen http.Header
	var seenQuery string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		seenQuery = r.URL.RawQuery
	}))
	defer backend.Close()
	p := proxyTo(t, backend.URL)

	req, _ := http.NewRequest("GET", p.URL+"/?a=1;b=2", nil)
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic x")
	req.Header.Set("Te", "trailers, deflate")
	req.Header.Set("Forwarded", "for=evil")
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("X-Forwarded-Host", "evil")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Kept", "yes")
	req.Header["User-Agent"] = nil // none
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	var got []string
	for k, v := range seen {
		got = append(got, k+"="+strings.Join(v, ","))
	}
	sort.Strings(got)
	want := []string{"Accept-Encoding=gzip", "Te=trailers", "X-Kept=yes"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers the backend saw (-want +got):\n%s", diff)
	}
	if seenQuery != "" {
		t.Errorf("unparsable query passed on as %q, want it dropped", seenQuery)
	}
}

func TestResponsePassedOn(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/trailers":
			h.Set("Trailer", "Grpc-Status")
			h.Set("Content-Type", "application/grpc")
			io.WriteString(w, "message")
			h.Set("Grpc-Status", "0")
			h.Set(http.TrailerPrefix+"Undeclared", "late")
		case "/hints":
			h.Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			io.WriteString(w, "body")
		case "/hop":
			h.Set("Connection", "X-Hop")
			h.Set("X-Hop", "dropped")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("X-Kept", "yes")
		}
	}))
	defer backend.Close()
	p := proxyTo(t, backend.URL)

	t.Run("trailers", func(t *testing.T) {
		res, err := http.Get(p.URL + "/trailers")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "message" {
			t.Fatalf("body %q", b)
		}
		want := http.Header{"Grpc-Status": {"0"}, "Undeclared": {"late"}}
		if diff := cmp.Diff(want, res.Trailer); diff != "" {
			t.Errorf("trailers (-want +got):\n%s", diff)
		}
	})
	t.Run("1xx relayed", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /hints HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(conn)
		first, _ := br.ReadString('\n')
		if !strings.HasPrefix(first, "HTTP/1.1 103") {
			t.Fatalf("first status line %q, want 103", first)
		}
	})
	t.Run("hop-by-hop", func(t *testing.T) {
		res, err := http.Get(p.URL + "/hop")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.Header.Get("X-Hop") != "" || res.Header.Get("Keep-Alive") != "" || res.Header.Get("X-Kept") != "yes" {
			t.Fatalf("header %v", res.Header)
		}
	})
}

func TestStreamingResponseFlushesEachWrite(t *testing.T) {
	next := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "data: two\n\n")
	}))
	defer backend.Close()
	defer close(next)
	p := proxyTo(t, backend.URL)
	res, err := http.Get(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	// The first event arrives while the backend still holds the second:
	// it was not held back in a buffer.
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("read %q, %v", line, err)
	}
}

func TestBrokenBodyAbortsTheResponse(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "only part")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer backend.Close()
	p := proxyTo(t, backend.URL)
	res, err := http.Get(p.URL)
	if err != nil {
		return // cut before the header went out
	}
	defer res.Body.Close()
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Fatal("the client read a whole body; want it cut short")
	}
}

func TestInvalidUpgradeIsRefused(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "web\x01socket")
	if _, err := forward.NewExchange(httptest.NewRecorder(), r); err == nil {
		t.Fatal("NewExchange accepted an unprintable protocol name")
	}
}
