package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rampart-mesh/rampart/internal/testutil/browser"
)

// newPage starts a headless Chromium for the test. With
// RAMPART_REQUIRE_CHROMIUM=1, or under `make test` as root
// (RAMPART_REQUIRE_NETNS=1, as the end-to-end tests decide), a missing
// browser fails the test; elsewhere it skips it.
func newPage(t *testing.T) *browser.Browser {
	t.Helper()
	return browser.New(t, os.Getenv("RAMPART_REQUIRE_CHROMIUM") == "1" || os.Getenv("RAMPART_REQUIRE_NETNS") == "1")
}

// apiMode says how the fake controller answers /api/v1/events and
// /api/v1/quarantine.
type apiMode int32

const (
	apiServe   apiMode = iota // the canned answers
	apiFail                   // 500 with a JSON error
	apiMissing                // 404: a controller without threat detection
)

// relTime is a time in testdata relative to when the test runs:
// ${now-5m}, ${now+90m}.
var relTime = regexp.MustCompile(`\$\{now([+-][0-9]+[hms])\}`)

// fakeController serves the dashboard's files and canned answers of the
// controller's APIs from testdata, as the admin listener does.
func fakeController(t *testing.T, mode *atomic.Int32) *httptest.Server {
	t.Helper()
	h, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	load := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return relTime.ReplaceAllFunc(b, func(m []byte) []byte {
			d, err := time.ParseDuration(string(relTime.FindSubmatch(m)[1]))
			if err != nil {
				t.Errorf("testdata/%s: %s: %v", name, m, err)
			}
			return []byte(time.Now().Add(d).UTC().Format(time.RFC3339))
		})
	}
	writeJSON := func(w http.ResponseWriter, code int, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(body)
	}
	// One workload's stat and edges, as the controller filters them.
	filtered := func(name, list string, keep func(map[string]any, string, string) bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body := load(name)
			ns, wl := r.URL.Query().Get("namespace"), r.URL.Query().Get("workload")
			if wl == "" {
				writeJSON(w, 200, body)
				return
			}
			var doc map[string]any
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Error(err)
			}
			var kept []any
			for _, x := range doc[list].([]any) {
				if keep(x.(map[string]any), ns, wl) {
					kept = append(kept, x)
				}
			}
			if len(kept) == 0 && list == "workloads" {
				writeJSON(w, 404, []byte(`{"error":"workload `+ns+`/`+wl+` has not reported"}`))
				return
			}
			doc[list] = kept
			b, _ := json.Marshal(doc)
			writeJSON(w, 200, b)
		}
	}
	is := func(end any, ns, wl string) bool {
		m, _ := end.(map[string]any)
		return m["namespace"] == ns && m["workload"] == wl
	}
	security := func(name string, want string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			switch apiMode(mode.Load()) {
			case apiFail:
				writeJSON(w, 500, []byte(`{"error":"the event log is unreadable"}`))
			case apiMissing:
				http.NotFound(w, r)
			default:
				if q := r.URL.Query(); q.Encode() != want {
					writeJSON(w, 400, []byte(fmt.Sprintf(`{"error":"query %q, want %q"}`, r.URL.RawQuery, want)))
					return
				}
				writeJSON(w, 200, load(name))
			}
		}
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, h)
	mux.HandleFunc("GET /api/v1/stat", filtered("stat.json", "workloads", func(x map[string]any, ns, wl string) bool {
		return x["namespace"] == ns && x["name"] == wl
	}))
	mux.HandleFunc("GET /api/v1/edges", filtered("edges.json", "edges", func(x map[string]any, ns, wl string) bool {
		return is(x["source"], ns, wl) || is(x["destination"], ns, wl)
	}))
	mux.HandleFunc("GET /api/v1/series", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, load("series.json")) })
	mux.HandleFunc("GET /identity", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, load("identity.json")) })
	mux.HandleFunc("GET /api/v1/events", security("events.json", "limit=50&since=1h"))
	mux.HandleFunc("GET /api/v1/quarantine", security("quarantine.json", ""))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

