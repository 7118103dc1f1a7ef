package insights

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDetectionTable keeps the reference table of docs/insights.md
// ("Detections") true to the defaults.
func TestDetectionTable(t *testing.T) {
	data, err := os.ReadFile("../../docs/insights.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	start := strings.Index(doc, "\n## Detections\n")
	if start < 0 {
		t.Fatal(`docs/insights.md has no "## Detections" section`)
	}
	section := doc[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	seen := map[Detection]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cols := strings.Split(line, "|")
		if len(cols) != 7 {
			t.Errorf("row %q: %d columns, want 5", line, len(cols)-2)
			continue
		}
		d := Detection(strings.Trim(strings.TrimSpace(cols[1]), "`"))
		def, ok := defaultRules[d]
		if !ok {
			t.Errorf("row for unknown detection %q", d)
			continue
		}
		seen[d] = true
		tw := strings.Split(cols[3], "/")
		if len(tw) != 2 {
			t.Errorf("%s: threshold / window %q", d, cols[3])
			continue
		}
		thr, win := strings.TrimSpace(tw[0]), strings.TrimSpace(tw[1])
		if wantThr := "–"; def.Threshold != 0 {
			wantThr = strconv.FormatFloat(def.Threshold, 'g', -1, 64)
			if thr != wantThr {
				t.Errorf("%s: documented threshold %s, default %s", d, thr, wantThr)
			}
		} else if thr != wantThr {
			t.Errorf("%s: documented threshold %s, default none", d, thr)
		}
		if def.Window == 0 {
			if win != "–" {
				t.Errorf("%s: documented window %s, default none", d, win)
			}
		} else if got, err := time.ParseDuration(win); err != nil || got != def.Window {
			t.Errorf("%s: documented window %s, default %v", d, win, def.Window)
		}
		if sev := Severity(strings.TrimSpace(cols[4])); sev != def.Severity {
			t.Errorf("%s: documented severity %s, default %s", d, sev, def.Severity)
		}
	}
	for _, d := range Detections {
		if !seen[d] {
			t.Errorf("%s missing from the table", d)
		}
	}
}
