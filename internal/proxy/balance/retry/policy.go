package retry

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Code is a gRPC status code.
type Code uint32

// gRPC status codes (google.golang.org/grpc/codes).
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

// DefaultMaxAttempts is the number of attempts a request gets, the first
// included, when Policy.MaxAttempts is zero.
const DefaultMaxAttempts = 3

// NoDeadline is the remaining time of a request without a deadline.
const NoDeadline = time.Duration(math.MaxInt64)

var (
	defaultHTTPStatuses = []int{502, 503, 504}
	defaultGRPCCodes    = []Code{Unavailable}
)

// Policy says which failed attempts are tried again. The zero value gives
// the defaults.
type Policy struct {
	// MaxAttempts bounds the attempts of one request, the first included.
	// Zero means DefaultMaxAttempts; 1 turns retries off.
	MaxAttempts int
	// HTTPStatuses are the answers after which an idempotent HTTP request
	// is retried. Nil means 502, 503 and 504: the answer of a gateway
	// that could not reach the app, or of an app that says it is
	// momentarily unable to answer. An empty non-nil list retries on no
	// status.
	HTTPStatuses []int
	// GRPCCodes are the statuses after which a gRPC request is retried,
	// whatever its method. Nil means UNAVAILABLE only: the status gRPC
	// defines as transient and that proxies answer when they could not
	// reach the app. RESOURCE_EXHAUSTED is not in it: it usually means an
	// overloaded server or a spent quota, which retrying makes worse. An
	// empty non-nil list retries on no status.
	GRPCCodes []Code
	// Backoff spaces the retries out.
	Backoff Backoff
}

// Validate reports a setting out of range.
func (p *Policy) Validate() error {
	if p.MaxAttempts < 0 {
		return fmt.Errorf("retry: negative max attempts %d", p.MaxAttempts)
	}
	for _, s := range p.HTTPStatuses {
		if s < 100 || s > 599 {
			return fmt.Errorf("retry: HTTP status %d is not within 100..599", s)
		}
	}
	for _, c := range p.GRPCCodes {
		if c == OK || c > Unauthenticated {
			return fmt.Errorf("retry: gRPC status %d is not a failure", c)
		}
	}
	return p.Backoff.Validate()
}

// Request is what a Policy needs to know about a request.
type Request struct {
	// Method is the HTTP method.
	Method string
	// GRPC is true for a gRPC request (Content-Type application/grpc).
	GRPC bool
	// Body is the request's replayable body; nil for a request without
	// a body.
	Body *Replay
}

// Result is how one attempt ended. The zero value is an attempt that was
// answered without a status, which is never retried.
type Result struct {
	// NotSent is true when the attempt failed before a byte of the
	// request reached the peer: a tunnel that could not be established,
	// a stream the peer refused (REFUSED_STREAM, or GOAWAY before the
	// stream). Any request may be sent again then.
	NotSent bool
	// Broken is true when the attempt failed without an answer after the
	// request may have reached the peer: a reset stream, a lost
	// connection, the attempt's own timeout.
	Broken bool
	// Status is the HTTP status of the answer.
	Status int
	// GRPCStatus is the grpc-status of the answer, "" without one. Only a
	// trailers-only answer carries it before the answer is committed to
	// the app, so only such an answer can be retried.
	GRPCStatus string
}

// Failed reports whether the result says the endpoint failed, for the
// balancer and outlier detection: no answer, a 5xx answer, or a gRPC
// status that says the server broke (UNKNOWN, INTERNAL, UNAVAILABLE,
// DATA_LOSS).
func (r Result) Failed() bool {
	switch {
	case r.NotSent || r.Broken:
		return true
	case r.GRPCStatus != "":
		switch parseCode(r.GRPCStatus) {
		case Unknown, Internal, Unavailable, DataLoss:
			return true
		}
		return false
	default:
		return r.Status >= 500
	}
}

// Verdict is a Policy's decision about a failed attempt. Its String is
// fit for a metric label.
type Verdict uint8