const (
	jsEventIDs = `[...document.querySelectorAll('#events tr[data-event]')].map(r => r.dataset.event)`
	// jsEventCells reads each event row as its data-field cells' texts.
	jsEventCells = `Object.fromEntries([...document.querySelectorAll('#events tr[data-event]')].map(r =>
		[r.dataset.event, Object.fromEntries([...r.querySelectorAll('td[data-field]')].map(c => [c.dataset.field, c.textContent]))]))`
	jsEvidence = `Object.fromEntries([...document.querySelectorAll('#events tr[data-evidence-for="%s"] dd')].map(d => [d.dataset.evidence, d.textContent]))`
	jsText     = `(e => e && !e.hidden ? e.textContent : '')(document.getElementById(%q))`
)

// TestPanelsInBrowser drives the dashboard in headless Chromium against
// canned answers: the security events with their texts, severity counts
// and evidence, a workload page's own events, the quarantine panel and the
// graph's mark, a hostile summary shown as text, the last data kept when
// the events API fails, and the panels' empty state when a controller
// does not serve them.
func TestPanelsInBrowser(t *testing.T) {
	p := newPage(t)
	var mode atomic.Int32
	srv := fakeController(t, &mode)
	base := srv.URL + Prefix
	p.Do(chromedp.Navigate(base))

	// The events, newest first, as the API lists them.
	browser.WaitFor(p, 15*time.Second, jsEventIDs, func(got []string) error {
		if want := []string{"00000000000000a1", "00000000000000a2", "00000000000000a3", "00000000000000a4"}; !slices.Equal(got, want) {
			return fmt.Errorf("event rows %v, want %v", got, want)
		}
		return nil
	})
	var cells map[string]map[string]string
	if err := p.Eval(jsEventCells, &cells); err != nil {
		t.Fatal(err)
	}
	isoSecond := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	for id, want := range map[string]map[string]string{
		"00000000000000a1": {
			"severity": "critical", "detection": "route scan",
			"source":      "shop/intruderspiffe://example.org/ns/shop/sa/intruder",
			"destination": "shop/paymentsspiffe://example.org/ns/shop/sa/payments",
			"summary":     "shop/intruder requested 40 distinct paths of shop/payments in 30s, 95% answered 403 or 404",
			"action":      "quarantined until 2031-05-06T07:08:09Z",
		},
		"00000000000000a2": {"severity": "high", "detection": "new edge", "action": "alert"},
		"00000000000000a3": {"severity": "medium", "detection": "request-rate spike", "source": "shop/webspiffe://example.org/ns/shop/sa/web"},
		"00000000000000a4": {
			"severity": "high", "detection": "TLS: unknown CA",
			"source":  "(workload unknown)spiffe://evil.example/ns/x/sa/y (claimed, not verified)",
			"summary": `<img src=x onerror="window.__pwned=1"><b>4 handshakes</b> with a certificate of an unknown CA`,
		},
	} {
		for field, w := range want {
			if got := cells[id][field]; got != w {
				t.Errorf("event %s %s = %q, want %q", id, field, got, w)
			}
		}
		if !isoSecond.MatchString(cells[id]["time"]) {
			t.Errorf("event %s time %q, want an RFC 3339 time to the second", id, cells[id]["time"])
		}
	}

	// The counts by severity in the page's header, most severe first, and
	// the badge's colour next to its text.
	var counts []string
	if err := p.Eval(`[...document.querySelectorAll('#event-counts [data-severity]')].map(e => e.textContent)`, &counts); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1 critical", "2 high", "1 medium"}; !slices.Equal(counts, want) {
		t.Errorf("severity counts %q, want %q", counts, want)
	}
	var critical string
	if err := p.Eval(`getComputedStyle(document.querySelector('#events tr[data-event="00000000000000a1"] .sev')).backgroundColor`, &critical); err != nil {
		t.Fatal(err)
	}
	if critical != "rgb(197, 48, 48)" {
		t.Errorf("critical badge background %q, want red", critical)
	}

	// A click shows an event's evidence; it stays through the next
	// refresh; a second click hides it.
	var updated string
	if err := p.Eval(fmt.Sprintf(jsText, "updated"), &updated); err != nil {
		t.Fatal(err)
	}
	p.Do(chromedp.Click(chromedp.CSS(`#events tr[data-event="00000000000000a1"] td[data-field="summary"]`)))
	evidence := func(id string, want map[string]string) {
		t.Helper()
		browser.WaitFor(p, 5*time.Second, fmt.Sprintf(jsEvidence, id), func(got map[string]string) error {
			for k, v := range want {
				if got[k] != v {
					return fmt.Errorf("evidence of %s: %q, want %q", id, got, want)
				}
			}
			return nil
		})
	}
	scan := map[string]string{
		"id": "00000000000000a1", "detection": "route_scan", "windowSeconds": "30 s", "requests": "120",
		"distinctPaths": "40", "refusedShare": "95.0%", "paths": "/admin/users/x, /.env, /wp-login.php", "reporter": "shop/payments",
	}
	evidence("00000000000000a1", scan)
	browser.WaitFor(p, 10*time.Second, fmt.Sprintf(jsText, "updated"), func(got string) error {
		if got == updated || !strings.HasPrefix(got, "updated ") {
			return fmt.Errorf("updated %q, want a refresh after %q", got, updated)
		}
		return nil
	})
	evidence("00000000000000a1", scan)
	p.Do(chromedp.Click(chromedp.CSS(`#events tr[data-event="00000000000000a1"] td[data-field="summary"]`)))
	browser.WaitFor(p, 5*time.Second, `document.querySelectorAll('#events tr.evidence').length`, func(n int) error {
		if n != 0 {
			return fmt.Errorf("%d evidence rows after the second click, want none", n)
		}
		return nil
	})
	// A hostile certificate issuer is text too, and fields the page does
	// not know are still shown.
	p.Do(chromedp.Click(chromedp.CSS(`#events tr[data-event="00000000000000a4"] td[data-field="time"]`)))
	evidence("00000000000000a4", map[string]string{
		"handshakes": "4", "serial": "77ff", "issuer": "CN=<script>window.__pwned=2</script>", "port": "8443", "confidence": "new field",
	})

	// The quarantine panel and the graph's mark.
	var quarantine []map[string]string
	if err := p.Eval(`[...document.querySelectorAll('#quarantine tbody tr')].map(r =>
		Object.fromEntries([...r.querySelectorAll('td[data-field]')].map(c => [c.dataset.field, c.textContent])))`, &quarantine); err != nil {
		t.Fatal(err)
	}
	if len(quarantine) != 1 {
		t.Fatalf("quarantine rows %v, want one", quarantine)
	}
	q := quarantine[0]
	if q["identity"] != "spiffe://example.org/ns/shop/sa/intruder" || q["workload"] != "shop/intruder" || q["left"] != "1 h" ||
		!isoSecond.MatchString(q["until"]) || !isoSecond.MatchString(q["since"]) ||
		q["reason"] != `route_scan <img src=x onerror="window.__pwned=3">` || q["by"] != "event 00000000000000a1" {
		t.Errorf("quarantine row %q", q)
	}
	var note string
	if err := p.Eval(`document.getElementById('quarantine-panel').textContent`, &note); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(note, "rampart quarantine release <spiffe-id>") {
		t.Errorf("the quarantine panel does not say how to release: %q", note)
	}
	var marks map[string]string
	if err := p.Eval(`Object.fromEntries([...document.querySelectorAll('#graph [data-node]')].map(g =>
		[g.dataset.node, (g.dataset.quarantined || '') + '|' + [...g.querySelectorAll('text.qlabel')].map(x => x.textContent).join() + '|' + getComputedStyle(g.querySelector('circle')).stroke]))`, &marks); err != nil {
		t.Fatal(err)
	}
	for node, want := range map[string]string{
		"shop/intruder": "true|quarantined|rgb(197, 48, 48)",
		"shop/orders":   "||rgb(74, 85, 104)",
		"shop/payments": "||rgb(74, 85, 104)",
		"shop/web":      "||rgb(74, 85, 104)",
	} {
		if marks[node] != want {
			t.Errorf("graph node %s: %q, want %q (all: %q)", node, marks[node], want, marks)
		}
	}

	// Nothing of the data ran or became markup.
	var pwned []any
	if err := p.Eval(`[window.__pwned === undefined, document.querySelectorAll('main img, main script, main b').length]`, &pwned); err != nil {
		t.Fatal(err)
	}
	if pwned[0] != true || pwned[1] != float64(0) {
		t.Errorf("hostile data became markup: __pwned undefined %v, %v elements", pwned[0], pwned[1])
	}
	if s := p.TakeProblems(); len(s) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(s, "\n"))
	}

	// A workload's page lists the events from or to it.
	for _, tc := range []struct {
		workload string
		want     []string
	}{
		{"shop/orders", []string{"00000000000000a3", "00000000000000a4"}},
		{"shop/web", []string{"00000000000000a3"}},
		{"shop/intruder", []string{"00000000000000a1", "00000000000000a2"}},
	} {
		p.Do(chromedp.Navigate(base + "#/workload/" + tc.workload))
		browser.WaitFor(p, 10*time.Second, `[...document.querySelectorAll('#workload-events tr[data-event]')].map(r => r.dataset.event)`, func(got []string) error {
			if !slices.Equal(got, tc.want) {
				return fmt.Errorf("%s lists events %v, want %v", tc.workload, got, tc.want)
			}
			return nil
		})
	}
	// The quarantined workload's page says so.
	browser.WaitFor(p, 5*time.Second, `(e => e ? e.textContent : '')(document.querySelector('#detail-body [data-quarantined]'))`, func(got string) error {
		if !strings.Contains(got, "Quarantined: spiffe://example.org/ns/shop/sa/intruder until ") || !strings.Contains(got, "rampart quarantine release") {
			return fmt.Errorf("intruder's page: %q", got)
		}
		return nil
	})
	p.Do(chromedp.Navigate(base + "#/workload/shop/payments"))
	browser.WaitFor(p, 10*time.Second, `[...document.querySelectorAll('#workload-events tr[data-event]')].map(r => r.dataset.event)`, func(got []string) error {
		if want := []string{"00000000000000a1", "00000000000000a2"}; !slices.Equal(got, want) {
			return fmt.Errorf("payments lists events %v, want %v", got, want)
		}
		return nil
	})
	p.Do(chromedp.Navigate(base))
	browser.WaitFor(p, 10*time.Second, jsEventIDs, func(got []string) error {
		if len(got) != 4 {
			return fmt.Errorf("event rows %v after reloading, want 4", got)
		}
		return nil
	})

	// The events API fails: the banner says so and the last events stay.
	mode.Store(int32(apiFail))
	browser.WaitFor(p, 10*time.Second, fmt.Sprintf(jsText, "banner"), func(got string) error {
		if !strings.Contains(got, "/api/v1/events") || !strings.Contains(got, "the event log is unreadable") {
			return fmt.Errorf("banner %q, want the events API's error", got)
		}
		return nil
	})
	var ids []string
	if err := p.Eval(jsEventIDs, &ids); err != nil || len(ids) != 4 {
		t.Errorf("with the events API failing the panel holds %v (%v), want the last 4 events", ids, err)
	}

	// A controller without the APIs (404): the empty states with a note,
	// no banner, no counts, no mark.
	mode.Store(int32(apiMissing))
	browser.WaitFor(p, 10*time.Second, `[`+fmt.Sprintf(jsText, "events-empty")+`, `+fmt.Sprintf(jsText, "quarantine-empty")+`, `+
		fmt.Sprintf(jsText, "banner")+`, document.getElementById('event-counts').textContent, String(document.getElementById('events').hidden),
		String(document.querySelectorAll('#graph .node.quarantined').length)]`, func(got []string) error {
		if !strings.Contains(got[0], "does not serve security events (GET /api/v1/events answered 404)") ||
			!strings.Contains(got[1], "does not serve the quarantine (GET /api/v1/quarantine answered 404)") ||
			got[2] != "" || got[3] != "security events: not served" || got[4] != "true" || got[5] != "0" {
			return fmt.Errorf("with the APIs missing: %q", got)
		}
		return nil
	})
	for _, s := range p.TakeProblems() {
		if !strings.Contains(s, "status of 500") && !strings.Contains(s, "status of 404") {
			t.Errorf("the page logged %q", s)
		}
	}
	if dir := os.Getenv("RAMPART_ARTIFACTS_DIR"); dir != "" {
		p.Do(chromedp.Navigate(base))
		mode.Store(int32(apiServe))
		browser.WaitFor(p, 10*time.Second, `document.querySelectorAll('#events tr[data-event]').length`, func(n int) error {
			if n != 4 {
				return fmt.Errorf("%d events", n)
			}
			return nil
		})
		if png, err := p.PNG(); err == nil {
			_ = os.WriteFile(filepath.Join(dir, "dashboard-security-panels.png"), png, 0o644)
		}
	}
}
