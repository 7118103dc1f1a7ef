package accesslog

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rampart-mesh/rampart/internal/proxy/tracing"
)

func decode(t *testing.T, line []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	return m
}

func TestLogLine(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name  string
		entry Entry
		want  map[string]any
	}{{
		name: "refused",
		entry: Entry{
			Start: start, Direction: "inbound", Method: "POST", Path: "/orders",
			Status: 403, Duration: 1500 * time.Microsecond, RequestBytes: 12, ResponseBytes: -1,
			Source: "spiffe://t/ns/a/sa/web", Destination: "spiffe://t/ns/a/sa/api",
			TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Decision: DecisionDeny, DecisionID: "0123456789ab",
		},
		want: map[string]any{
			"time": "2026-01-02T03:04:05Z", "msg": Message, "direction": "inbound", "method": "POST",
			"path": "/orders", "status": 403.0, "duration_seconds": 0.0015, "request_bytes": 12.0,
			"source": "spiffe://t/ns/a/sa/web", "destination": "spiffe://t/ns/a/sa/api",
			"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "decision": "deny", "decision_id": "0123456789ab",
		},
	}, {
		name: "broken off, no peer, no trace",
		entry: Entry{
			Start: start, Direction: "outbound", Method: "GET", Path: "/",
			RequestBytes: -1, ResponseBytes: 0, Source: "spiffe://t/ns/a/sa/web",
		},
		want: map[string]any{
			"time": "2026-01-02T03:04:05Z", "msg": Message, "direction": "outbound", "method": "GET",
			"path": "/", "status": 0.0, "duration_seconds": 0.0, "response_bytes": 0.0,
			"source": "spiffe://t/ns/a/sa/web", "destination": "", "error": "the response broke off",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			New(&buf).Log(&tt.entry)
			if strings.Count(buf.String(), "\n") != 1 {
				t.Fatalf("want one line, got %q", buf.String())
			}
			if diff := cmp.Diff(tt.want, decode(t, buf.Bytes())); diff != "" {
				t.Errorf("line (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLogCutsPath(t *testing.T) {
	var buf bytes.Buffer
	New(&buf).Log(&Entry{Path: "/" + strings.Repeat("x", 2000)})
	if got := decode(t, buf.Bytes())["path"].(string); len(got) != tracing.MaxPathBytes {
		t.Errorf("path of %d bytes logged, want %d", len(got), tracing.MaxPathBytes)
	}
}

func TestNilLoggerLogsNothing(t *testing.T) {
	var l *Logger
	l.Log(&Entry{Path: "/"}) // must not panic
}

// lines records each Write.
type lines struct {
	mu     sync.Mutex
	writes []string
}

func (l *lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, string(b))
	return len(b), nil
}

func TestOneWritePerLine(t *testing.T) {
	var w lines
	l := New(&w)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { l.Log(&Entry{Path: "/" + strings.Repeat("p", i), Status: 200}) })
	}
	wg.Wait()
	if len(w.writes) != 50 {
		t.Fatalf("%d writes for 50 lines", len(w.writes))
	}
	for _, s := range w.writes {
		if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
			t.Fatalf("write %q is not one whole line", s)
		}
		decode(t, []byte(s))
	}
}

func TestDecision(t *testing.T) {
	const abc = "0a1b2c3d4e5f" // as a proxy writes it
	id := http.Header{HeaderDecisionID: {abc}}
	grpc := func(code string) http.Header {
		return http.Header{HeaderDecisionID: {abc}, "Grpc-Status": {code}}
	}
	tests := []struct {
		status           int
		h                http.Header
		decision, wantID string
	}{
		{200, http.Header{}, "", ""},
		{403, http.Header{}, "", ""}, // the app's own 403
		{403, id, DecisionDeny, abc},
		{429, id, DecisionRateLimited, abc},
		{400, id, DecisionInvalid, abc},
		{200, grpc("7"), DecisionDeny, abc},
		{200, grpc("8"), DecisionRateLimited, abc},
		{200, grpc("3"), DecisionInvalid, abc},
		// Not as a proxy writes it: not a decision.
		{403, http.Header{HeaderDecisionID: {"abc"}}, "", ""},
		{403, http.Header{HeaderDecisionID: {"0A1B2C3D4E5F"}}, "", ""},
		{403, http.Header{HeaderDecisionID: {"0a1b2c3d4e5g"}}, "", ""},
		{403, http.Header{HeaderDecisionID: {abc + "0"}}, "", ""},
		{403, http.Header{HeaderDecisionID: {"\x1b[31m0a1b2c3"}}, "", ""},
		{403, http.Header{HeaderDecisionID: {abc, abc}}, "", ""},
	}
	for _, tt := range tests {
		d, gotID := Decision(tt.status, tt.h)
		if d != tt.decision || gotID != tt.wantID {
			t.Errorf("Decision(%d, %v) = %q, %q; want %q, %q", tt.status, tt.h, d, gotID, tt.decision, tt.wantID)
		}
	}
}

func TestResponseBytes(t *testing.T) {
	tests := []struct {
		v    []string
		want int64
	}{
		{nil, -1},
		{[]string{"0"}, 0},
		{[]string{"1234"}, 1234},
		{[]string{""}, -1},
		{[]string{"-1"}, -1},
		{[]string{"12a"}, -1},
		{[]string{"1", "1"}, -1},
		{[]string{"99999999999999999999999"}, -1},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.v != nil {
			h["Content-Length"] = tt.v
		}
		if got := ResponseBytes(h); got != tt.want {
			t.Errorf("ResponseBytes(%q) = %d, want %d", tt.v, got, tt.want)
		}
	}
}
