package tap

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

const (
	self   = "spiffe://td/ns/shop/sa/web"
	client = "spiffe://td/ns/shop/sa/checkout"
)

func start(id string, f *meshv1.TapFilter, maxEvents uint32, d time.Duration) *meshv1.TapCommand {
	return &meshv1.TapCommand{Id: id, Filter: f, MaxEvents: maxEvents, Duration: durationpb.New(d)}
}

func TestFromProtoNamesTheField(t *testing.T) {
	ok := start("ab12", &meshv1.TapFilter{Method: "GET", PathPrefix: "/api/", Source: client, StatusClass: 2}, 10, time.Minute)
	if s, err := FromProto(ok); err != nil {
		t.Fatalf("valid command refused: %v", err)
	} else if s.Filter != (Filter{Method: "GET", PathPrefix: "/api/", Source: client, StatusClass: 2}) || s.MaxEvents != 10 || s.Duration != time.Minute {
		t.Fatalf("spec %+v", s)
	}
	for _, tc := range []struct {
		name, field string
		cmd         *meshv1.TapCommand
	}{
		{"no id", "id", start("", nil, 1, time.Second)},
		{"id not hex", "id", start("XYZ", nil, 1, time.Second)},
		{"id too long", "id", start(strings.Repeat("a", 65), nil, 1, time.Second)},
		{"lower-case method", "filter.method", start("a", &meshv1.TapFilter{Method: "get"}, 1, time.Second)},
		{"method with a space", "filter.method", start("a", &meshv1.TapFilter{Method: "GE T"}, 1, time.Second)},
		{"relative path", "filter.path_prefix", start("a", &meshv1.TapFilter{PathPrefix: "api"}, 1, time.Second)},
		{"path with a query", "filter.path_prefix", start("a", &meshv1.TapFilter{PathPrefix: "/a?b"}, 1, time.Second)},
		{"source not a SPIFFE ID", "filter.source", start("a", &meshv1.TapFilter{Source: "web"}, 1, time.Second)},
		{"status class 6", "filter.status_class", start("a", &meshv1.TapFilter{StatusClass: 6}, 1, time.Second)},
		{"no events", "max_events", start("a", nil, 0, time.Second)},
		{"too many events", "max_events", start("a", nil, MaxEvents+1, time.Second)},
		{"no duration", "duration", &meshv1.TapCommand{Id: "a", MaxEvents: 1}},
		{"too long", "duration", start("a", nil, 1, MaxDuration+time.Second)},
		{"negative", "duration", start("a", nil, 1, -time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromProto(tc.cmd)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}

func TestFilterMatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		f      Filter
		method string
		path   string
		src    string
		status int
		want   bool
	}{
		{"empty matches any", Filter{}, "PUT", "/x", "", 503, true},
		{"method", Filter{Method: "GET"}, "GET", "/", client, 200, true},
		{"other method", Filter{Method: "GET"}, "POST", "/", client, 200, false},
		{"prefix", Filter{PathPrefix: "/api/"}, "GET", "/api/v1", client, 200, true},
		{"not the prefix", Filter{PathPrefix: "/api/"}, "GET", "/apix", client, 200, false},
		{"source", Filter{Source: client}, "GET", "/", client, 200, true},
		{"other source", Filter{Source: client}, "GET", "/", self, 200, false},
		{"no source", Filter{Source: client}, "GET", "/", "", 200, false},
		{"status class", Filter{StatusClass: 5}, "GET", "/", client, 503, true},
		{"other status class", Filter{StatusClass: 5}, "GET", "/", client, 404, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Match(tc.method, tc.path, tc.src, tc.status); got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func newTapper(t *testing.T, cfg Config) *Tapper {
	t.Helper()
	cfg.Conn = func() grpc.ClientConnInterface { return nil }
	cfg.Workload, cfg.Self = "web-1", self
	tp, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func request(t *testing.T) (*http.Request, http.Header) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://web.shop/api/orders?card=4111", nil)
	r.Header.Set("Authorization", "Bearer secret-token")
	r.Header.Set("Cookie", "session=secret")
	r.Header.Set("User-Agent", "shop-client/1.0")
	r.Header.Set("Content-Type", "application/json")
	return r, http.Header{"Content-Type": {"text/plain"}, "Set-Cookie": {"id=secret"}}
}

func TestObserveSendsHeadsWithoutSecrets(t *testing.T) {
	tp := newTapper(t, Config{})
	tp.command(start("01", &meshv1.TapFilter{Method: "POST"}, 10, time.Minute))
	if !tp.Active() {
		t.Fatal("tap not active after its start command")
	}
	r, h := request(t)
	tp.Observe(true, client, r, h, 201, 3*time.Millisecond)
	get := r.Clone(r.Context())
	get.Method = http.MethodGet
	tp.Observe(true, client, get, h, 200, time.Millisecond) // filtered out
	if n := len(tp.out); n != 1 {
		t.Fatalf("%d events queued, want 1", n)
	}
	ev := <-tp.out
	req := ev.GetRequest()
	if ev.GetTapId() != "01" || req.GetDirection() != meshv1.Direction_DIRECTION_INBOUND || req.GetMethod() != "POST" ||
		req.GetAuthority() != "web.shop" || req.GetPath() != "/api/orders" || req.GetSource() != client ||
		req.GetDestination() != self || req.GetStatus() != 201 || req.GetDuration().AsDuration() != 3*time.Millisecond {
		t.Fatalf("event %v", ev)
	}
	values := map[string]string{}
	for _, hd := range append(req.GetRequestHeaders(), req.GetResponseHeaders()...) {
		values[hd.GetName()] += hd.GetValue()
	}
	want := map[string]string{"Authorization": "", "Cookie": "", "User-Agent": "shop-client/1.0",
		"Content-Type": "application/jsontext/plain", "Set-Cookie": ""}
	for k, v := range want {
		got, ok := values[k]
		if !ok || got != v {
			t.Errorf("header %s: got %q (present %v), want %q", k, got, ok, v)
		}
	}
	for _, hd := range req.GetRequestHeaders() {
		if strings.Contains(hd.GetValue(), "secret") {
			t.Errorf("secret value sent: %s: %s", hd.GetName(), hd.GetValue())
		}
	}
}

func TestObserveOutboundSides(t *testing.T) {
	tp := newTapper(t, Config{})
	tp.command(start("02", &meshv1.TapFilter{Source: self}, 10, time.Minute))
	r, h := request(t)
	tp.Observe(false, client, r, h, 200, 0)
	ev := <-tp.out
	if ev.GetRequest().GetSource() != self || ev.GetRequest().GetDestination() != client ||
		ev.GetRequest().GetDirection() != meshv1.Direction_DIRECTION_OUTBOUND {
		t.Fatalf("event %v", ev)
	}
}

func TestTapBounds(t *testing.T) {
	t.Run("max events ends the tap", func(t *testing.T) {
		tp := newTapper(t, Config{})
		tp.command(start("03", nil, 2, time.Minute))
		r, h := request(t)
		for range 5 {
			tp.Observe(true, client, r, h, 200, 0)
		}
		if n := len(tp.out); n != 2 {
			t.Fatalf("%d events, want 2", n)
		}
		if tp.Active() || tp.ActiveTaps() != 0 {
			t.Fatal("tap still active after its last event")
		}
		if len(tp.finished) != 1 || !tp.finished[0].GetEnded() {
			t.Fatalf("ended event not queued: %v", tp.finished)
		}
	})
	t.Run("rate", func(t *testing.T) {
		now := time.Unix(1000, 0)
		tp := newTapper(t, Config{Rate: 3, Now: func() time.Time { return now }})
		tp.command(start("04", nil, 100, time.Minute))
		r, h := request(t)
		for range 10 {
			tp.Observe(true, client, r, h, 200, 0)
		}
		if n := len(tp.out); n != 3 {
			t.Fatalf("%d events within a burst of 3, want 3", n)
		}
		if got := testutil.ToFloat64(tp.dropped.WithLabelValues(DropRate)); got != 7 {
			t.Fatalf("rate-limited drops %v, want 7", got)
		}
		now = now.Add(time.Second)
		tp.Observe(true, client, r, h, 200, 0)
		if n := len(tp.out); n != 4 {
			t.Fatalf("%d events a second later, want 4", n)
		}
	})
	t.Run("a full queue drops and counts", func(t *testing.T) {
		tp := newTapper(t, Config{QueueSize: 1})
		tp.command(start("05", nil, 100, time.Minute))
		r, h := request(t)
		for range 3 {
			tp.Observe(true, client, r, h, 200, 0)
		}
		if got := testutil.ToFloat64(tp.dropped.WithLabelValues(DropQueue)); got != 2 {
			t.Fatalf("queue drops %v, want 2", got)
		}
	})
	t.Run("taps at once", func(t *testing.T) {
		tp := newTapper(t, Config{MaxTaps: 2})
		for _, id := range []string{"a", "b", "c", "a"} {
			tp.command(start(id, nil, 1, time.Minute))
		}
		if tp.ActiveTaps() != 2 {
			t.Fatalf("%d taps active, want 2", tp.ActiveTaps())
		}
		if got := testutil.ToFloat64(tp.commands.WithLabelValues(CommandTooMany)); got != 2 {
			t.Fatalf("too_many %v, want 2 (one over the bound, one already active)", got)
		}
	})
	t.Run("duration", func(t *testing.T) {
		tp := newTapper(t, Config{})
		tp.command(start("06", nil, 1, 10*time.Millisecond))
		deadline := time.Now().Add(5 * time.Second)
		for tp.Active() {
			if time.Now().After(deadline) {
				t.Fatal("tap still active 5s after its 10ms duration")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Run("stop and invalid commands", func(t *testing.T) {
		tp := newTapper(t, Config{})
		tp.command(start("07", nil, 1, time.Minute))
		tp.command(&meshv1.TapCommand{Id: "07", Stop: true})
		tp.command(start("08", &meshv1.TapFilter{Method: "get"}, 1, time.Minute))
		if tp.Active() {
			t.Fatal("tap active after stop")
		}
		if got := testutil.ToFloat64(tp.commands.WithLabelValues(CommandInvalid)); got != 1 {
			t.Fatalf("invalid %v, want 1", got)
		}
		if len(tp.finished) != 2 || tp.finished[1].GetError() == "" {
			t.Fatalf("ended events %v: want the stop's and the refusal's, with its reason", tp.finished)
		}
	})
}

func TestIdleTapCostsNoAllocation(t *testing.T) {
	var nilTap *Tapper
	tp := newTapper(t, Config{Registerer: prometheus.NewRegistry()})
	r, h := request(t)
	if n := testing.AllocsPerRun(100, func() {
		for _, x := range []*Tapper{nilTap, tp} {
			if x.Active() {
				x.Observe(true, client, r, h, 200, 0)
			}
		}
	}); n != 0 {
		t.Fatalf("%v allocations per request without a tap", n)
	}
}

func TestClip(t *testing.T) {
	if got := clip("abc\xffdef", 100); got != "abc\uFFFDdef" {
		t.Fatalf("clip invalid UTF-8: %q", got)
	}
	if got := clip(strings.Repeat("é", 10), 5); len(got) > 5 || got != "éé" {
		t.Fatalf("clip = %q", got)
	}
	if got := clip("/a\x1b[2J\tb\x7f\u009bc", 100); got != "/a\uFFFD[2J\uFFFDb\uFFFD\uFFFDc" {
		t.Fatalf("clip control characters: %q", got)
	}
	if got := clip("\x1b\x1b", 4); len(got) > 4 || got != "\uFFFD" {
		t.Fatalf("clip of replaced control characters = %q, want one U+FFFD within 4 bytes", got)
	}
}
