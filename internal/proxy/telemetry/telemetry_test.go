package telemetry

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
	"github.com/rampart-mesh/rampart/internal/telemetry/sketch"
)

func TestPathPrefix(t *testing.T) {
	long := "/" + strings.Repeat("é", 100) // 200 bytes
	for _, tc := range []struct{ in, want string }{
		{"/api/v1/orders/7", "/api/v1/orders"},
		{"/api/v1/orders/7?x=1", "/api/v1/orders"},
		{"/api/v1?x=/a/b/c/d", "/api/v1"},
		{"/a/b/c", "/a/b/c"},
		{"/a/b/c/", "/a/b/c"},
		{"/a#frag/b/c/d", "/a"},
		{"/", "/"},
		{"", ""},
		{"*", "*"},
		{"http://evil.example/a/b/c/d", "/"},
		{long, long[:127]}, // cut at a character boundary below 128 bytes
	} {
		if got := PathPrefix(tc.in); got != tc.want {
			t.Errorf("PathPrefix(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMethodIsBounded(t *testing.T) {
	for in, want := range map[string]string{"GET": "GET", "PATCH": "PATCH", "get": "OTHER", "BREW": "OTHER", "": "OTHER"} {
		if got := Method(in); got != want {
			t.Errorf("Method(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCollectSummarizesAndResets(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := NewAggregator(t0)
	out := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_OUTBOUND, PeerIdentity: "spiffe://td/ns/shop/sa/orders", PeerWorkload: "orders-1", Service: "shop/orders", MTLS: true})
	quiet := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_INBOUND, PeerIdentity: "spiffe://td/ns/shop/sa/web", MTLS: true})
	if a.Edge(out.Key()) != out {
		t.Fatal("Edge made a second edge for the same key")
	}
	for i := range 10 {
		out.Request(Request{Method: "GET", Path: fmt.Sprintf("/orders/%d", i), Status: 200, Seconds: 0.001})
	}
	out.Request(Request{Method: "GET", Path: "/orders/1", Status: 503, Seconds: 0.2, Failed: true})
	out.Request(Request{Method: "DELETE", Path: "/orders/1", Status: 403, Seconds: 0.0005, Denied: true})
	out.Request(Request{Method: "POST", Path: "/orders", Status: 429, Seconds: 0.0005, RateLimited: true})
	out.Bytes(100, 2000)

	rep := a.Collect("web-1", t0.Add(5*time.Second), 0)
	if rep.GetWorkload() != "web-1" || !rep.GetStart().AsTime().Equal(t0) || rep.GetInterval().AsDuration() != 5*time.Second {
		t.Errorf("report header %v %v %v", rep.GetWorkload(), rep.GetStart().AsTime(), rep.GetInterval().AsDuration())
	}
	if len(rep.GetEdges()) != 1 {
		t.Fatalf("%d edges, want 1 (the quiet edge left out)", len(rep.GetEdges()))
	}
	e := rep.GetEdges()[0]
	if e.GetRequests() != 13 || e.GetFailures() != 1 || e.GetDenied() != 1 || e.GetRateLimited() != 1 ||
		e.GetBytesSent() != 100 || e.GetBytesReceived() != 2000 || e.GetService() != "shop/orders" || e.GetPeerWorkload() != "orders-1" || !e.GetMtls() {
		t.Errorf("edge %v", e)
	}
	s, err := sketch.Decode(e.GetLatency().GetCounts(), e.GetLatency().GetSumSeconds())
	if err != nil {
		t.Fatal(err)
	}
	if s.Count() != 13 || s.Sum() < 0.2109 || s.Sum() > 0.2111 {
		t.Errorf("latency sketch: %d observations summing to %v, want 13 and 0.211", s.Count(), s.Sum())
	}
	kinds := map[string]uint64{}
	for _, c := range e.GetRequestCounts() {
		kinds[fmt.Sprintf("%s %s %d", c.GetMethod(), c.GetPath(), c.GetStatusClass())] = c.GetCount()
	}
	want := map[string]uint64{"GET /orders/0 2": 1, "GET /orders/1 2": 1, "GET /orders/1 5": 1, "DELETE /orders/1 4": 1, "POST /orders 4": 1}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%s counted %d, want %d (all: %v)", k, kinds[k], n, kinds)
		}
	}
	if len(kinds) != 13 {
		t.Errorf("%d kinds, want 13: %v", len(kinds), kinds)
	}

	// The next interval starts empty.
	quiet.Request(Request{Status: 200, Seconds: -1})
	rep = a.Collect("web-1", t0.Add(10*time.Second), 0)
	if len(rep.GetEdges()) != 1 || rep.GetEdges()[0].GetDirection() != meshv1.Direction_DIRECTION_INBOUND || rep.GetEdges()[0].GetRequests() != 1 {
		t.Fatalf("second interval: %v", rep.GetEdges())
	}
	if n := rep.GetEdges()[0].GetLatency().GetCounts(); len(n) != 0 {
		t.Errorf("a stream without latency observed latencies %v", n)
	}
	if !rep.GetStart().AsTime().Equal(t0.Add(5 * time.Second)) {
		t.Errorf("second interval starts %v", rep.GetStart().AsTime())
	}
}

