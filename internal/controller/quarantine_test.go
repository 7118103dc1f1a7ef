package controller

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/quarantine"
)

func quarantineChanges(c *Controller, action, by string) float64 {
	return testutil.ToFloat64(c.quarantined.changes.WithLabelValues(action, by))
}

// quarantinedIn lists the identities the model sends a proxy of id.
func quarantinedIn(c *Controller, id spiffeid.ID) []string {
	var out []string
	for _, q := range c.Model().ConfigFor(id, "x", nil).GetQuarantine().GetIdentities() {
		out = append(out, q.GetSpiffeId())
	}
	return out
}

func getQuarantine(t *testing.T, c *Controller) QuarantineResponse {
	t.Helper()
	code, body := httpGet(t, "http://"+c.AdminAddr()+"/api/v1/quarantine")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/quarantine: %d %s", code, body)
	}
	var r QuarantineResponse
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("GET /api/v1/quarantine: %v in %s", err, body)
	}
	return r
}

// TestQuarantine: an operator's entry in the file and a detection's call
// are pushed to every proxy, shown, counted, released and expired; the
// quarantined workload still renews its certificate.
func TestQuarantine(t *testing.T) {
	// A long poll interval: changes are picked up by notification, and
	// expiries by the timer.
	c := start(t, Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", TrustDomain: "example.org",
		CAPollInterval: time.Minute})
	td := c.TrustDomain()
	web := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "web")
	api := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "api")
	p := newProxy(t, c, web)

	now := time.Now().UTC()
	path := c.QuarantinePath()
	if _, err := quarantine.Update(path, now, func(l *quarantine.List) error {
		return l.Add(quarantine.Entry{SPIFFEID: web.String(), Since: now, Until: now.Add(time.Hour), Reason: "scanning", By: quarantine.ByOperator})
	}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the quarantine to reach the model", func() bool {
		got := quarantinedIn(c, api)
		return len(got) == 1 && got[0] == web.String()
	})
	if got := testutil.ToFloat64(c.quarantined.gauge); got != 1 {
		t.Errorf("quarantined_identities = %v, want 1", got)
	}
	if got := quarantineChanges(c, QuarantineAdd, quarantine.ByOperator); got != 1 {
		t.Errorf("changes{add,operator} = %v, want 1", got)
	}
	// A quarantine is not a revocation: the workload renews.
	if err := certifyOn(t, p.cc, web, ""); err != nil {
		t.Fatalf("renewal of a quarantined identity: %v", err)
	}
	r := getQuarantine(t, c)
	if len(r.Identities) != 1 || r.Identities[0].SPIFFEID != web.String() || r.Identities[0].By != "operator" ||
		r.Identities[0].Reason != "scanning" || r.Identities[0].Until != now.Add(time.Hour).Format(time.RFC3339) {
		t.Errorf("GET /api/v1/quarantine = %+v", r)
	}

	// A detection quarantines for a short time; its event ID is the
	// author, and the entry expires by itself.
	if err := c.quarantineIdentity(api, time.Now().Add(1500*time.Millisecond), "RouteScan 0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	if got := quarantinedIn(c, web); len(got) != 2 {
		t.Errorf("right after quarantineIdentity the model holds %v, want both", got)
	}
	r = getQuarantine(t, c)
	if len(r.Identities) != 2 || r.Identities[0].SPIFFEID != api.String() || r.Identities[0].By != "0123456789abcdef" {
		t.Errorf("GET /api/v1/quarantine = %+v, want the detection's entry first", r)
	}
	poll(t, "the detection's quarantine to expire", func() bool { return len(quarantinedIn(c, web)) == 1 })
	if got := quarantineChanges(c, QuarantineExpire, quarantine.ByDetection); got != 1 {
		t.Errorf("changes{expire,detection} = %v, want 1", got)
	}
	// A detection neither shortens nor replaces an operator's
	// quarantine: web stays quarantined for its hour, by the operator.
	if err := c.quarantineIdentity(web, time.Now().Add(time.Minute), "RouteScan fedcba9876543210"); err != nil {
		t.Fatal(err)
	}
	if r := getQuarantine(t, c); len(r.Identities) != 1 || r.Identities[0].By != "operator" || r.Identities[0].Until != now.Add(time.Hour).Format(time.RFC3339) {
		t.Errorf("after a detection on an operator's quarantine: %+v", r)
	}
	if err := c.quarantineIdentity(ControllerID(td), time.Now().Add(time.Hour), "x"); err == nil || !strings.Contains(err.Error(), "controller's own identity") {
		t.Errorf("quarantining the controller = %v", err)
	}
	other := spiffeid.RequireFromSegments(spiffeid.RequireTrustDomainFromString("other.org"), "ns", "shop", "sa", "web")
	if err := c.quarantineIdentity(other, time.Now().Add(time.Hour), "x"); err == nil || !strings.Contains(err.Error(), "trust domain") {
		t.Errorf("quarantining another trust domain = %v", err)
	}

	// A corrupt file keeps the quarantine in force.
	errorsBefore := counterValue(t, c, "rampart_controller_quarantine_reloads_total", "error")
	if err := os.WriteFile(path+".new", []byte(`{"version":1,"identities":[{"spiffe_id":"nope"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	poll(t, "the corrupt file to be counted", func() bool {
		return counterValue(t, c, "rampart_controller_quarantine_reloads_total", "error") > errorsBefore
	})
	if got := quarantinedIn(c, api); len(got) != 1 || got[0] != web.String() {
		t.Errorf("after a corrupt file the model holds %v, want web still", got)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	// Release: the file without the entry.
	poll(t, "the release to reach the model", func() bool { return len(quarantinedIn(c, api)) == 0 })
	if got := quarantineChanges(c, QuarantineRelease, quarantine.ByOperator); got != 1 {
		t.Errorf("changes{release,operator} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.quarantined.gauge); got != 0 {
		t.Errorf("quarantined_identities = %v, want 0", got)
	}

	code, _ := httpGet(t, "http://"+c.AdminAddr()+"/api/v1/quarantine?all=1")
	if code != http.StatusBadRequest {
		t.Errorf("GET /api/v1/quarantine?all=1: %d, want 400", code)
	}
}

// TestCorruptQuarantineRefusesToStart: rather than start with nobody
// quarantined.
func TestCorruptQuarantineRefusesToStart(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(state+"/"+QuarantineFile, []byte(`{"version":7}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{StateDir: state, Listen: "127.0.0.1:0", AdminListen: "off", TrustDomain: "example.org"})
	if err == nil || !strings.Contains(err.Error(), QuarantineFile) {
		t.Fatalf("New with a corrupt quarantine file = %v, want an error naming it", err)
	}
}
