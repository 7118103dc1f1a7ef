package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runTool runs a load generator to completion and returns its standard
// output; a failure quotes what it printed.
func runTool(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%s: %w\n%s%s", strings.Join(argv, " "), err, truncate(string(out), 2000), truncate(stderr.String(), 2000))
	}
	return out, nil
}

// wrkResult is what wrk reports of a run at saturation.
type wrkResult struct {
	Requests     int64   `json:"requests"`
	Seconds      float64 `json:"seconds"`
	RPS          float64 `json:"rps"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	Non2xx       int64   `json:"non_2xx"`
	SocketErrors int64   `json:"socket_errors"`
}

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)\b`)
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s*([0-9.]+)`)
	wrkPct      = regexp.MustCompile(`(?m)^\s*(50|75|90|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s*(\d+)`)
	wrkSocket   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads the output of `wrk --latency`.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no \"N requests in T\" line in its output:\n%s", truncate(out, 1000))
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.Seconds = durationIn(m[2], m[3], time.Second)
	m = wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no Requests/sec line in its output:\n%s", truncate(out, 1000))
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	pcts := wrkPct.FindAllStringSubmatch(out, -1)
	for _, p := range pcts {
		ms := durationIn(p[2], p[3], time.Millisecond)
		switch p[1] {
		case "50":
			r.P50Ms = ms
		case "99":
			r.P99Ms = ms
		}
	}
	if len(pcts) == 0 {
		return r, errors.New("wrk: no latency distribution in its output: run it with --latency")
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.SocketErrors += n
		}
	}
	return r, nil
}

// durationIn converts wrk's "<number><unit>" into units of unit.
func durationIn(num, suffix string, unit time.Duration) float64 {
	v, _ := strconv.ParseFloat(num, 64)
	scale := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[suffix]
	return v * float64(scale) / float64(unit)
}

// fortioResult is what the benchmark takes from `fortio load -json`.
type fortioResult struct {
	Requests  int64   `json:"requests"`
	ActualQPS float64 `json:"actual_qps"`
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p99_9_ms"`
	Errors    int64   `json:"errors"` // requests that did not answer 200
	// Warmup is the calls fortio makes before measuring, one per
	// connection; they are not in Requests but the proxies served them.
	Warmup int64 `json:"warmup"`
}

// parseFortio reads the JSON that `fortio load -json FILE` writes.
func parseFortio(b []byte) (fortioResult, error) {
	var raw struct {
		ActualQPS         float64
		NumThreads        int64
		DurationHistogram struct {
			Count       int64
			Percentiles []struct {
				Percentile float64
				Value      float64 // seconds
			}
		}
		RetCodes map[string]int64
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return fortioResult{}, fmt.Errorf("fortio: JSON output: %w", err)
	}
	r := fortioResult{Requests: raw.DurationHistogram.Count, ActualQPS: raw.ActualQPS, Warmup: raw.NumThreads}
	if r.Requests == 0 {
		return r, errors.New("fortio: no requests in its output")
	}
	found := 0
	for _, p := range raw.DurationHistogram.Percentiles {
		ms := p.Value * 1000
		switch p.Percentile {
		case 50:
			r.P50Ms, found = ms, found+1
		case 90:
			r.P90Ms = ms
		case 99:
			r.P99Ms, found = ms, found+1
		case 99.9:
			r.P999Ms = ms
		}
	}
	if found != 2 {
		return r, errors.New("fortio: no 50th and 99th percentiles in its output: run it with -p 50,90,99,99.9")
	}
	var ok int64
	for code, n := range raw.RetCodes {
		if code == "200" {
			ok += n
		}
	}
	r.Errors = r.Requests - ok
	return r, nil
}

// ghzResult is what the benchmark takes from `ghz -O json`.
type ghzResult struct {
	Requests int64   `json:"requests"`
	RPS      float64 `json:"rps"`
	P50Ms    float64 `json:"p50_ms"`
	P90Ms    float64 `json:"p90_ms"`
	P99Ms    float64 `json:"p99_ms"`
	// Errors counts calls that did not end OK, less the calls still in
	// flight when a -z run ends: ghz cancels those and counts them as
	// "Unavailable: transport is closing", at most one per worker.
	Errors int64 `json:"errors"`
}

