package inbound

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rampart-mesh/rampart/internal/authz"
	"github.com/rampart-mesh/rampart/internal/authz/bypasstable"
	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// denyAdmin is the policy the bypass table is written against, for
// plaintext callers from loopback: everything is allowed but /admin*,
// /api/admin/**, the host admin.shop, and GET on /reports.
func denyAdmin() *authz.WorkloadPolicy {
	p := permissive(fromLoopback)
	p.Policies = append(p.Policies, authz.Policy{Namespace: "legacy", Name: "deny-admin", Action: authz.ActionDeny, Rules: []authz.Rule{
		{To: []authz.Operation{{Paths: []string{"/admin*", "/api/admin/**"}}}},
		{To: []authz.Operation{{Hosts: []string{"admin.shop"}}}},
		{To: []authz.Operation{{Methods: []string{"GET"}, Paths: []string{"/reports"}}}},
	}})
	return p
}

// TestPlaintextReplaysBypasses sends the advisory table, and the request
// shapes that the old sniffer let through as opaque, to the plaintext
// HTTP/1 and h2c servers of an Auto port: none of them may reach the app.
func TestPlaintextReplaysBypasses(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run("h2c="+strconv.FormatBool(h2c), func(t *testing.T) {
			app := newApp(t, h2c)
			s := newPlaintextServer(t, 0)
			s.dst.Store(uint32(app.port))
			s.h.SetConfig([]*meshv1.InboundPort{{Port: uint32(app.port), Protocol: meshv1.Protocol_PROTOCOL_AUTO}}, compile(t, denyAdmin(), nil))
			send := func(method, target, host string, extra ...string) int {
				if h2c {
					return h2cRequest(t, s.addr, method, target, host, extra...)
				}
				raw := method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n"
				for i := 0; i+1 < len(extra); i += 2 {
					raw += extra[i] + ": " + extra[i+1] + "\r\n"
				}
				return h1Request(t, s.addr, raw+"\r\n")
			}
			refused := func(what string, status int) {
				t.Helper()
				if status == http.StatusOK {
					t.Errorf("%s: 200, want a refusal", what)
				}
			}
			for _, target := range bypasstable.Targets() {
				start := time.Now()
				refused(target, send("GET", target, "orders"))
				if d := time.Since(start); d > time.Second {
					t.Logf("%q took %v", target, d)
				}
			}
			refused("absolute form, another Host", send("GET", "http://admin.shop/x", "orders"))
			// OPTIONS * is answered by the proxy's own server (as net/http
			// does), or refused: it never reaches the app.
			send("OPTIONS", "*", "orders")
			refused("lower-case method", send("get", "/admin", "orders"))
			refused("unknown method", send("PROPFIND", "/admin", "orders"))
			refused("method with a lower-case letter", send("GeT", "/x", "orders"))
			refused("GET on /reports", send("GET", "/reports", "orders"))
			if !h2c {
				refused("leading CRLF", h1Request(t, s.addr, "\r\nGET /admin HTTP/1.1\r\nHost: orders\r\n\r\n"))
				refused("leading CRLF, lower case", h1Request(t, s.addr, "\r\n\r\nget /x HTTP/1.1\r\nHost: orders\r\n\r\n"))
			}
			if n := app.hits.Load(); n != 0 {
				t.Fatalf("the app was reached %d times", n)
			}
			// What the rules allow reaches the app, without the forged
			// identity and its underscore lookalike. A DENY on GET does
			// not cover HEAD.
			if got := send("HEAD", "/reports", "orders", "rampart-client-id", "spiffe://x/ns/a/sa/b", "rampart_client_id", "spiffe://x/ns/a/sa/b"); got != http.StatusOK {
				t.Fatalf("HEAD /reports: %d, want 200 (a DENY on GET does not cover HEAD)", got)
			}
			if n := app.hits.Load(); n != 1 {
				t.Fatalf("the app was reached %d times, want 1", n)
			}
		})
	}
}

// h1Request writes raw to addr and returns the response's status, or 0 if
// there is none.
func h1Request(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	req := &http.Request{Method: http.MethodGet}
	if strings.HasPrefix(raw, "HEAD ") {
		req.Method = http.MethodHead
	}
	res, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// h2cRequest sends one request with raw pseudo-header values over h2c with
// prior knowledge (no client-side validation) and returns the response's
// status, or 0 if the stream or connection was reset.
func h2cRequest(t *testing.T, addr, method, path, authority string, extra ...string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	fields := []string{":method", method, ":scheme", "http", ":path", path, ":authority", authority}
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				n, _ := strconv.Atoi(f.PseudoValue("status"))
				return n
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			return 0
		}
	}
}
