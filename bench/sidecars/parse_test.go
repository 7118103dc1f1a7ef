package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// approx compares floats that went through unit conversions.
var approx = cmpopts.EquateApprox(0, 1e-9)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		file string
		want wrkResult
	}{
		{"wrk-basic.txt", wrkResult{Requests: 64527, Seconds: 2, RPS: 32232.70, P50Ms: 0.215, P99Ms: 4.58}},
		{"wrk-errors.txt", wrkResult{Requests: 33391, Seconds: 10.01, RPS: 3335.80, P50Ms: 1.84, P99Ms: 1020, Non2xx: 42, SocketErrors: 15}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := parseWrk(string(readTestdata(t, tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, approx); diff != "" {
				t.Errorf("parseWrk (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseWrkRefusesIncompleteOutput(t *testing.T) {
	basic := string(readTestdata(t, "wrk-basic.txt"))
	tests := map[string]string{
		"connection refused": "unable to connect to 127.0.0.1:18080 Connection refused\n",
		"no rate":            strings.Replace(basic, "Requests/sec:", "Reqs:", 1),
		"no --latency":       strings.Replace(basic, "99%", "99.9th", 1)[:strings.Index(basic, "  Latency Distribution")],
	}
	for name, out := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := parseWrk(out); err == nil {
				t.Errorf("parseWrk(%q) succeeded, want an error", out)
			}
		})
	}
}

func TestDurationIn(t *testing.T) {
	tests := []struct {
		num, unit string
		want      float64 // ms
	}{
		{"215.00", "us", 0.215},
		{"1.13", "ms", 1.13},
		{"1.02", "s", 1020},
		{"2", "m", 120000},
	}
	for _, tt := range tests {
		if got := durationIn(tt.num, tt.unit, 1e6); !cmp.Equal(got, tt.want, approx) {
			t.Errorf("durationIn(%s%s) = %v ms, want %v", tt.num, tt.unit, got, tt.want)
		}
	}
}

func TestParseFortio(t *testing.T) {
	got, err := parseFortio(readTestdata(t, "fortio-load.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := fortioResult{
		Requests: 2000, ActualQPS: 997.8883031999148, Warmup: 10,
		P50Ms: 0.5348776056338028, P90Ms: 0.940213025560772, P99Ms: 3, P999Ms: 3.844262100000005,
	}
	if diff := cmp.Diff(want, got, approx); diff != "" {
		t.Errorf("parseFortio (-want +got):\n%s", diff)
	}
}

func TestParseFortioCountsErrors(t *testing.T) {
	b := strings.Replace(string(readTestdata(t, "fortio-load.json")), `"200": 2000`, `"200": 1990, "503": 7, "-1": 3`, 1)
	got, err := parseFortio([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Errors != 10 {
		t.Errorf("errors = %d, want 10", got.Errors)
	}
}

func TestParseFortioRefuses(t *testing.T) {
	tests := map[string]string{
		"not JSON":       "Aborting because of error",
		"no requests":    `{"DurationHistogram": {"Count": 0}}`,
		"no percentiles": `{"DurationHistogram": {"Count": 5, "Percentiles": [{"Percentile": 90, "Value": 0.1}]}}`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := parseFortio([]byte(in)); err == nil {
				t.Error("succeeded, want an error")
			}
		})
	}
}

func TestParseGhz(t *testing.T) {
	got, err := parseGhz(readTestdata(t, "ghz-saturation.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The 10 calls ghz cancelled when the run ended are not errors.
	want := ghzResult{Requests: 21572, RPS: 10770.143338750297, P50Ms: 0.595334, P90Ms: 1.489937, P99Ms: 5.031722}
	if diff := cmp.Diff(want, got, approx); diff != "" {
		t.Errorf("parseGhz (-want +got):\n%s", diff)
	}
}

func TestParseGhzCountsRealErrors(t *testing.T) {
	b := string(readTestdata(t, "ghz-saturation.json"))
	b = strings.Replace(b, `"OK": 21562`, `"OK": 21542`, 1)
	b = strings.Replace(b, `"errorDistribution": {`, `"errorDistribution": {"rpc error: code = Unavailable desc = upstream connect error": 20,`, 1)
	got, err := parseGhz([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Errors != 20 {
		t.Errorf("errors = %d, want 20", got.Errors)
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name, text string
		want       procStat
	}{
		{
			name: "plain",
			text: "15269 (cat) R 15265 15265 23449 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 1 0 1367795 3133440 416 18446744073709551615 0 0 0\n",
			want: procStat{pid: 15269, comm: "cat", ppid: 15265, utime: 7, stime: 3},
		},
		{
			name: "command name with spaces and parentheses",
			text: "42 (nginx: (worker) 1) S 41 41 41 0 -1 4194624 5 0 0 0 1234 567 0 0 20 0 1 0 99 1000 10",
			want: procStat{pid: 42, comm: "nginx: (worker) 1", ppid: 41, utime: 1234, stime: 567},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(procStat{})); diff != "" {
				t.Errorf("parseProcStat (-want +got):\n%s", diff)
			}
		})
	}
	if got := tests[1].want.cpuSeconds(); got != 18.01 {
		t.Errorf("cpuSeconds = %v, want 18.01 (1801 ticks of 10 ms)", got)
	}
	for _, bad := range []string{"", "12 cat R 1", "12 (cat) R 1 2 3", "x (cat) R 1 1 1 0 -1 0 0 0 0 0 1 1 0"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("parseProcStat(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseProcStatOfSelf(t *testing.T) {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Skip("no /proc:", err)
	}
	if st.pid != os.Getpid() || st.ppid != os.Getppid() {
		t.Errorf("pid, ppid = %d, %d, want %d, %d", st.pid, st.ppid, os.Getpid(), os.Getppid())
	}
	rss, err := readVmRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("readVmRSS = %d, %v, want at least 1 MiB", rss, err)
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t   17920 kB\nRssAnon:\t 1000 kB\n"
	got, err := parseVmRSS(status)
	if err != nil || got != 17920*1024 {
		t.Errorf("parseVmRSS = %d, %v, want %d", got, err, 17920*1024)
	}
	for _, bad := range []string{"Name:\tkthreadd\n", "VmRSS:\t12 MB\n", "VmRSS:\tmany kB\n"} {
		if _, err := parseVmRSS(bad); err == nil {
			t.Errorf("parseVmRSS(%q) succeeded, want an error", bad)
		}
	}
}

func TestDescendants(t *testing.T) {
	// 10 is an nginx master with workers 11 and 12; 12 has a child 15;
	// 20 is unrelated, 30 a child of 20.
	parent := map[int]int{10: 1, 11: 10, 12: 10, 15: 12, 20: 1, 30: 20}
	if diff := cmp.Diff([]int{10, 11, 12, 15}, descendants(10, parent)); diff != "" {
		t.Errorf("descendants (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{99}, descendants(99, parent)); diff != "" {
		t.Errorf("descendants of an unknown pid (-want +got):\n%s", diff)
	}
}

func TestParseConfigCounts(t *testing.T) {
	dump := `{"spiffeId":"spiffe://rampart.local/ns/bench/sa/x","ready":true,"config":{"version":"7","services":[
		{"name":"a","namespace":"bench","endpoints":[{"address":"127.1.0.1:15008"},{"address":"127.1.0.2:15008"}]},
		{"name":"b","namespace":"bench"}]}}`
	s, e, err := parseConfigCounts([]byte(dump))
	if err != nil || s != 2 || e != 2 {
		t.Errorf("parseConfigCounts = %d, %d, %v, want 2, 2, nil", s, e, err)
	}
	s, e, err = parseConfigCounts([]byte(`{"ready":false}`))
	if err != nil || s != 0 || e != 0 {
		t.Errorf("parseConfigCounts(no config) = %d, %d, %v, want 0, 0, nil", s, e, err)
	}
}