// Verdicts.
const (
	// Answered: the attempt ended in an answer no retry condition names.
	Answered Verdict = iota
	// Retry: send the request again.
	Retry
	// NotRetryable: a failure this request may not be retried after,
	// such as a POST whose stream broke or that was answered 503.
	NotRetryable
	// NotReplayable: the request would be retried, but its body was
	// consumed beyond what Replay keeps.
	NotReplayable
	// Exhausted: the request had its MaxAttempts.
	Exhausted
	// NoTime: the backoff would outlast the request's deadline.
	NoTime
	// OverBudget: the retry budget is spent.
	OverBudget
)

var verdictNames = [...]string{
	Answered:      "answered",
	Retry:         "retry",
	NotRetryable:  "not_retryable",
	NotReplayable: "body_not_replayable",
	Exhausted:     "attempts_exhausted",
	NoTime:        "deadline",
	OverBudget:    "budget_exhausted",
}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// IdempotentMethod reports whether an HTTP method is idempotent (RFC 9110,
// section 9.2.2): GET, HEAD, OPTIONS, TRACE, PUT and DELETE.
func IdempotentMethod(m string) bool {
	switch m {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// Classify says whether an attempt that ended in res may be retried,
// leaving aside attempts, deadline and budget (see Next).
func (p *Policy) Classify(req Request, res Result) Verdict {
	switch {
	case res.NotSent:
	case res.Broken:
		if req.GRPC || !IdempotentMethod(req.Method) {
			return NotRetryable
		}
	case req.GRPC:
		code, ok := grpcCode(res)
		if !ok || !slices.Contains(p.grpcCodes(), code) {
			return Answered
		}
	default:
		if !slices.Contains(p.httpStatuses(), res.Status) {
			return Answered
		}
		if !IdempotentMethod(req.Method) {
			return NotRetryable
		}
	}
	if req.Body != nil && !req.Body.Replayable() {
		return NotReplayable
	}
	return Retry
}

// Next decides about attempt n of a request (1 for the first) that ended
// in res, with remaining time before the request's deadline (NoDeadline
// without one). On Retry it has withdrawn the retry from budget, and
// returns how long to wait first: nothing after a request that was not
// sent, since the next attempt goes to another endpoint, else the backoff.
func (p *Policy) Next(budget *Budget, n int, req Request, res Result, remaining time.Duration) (time.Duration, Verdict) {
	if v := p.Classify(req, res); v != Retry {
		return 0, v
	}
	if n >= p.maxAttempts() {
		return 0, Exhausted
	}
	var delay time.Duration
	if !res.NotSent {
		delay = p.Backoff.Delay(n)
	}
	if delay >= remaining {
		return 0, NoTime
	}
	if !budget.TryWithdraw() {
		return 0, OverBudget
	}
	return delay, Retry
}

func (p *Policy) maxAttempts() int {
	if p.MaxAttempts == 0 {
		return DefaultMaxAttempts
	}
	return p.MaxAttempts
}

func (p *Policy) httpStatuses() []int {
	if p.HTTPStatuses == nil {
		return defaultHTTPStatuses
	}
	return p.HTTPStatuses
}

func (p *Policy) grpcCodes() []Code {
	if p.GRPCCodes == nil {
		return defaultGRPCCodes
	}
	return p.GRPCCodes
}

// grpcCode returns the gRPC status of an answer: its grpc-status, or,
// without one, what gRPC makes of the HTTP status (gRPC's
// http-grpc-status-mapping). An answer 200 without grpc-status has its
// status in trailers: it is committed, and false.
func grpcCode(res Result) (Code, bool) {
	if res.GRPCStatus != "" {
		return parseCode(res.GRPCStatus), true
	}
	switch res.Status {
	case 200, 0:
		return 0, false
	case 400:
		return Internal, true
	case 401:
		return Unauthenticated, true
	case 403:
		return PermissionDenied, true
	case 404:
		return Unimplemented, true
	case 429, 502, 503, 504:
		return Unavailable, true
	}
	return Unknown, true
}

// parseCode reads a grpc-status value; what does not parse is UNKNOWN, as
// gRPC clients take it.
func parseCode(s string) Code {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return Unknown
	}
	return Code(n)
}