func TestRequestKindsAreBoundedPerEdge(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_INBOUND})
	for i := range MaxRequestCounts + 36 {
		e.Request(Request{Method: "GET", Path: fmt.Sprintf("/scan/%d/x", i), Status: 404, Seconds: 0.001})
	}
	e.Request(Request{Method: "GET", Path: "/scan/0/x?q=1", Status: 404, Seconds: 0.001}) // a kind already counted, the query aside
	s := a.Collect("w", time.Unix(5, 0), 0).GetEdges()[0]
	if len(s.GetRequestCounts()) != MaxRequestCounts || s.GetRequestsOverflow() != 36 || s.GetRequests() != MaxRequestCounts+37 {
		t.Fatalf("%d kinds, %d overflow, %d requests; want %d, 36, %d", len(s.GetRequestCounts()), s.GetRequestsOverflow(), s.GetRequests(), MaxRequestCounts, MaxRequestCounts+37)
	}
}

func TestInvalidUTF8PathsAreMadeValid(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_INBOUND, PeerIdentity: "spiffe://td/ns/a/sa/\xff"})
	e.Request(Request{Method: "GET", Path: "/a\xff", Status: 200, Seconds: 0.001})
	e.Request(Request{Method: "GET", Path: "/a\xfe", Status: 200, Seconds: 0.001})
	s := a.Collect("w", time.Unix(5, 0), 0).GetEdges()[0]
	if len(s.GetRequestCounts()) != 1 || s.GetRequestCounts()[0].GetPath() != "/a\uFFFD" || s.GetRequestCounts()[0].GetCount() != 2 {
		t.Fatalf("request counts %v, want one /a\uFFFD counted twice", s.GetRequestCounts())
	}
	if s.GetPeerSpiffeId() != "spiffe://td/ns/a/sa/\uFFFD" {
		t.Fatalf("peer %q", s.GetPeerSpiffeId())
	}
}

func TestEdgesPastTheBoundFoldIntoOneOverflowEdge(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	for i := range 10 {
		e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_OUTBOUND, PeerIdentity: fmt.Sprintf("spiffe://td/ns/a/sa/p%d", i), MTLS: true})
		for range 10 - i { // p0 busiest
			e.Request(Request{Method: "GET", Path: "/", Status: 200, Seconds: 0.001})
		}
		e.Bytes(1, 1)
	}
	rep := a.Collect("w", time.Unix(5, 0), 4)
	if len(rep.GetEdges()) != 5 || rep.GetOverflowEdges() != 6 {
		t.Fatalf("%d edges, %d folded; want 5 and 6", len(rep.GetEdges()), rep.GetOverflowEdges())
	}
	for i, e := range rep.GetEdges()[:4] {
		if want := fmt.Sprintf("spiffe://td/ns/a/sa/p%d", i); e.GetPeerSpiffeId() != want || e.GetOverflow() {
			t.Errorf("edge %d is %q (overflow %v), want %q: the busiest are kept", i, e.GetPeerSpiffeId(), e.GetOverflow(), want)
		}
	}
	over := rep.GetEdges()[4]
	// p4..p9 carried 6+5+4+3+2+1 requests.
	if !over.GetOverflow() || over.GetRequests() != 21 || over.GetBytesSent() != 6 || over.GetPeerSpiffeId() != "" ||
		over.GetDirection() != meshv1.Direction_DIRECTION_UNSPECIFIED || len(over.GetRequestCounts()) != 1 || over.GetRequestCounts()[0].GetCount() != 21 {
		t.Fatalf("overflow edge %v", over)
	}
}

