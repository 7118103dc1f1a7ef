package retry

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestIdempotentMethod(t *testing.T) {
	for _, m := range []string{"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"} {
		if !IdempotentMethod(m) {
			t.Errorf("%s: not idempotent", m)
		}
	}
	for _, m := range []string{"POST", "PATCH", "CONNECT", "get", "", "PROPFIND"} {
		if IdempotentMethod(m) {
			t.Errorf("%q: idempotent", m)
		}
	}
}

// consumed returns a Replay whose first attempt read n bytes of a body
// of n bytes, with a limit of limit.
func consumed(t *testing.T, n, limit int) *Replay {
	t.Helper()
	r := NewReplay(io.NopCloser(strings.NewReader(strings.Repeat("x", n))), limit)
	body, _ := r.Rewind()
	if _, err := io.Copy(io.Discard, body); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestClassify(t *testing.T) {
	replayable := consumed(t, 100, 1000)
	spent := consumed(t, 2000, 1000)
	var (
		get    = Request{Method: "GET"}
		put    = Request{Method: "PUT", Body: replayable}
		putBig = Request{Method: "PUT", Body: spent}
		post   = Request{Method: "POST", Body: replayable}
		grpc   = Request{Method: "POST", GRPC: true, Body: replayable}
	)
	custom := Policy{HTTPStatuses: []int{500, 429}, GRPCCodes: []Code{Unavailable, ResourceExhausted}}
	none := Policy{HTTPStatuses: []int{}, GRPCCodes: []Code{}}
	tests := []struct {
		name string
		p    Policy
		req  Request
		res  Result
		want Verdict
	}{
		{"GET answered 200", Policy{}, get, Result{Status: 200}, Answered},
		{"GET answered 404", Policy{}, get, Result{Status: 404}, Answered},
		{"GET answered 500", Policy{}, get, Result{Status: 500}, Answered},
		{"GET answered 502", Policy{}, get, Result{Status: 502}, Retry},
		{"GET answered 503", Policy{}, get, Result{Status: 503}, Retry},
		{"GET answered 504", Policy{}, get, Result{Status: 504}, Retry},
		{"GET broken", Policy{}, get, Result{Broken: true}, Retry},
		{"GET not sent", Policy{}, get, Result{NotSent: true}, Retry},
		{"PUT broken", Policy{}, put, Result{Broken: true}, Retry},
		{"PUT broken, body spent", Policy{}, putBig, Result{Broken: true}, NotReplayable},
		{"PUT not sent, body spent", Policy{}, putBig, Result{NotSent: true}, NotReplayable},
		{"PUT answered 200, body spent", Policy{}, putBig, Result{Status: 200}, Answered},
		{"POST not sent", Policy{}, post, Result{NotSent: true}, Retry},
		{"POST broken", Policy{}, post, Result{Broken: true}, NotRetryable},
		{"POST answered 503", Policy{}, post, Result{Status: 503}, NotRetryable},
		{"POST answered 201", Policy{}, post, Result{Status: 201}, Answered},
		{"PATCH answered 503", Policy{}, Request{Method: "PATCH"}, Result{Status: 503}, NotRetryable},
		{"custom statuses: 500", custom, get, Result{Status: 500}, Retry},
		{"custom statuses: 503", custom, get, Result{Status: 503}, Answered},
		{"no statuses: 503", none, get, Result{Status: 503}, Answered},
		{"no statuses: still not sent", none, post, Result{NotSent: true}, Retry},

		{"gRPC UNAVAILABLE", Policy{}, grpc, Result{Status: 200, GRPCStatus: "14"}, Retry},
		{"gRPC RESOURCE_EXHAUSTED", Policy{}, grpc, Result{Status: 200, GRPCStatus: "8"}, Answered},
		{"gRPC INTERNAL", Policy{}, grpc, Result{Status: 200, GRPCStatus: "13"}, Answered},
		{"gRPC OK", Policy{}, grpc, Result{Status: 200, GRPCStatus: "0"}, Answered},
		{"gRPC garbage status is UNKNOWN", Policy{}, grpc, Result{Status: 200, GRPCStatus: "x"}, Answered},
		{"gRPC streaming answer", Policy{}, grpc, Result{Status: 200}, Answered},
		{"gRPC over 503 without status", Policy{}, grpc, Result{Status: 503}, Retry},
		{"gRPC over 429 without status", Policy{}, grpc, Result{Status: 429}, Retry},
		{"gRPC over 500 without status is UNKNOWN", Policy{}, grpc, Result{Status: 500}, Answered},
		{"gRPC over 404 without status", Policy{}, grpc, Result{Status: 404}, Answered},
		{"gRPC broken", Policy{}, grpc, Result{Broken: true}, NotRetryable},
		{"gRPC not sent", Policy{}, grpc, Result{NotSent: true}, Retry},
		{"gRPC custom RESOURCE_EXHAUSTED", custom, grpc, Result{Status: 200, GRPCStatus: "8"}, Retry},
		{"gRPC no codes", none, grpc, Result{Status: 200, GRPCStatus: "14"}, Answered},
		{"gRPC UNAVAILABLE, body spent", Policy{}, Request{Method: "POST", GRPC: true, Body: spent}, Result{GRPCStatus: "14"}, NotReplayable},
		{"zero result", Policy{}, get, Result{}, Answered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Classify(tt.req, tt.res); got != tt.want {
				t.Errorf("Classify = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNext(t *testing.T) {
	get := Request{Method: "GET"}
	fixed := func() uint64 { return 1<<63 + 7 } // a fixed draw
	draw := func(ceiling time.Duration) time.Duration { return time.Duration((1<<63 + 7) % uint64(ceiling)) }
	tests := []struct {
		name      string
		p         Policy
		budget    BudgetConfig
		n         int
		res       Result
		remaining time.Duration
		want      Verdict
		delay     time.Duration
	}{
		{"first retry", Policy{}, BudgetConfig{}, 1, Result{Status: 503}, NoDeadline, Retry, draw(25 * time.Millisecond)},
		{"second retry", Policy{}, BudgetConfig{}, 2, Result{Status: 503}, NoDeadline, Retry, draw(50 * time.Millisecond)},
		{"not sent: at once", Policy{}, BudgetConfig{}, 1, Result{NotSent: true}, NoDeadline, Retry, 0},
		{"attempts exhausted", Policy{}, BudgetConfig{}, 3, Result{Status: 503}, NoDeadline, Exhausted, 0},
		{"more attempts", Policy{MaxAttempts: 5}, BudgetConfig{}, 4, Result{Status: 503}, NoDeadline, Retry, draw(200 * time.Millisecond)},
		{"retries off", Policy{MaxAttempts: 1}, BudgetConfig{}, 1, Result{NotSent: true}, NoDeadline, Exhausted, 0},
		{"answered", Policy{}, BudgetConfig{}, 1, Result{Status: 200}, NoDeadline, Answered, 0},
		{"deadline before the backoff ends", Policy{}, BudgetConfig{}, 1, Result{Status: 503}, time.Millisecond, NoTime, 0},
		{"deadline passed", Policy{}, BudgetConfig{}, 1, Result{NotSent: true}, 0, NoTime, 0},
		{"deadline after the backoff", Policy{}, BudgetConfig{}, 1, Result{Status: 503}, time.Second, Retry, draw(25 * time.Millisecond)},
		{"no budget", Policy{}, BudgetConfig{Ratio: -1, MinPerSecond: -1}, 1, Result{NotSent: true}, NoDeadline, OverBudget, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.p.Backoff.Rand = fixed
			c := &clock{}
			b := newBudget(t, c, tt.budget)
			before := b.Available()
			delay, v := tt.p.Next(b, tt.n, get, tt.res, tt.remaining)
			if v != tt.want || delay != tt.delay {
				t.Errorf("Next = %v, %v; want %v, %v", delay, v, tt.delay, tt.want)
			}
			spent := before - b.Available()
			if want := map[bool]int{true: 1, false: 0}[v == Retry]; spent != want {
				t.Errorf("withdrew %d from the budget, want %d", spent, want)
			}
		})
	}
}

func TestResultFailed(t *testing.T) {
	tests := []struct {
		res  Result
		want bool
	}{
		{Result{Status: 200}, false},
		{Result{Status: 404}, false},
		{Result{Status: 429}, false},
		{Result{Status: 500}, true},
		{Result{Status: 503}, true},
		{Result{NotSent: true}, true},
		{Result{Broken: true}, true},
		{Result{Status: 200, GRPCStatus: "0"}, false},
		{Result{Status: 200, GRPCStatus: "5"}, false}, // NOT_FOUND
		{Result{Status: 200, GRPCStatus: "8"}, false}, // RESOURCE_EXHAUSTED
		{Result{Status: 200, GRPCStatus: "2"}, true},  // UNKNOWN
		{Result{Status: 200, GRPCStatus: "13"}, true}, // INTERNAL
		{Result{Status: 200, GRPCStatus: "14"}, true}, // UNAVAILABLE
		{Result{Status: 200, GRPCStatus: "15"}, true}, // DATA_LOSS
		{Result{Status: 200, GRPCStatus: "zz"}, true}, // unparsable: UNKNOWN
		{Result{Status: 503, GRPCStatus: "14"}, true}, // status wins
		{Result{Status: 503, GRPCStatus: "0"}, false}, // status wins
	}
	for _, tt := range tests {
		if got := tt.res.Failed(); got != tt.want {
			t.Errorf("%+v: Failed() = %v, want %v", tt.res, got, tt.want)
		}
	}
}

func TestVerdictString(t *testing.T) {
	want := map[Verdict]string{
		Answered: "answered", Retry: "retry", NotRetryable: "not_retryable", NotReplayable: "body_not_replayable",
		Exhausted: "attempts_exhausted", NoTime: "deadline", OverBudget: "budget_exhausted", 42: "verdict(42)",
	}
	for v, s := range want {
		if v.String() != s {
			t.Errorf("%d: %q, want %q", v, v.String(), s)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		p  Policy
		ok bool
	}{
		{Policy{}, true},
		{Policy{MaxAttempts: 1, HTTPStatuses: []int{500}, GRPCCodes: []Code{Internal}}, true},
		{Policy{MaxAttempts: -1}, false},
		{Policy{HTTPStatuses: []int{99}}, false},
		{Policy{HTTPStatuses: []int{600}}, false},
		{Policy{GRPCCodes: []Code{OK}}, false},
		{Policy{GRPCCodes: []Code{17}}, false},
		{Policy{Backoff: Backoff{Base: -1}}, false},
	}
	for _, tt := range tests {
		if err := tt.p.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: %v, want ok=%v", tt.p, err, tt.ok)
		}
	}
}
