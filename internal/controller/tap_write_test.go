package controller

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A caller that stops reading fails the tap's writes within the write
// timeout, rather than hold the tap open.
func TestTapWriterGivesUpOnAStalledCaller(t *testing.T) {
	failed := make(chan struct{})
	writeErr := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		write := tapWriter(w, 100*time.Millisecond, func() { close(failed) })
		line := TapLine{Type: "request", Path: "/" + strings.Repeat("a", 64<<10)}
		for {
			if err := write(line); err != nil {
				if write(line) == nil {
					t.Error("a write after a failed one succeeded")
				}
				writeErr <- err
				return
			}
		}
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /api/v1/tap HTTP/1.1\r\nHost: controller\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Read the header, then stop reading.
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-failed:
	case <-time.After(20 * time.Second):
		t.Fatal("writes to a caller that stopped reading still block after 20s")
	}
	if err := <-writeErr; err == nil {
		t.Fatal("no write error")
	}
}