func TestCountingIsSafeConcurrentlyWithCollect(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_OUTBOUND})
	const workers, each = 4, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e.Request(Request{Method: "GET", Path: fmt.Sprintf("/w%d/%d", w, i%100), Status: 200, Seconds: 0.001})
				e.Bytes(1, 2)
			}
		}()
	}
	var total, kinds, over, sent uint64
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	collect := func(at int64) {
		for _, s := range a.Collect("w", time.Unix(at, 0), 0).GetEdges() {
			total += s.GetRequests()
			over += s.GetRequestsOverflow()
			sent += s.GetBytesSent()
			for _, c := range s.GetRequestCounts() {
				kinds += c.GetCount()
			}
		}
	}
	for i := int64(1); ; i++ {
		select {
		case <-done:
			collect(i)
			if total != workers*each || kinds+over != workers*each || sent != workers*each {
				t.Fatalf("collected %d requests, %d by kind + %d overflow, %d bytes sent; want %d each", total, kinds, over, sent, workers*each)
			}
			return
		default:
			collect(i)
		}
	}
}

func TestRequestDoesNotAllocate(t *testing.T) {
	a := NewAggregator(time.Unix(0, 0))
	e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_OUTBOUND})
	r := Request{Method: "GET", Path: "/api/v1/orders/7?x=1", Status: 200, Seconds: 0.003}
	e.Request(r)
	if n := testing.AllocsPerRun(1000, func() { e.Request(r); e.Bytes(10, 20) }); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
}

func BenchmarkEdgeRequest(b *testing.B) {
	a := NewAggregator(time.Unix(0, 0))
	e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_OUTBOUND})
	r := Request{Method: "GET", Path: "/api/v1/orders/7", Status: 200, Seconds: 0.003}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.Request(r)
		}
	})
}

// A path of invalid bytes grows when made valid (one byte becomes three):
// what is reported must still be within MaxPathBytes, or the controller
// refuses it.
func TestPathPrefixIsValidAndBoundedAfterReplacement(t *testing.T) {
	for _, in := range []string{
		"/" + strings.Repeat("a\xff", 60),
		"/" + strings.Repeat("\xff", 200),
		"/" + strings.Repeat("\x80", 5000),
		"/" + strings.Repeat("é", 40) + strings.Repeat("\xc3", 100),
		"/ok/" + strings.Repeat("\xe2\x82", 90),
	} {
		got := PathPrefix(in)
		if len(got) > MaxPathBytes || !utf8.ValidString(got) || !strings.HasPrefix(got, "/") {
			t.Errorf("PathPrefix(%q) = %q (%d bytes, valid %v): want at most %d bytes of UTF-8 starting with /",
				in, got, len(got), utf8.ValidString(got), MaxPathBytes)
		}
	}
	a := NewAggregator(time.Unix(0, 0))
	e := a.Edge(EdgeKey{Direction: meshv1.Direction_DIRECTION_INBOUND})
	e.Request(Request{Method: "GET", Path: "/" + strings.Repeat("a\xff", 60), Status: 403, Seconds: -1})
	for _, rc := range a.Collect("w", time.Unix(5, 0), 0).GetEdges()[0].GetRequestCounts() {
		if len(rc.GetPath()) > MaxPathBytes {
			t.Fatalf("reported path of %d bytes, want at most %d", len(rc.GetPath()), MaxPathBytes)
		}
	}
}