func parseGhz(b []byte) (ghzResult, error) {
	var raw struct {
		Count                  int64
		RPS                    float64
		ErrorDistribution      map[string]int64
		StatusCodeDistribution map[string]int64
		LatencyDistribution    []struct {
			Percentage float64
			Latency    int64 // nanoseconds
		}
		Options struct {
			Concurrency int64
		}
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return ghzResult{}, fmt.Errorf("ghz: JSON output: %w", err)
	}
	r := ghzResult{Requests: raw.Count, RPS: raw.RPS}
	if r.Requests == 0 {
		return r, errors.New("ghz: no calls in its output")
	}
	found := 0
	for _, l := range raw.LatencyDistribution {
		ms := float64(l.Latency) / 1e6
		switch l.Percentage {
		case 50:
			r.P50Ms, found = ms, found+1
		case 90:
			r.P90Ms = ms
		case 99:
			r.P99Ms, found = ms, found+1
		}
	}
	if found != 2 {
		return r, errors.New("ghz: no 50th and 99th percentiles in its output")
	}
	r.Errors = r.Requests - raw.StatusCodeDistribution["OK"]
	var closing int64
	for msg, n := range raw.ErrorDistribution {
		if strings.Contains(msg, "transport is closing") {
			closing += n
		}
	}
	r.Errors -= min(closing, raw.Options.Concurrency)
	return r, nil
}

// loadgen runs the load generators with the benchmark's settings.
type loadgen struct {
	wrk, fortio, ghz string // paths
	connections      int
	qps              int
	dir              string // for fortio's JSON and ghz's proto
	protoFile        string
	runs             int // numbers output files
}

// wrk runs wrk at saturation, one thread and lg.connections keep-alive
// connections.
func (lg *loadgen) runWrk(ctx context.Context, url string, d time.Duration) (wrkResult, error) {
	out, err := runTool(ctx, lg.wrk, "-t1", "-c"+strconv.Itoa(lg.connections), "-d"+wrkDuration(d), "--latency", url)
	if err != nil {
		return wrkResult{}, err
	}
	return parseWrk(string(out))
}

// wrkDuration renders d for wrk, which takes whole seconds (or minutes).
func wrkDuration(d time.Duration) string {
	return strconv.Itoa(int(math.Max(1, math.Round(d.Seconds())))) + "s"
}

// runFortio runs fortio at a fixed rate of lg.qps over lg.connections.
func (lg *loadgen) runFortio(ctx context.Context, url string, d time.Duration) (fortioResult, error) {
	lg.runs++
	out := filepath.Join(lg.dir, fmt.Sprintf("fortio-%03d.json", lg.runs))
	// -r: histogram resolution 10µs; fortio's default of 1ms would
	// interpolate sub-millisecond percentiles within one bucket.
	if _, err := runTool(ctx, lg.fortio, "load", "-quiet", "-qps", strconv.Itoa(lg.qps), "-c", strconv.Itoa(lg.connections),
		"-t", d.String(), "-r", "0.00001", "-p", "50,90,99,99.9", "-json", out, url); err != nil {
		return fortioResult{}, err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return fortioResult{}, fmt.Errorf("fortio: %w", err)
	}
	return parseFortio(b)
}

// runGhz calls grpc.health.v1.Health/Check over lg.connections concurrent
// workers sharing one HTTP/2 connection, as gRPC clients do; qps 0 means
// as fast as it goes.
func (lg *loadgen) runGhz(ctx context.Context, addr string, d time.Duration, qps int) (ghzResult, error) {
	out, err := runTool(ctx, lg.ghz, "--insecure", "--proto", lg.protoFile, "--call", "grpc.health.v1.Health.Check", "-d", "{}",
		"-c", strconv.Itoa(lg.connections), "--connections", "1", "-z", d.String(), "--rps", strconv.Itoa(qps), "-O", "json", addr)
	if err != nil {
		return ghzResult{}, err
	}
	return parseGhz(out)
}

// healthProto is grpc.health.v1's Check, all ghz needs to encode the call
// (the service's full definition is in google.golang.org/grpc's
// health/grpc_health_v1).
const healthProto = `syntax = "proto3";

package grpc.health.v1;

message HealthCheckRequest {
  string service = 1;
}

message HealthCheckResponse {
  enum ServingStatus {
    UNKNOWN = 0;
    SERVING = 1;
    NOT_SERVING = 2;
    SERVICE_UNKNOWN = 3;
  }
  ServingStatus status = 1;
}

service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
}
`
