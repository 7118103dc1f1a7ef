package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCommonCodesAreIndexed(t *testing.T) {
	for i, c := range commonCodes {
		if got := codeIndex(c); got != i {
			t.Errorf("codeIndex(%d) = %d, want %d", c, got, i)
		}
		if Code(c) != codeNames[i] {
			t.Errorf("Code(%d) = %q", c, Code(c))
		}
	}
	if codeIndex(418) != -1 || Code(418) != "418" {
		t.Errorf("418: index %d, name %q", codeIndex(418), Code(418))
	}
}

func TestSeriesCountsUnderTheirLabels(t *testing.T) {
	m := New()
	s := m.Series(Outbound, "spiffe://example.org/ns/a/sa/b", "orders.shop")
	s.Observe(200, 0.001)
	s.Observe(200, 0.002)
	s.Observe(418, 0.003) // not kept at hand
	if got := testutil.ToFloat64(m.Requests.WithLabelValues(Outbound, "spiffe://example.org/ns/a/sa/b", "orders.shop", "200")); got != 2 {
		t.Errorf("200s counted %v times, want 2", got)
	}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues(Outbound, "spiffe://example.org/ns/a/sa/b", "orders.shop", "418")); got != 1 {
		t.Errorf("418s counted %v times, want 1", got)
	}
	// Only the codes that happened are series: 200 and 418 (the lookups
	// above created no others).
	if n := testutil.CollectAndCount(m.Requests); n != 2 {
		t.Errorf("%d request series, want 2", n)
	}
	if n := testutil.CollectAndCount(m.RequestDuration); n != 1 {
		t.Errorf("%d duration series, want 1", n)
	}
}

func TestChildCountsUnderItsLabelsOnceUsed(t *testing.T) {
	m := New()
	c := NewChild(m.AuthzDecisions, "deny", "deny_rule", "shop/no-admin", "0")
	if n := testutil.CollectAndCount(m.AuthzDecisions); n != 0 {
		t.Fatalf("%d series before the first count, want 0", n)
	}
	c.Inc()
	c.Inc()
	if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues("deny", "deny_rule", "shop/no-admin", "0")); got != 2 {
		t.Fatalf("counted %v, want 2", got)
	}
	if n := testing.AllocsPerRun(100, c.Inc); n != 0 {
		t.Fatalf("%v allocations per count", n)
	}
}

func TestEjectedGaugeReadsItsSourceAtScrapeTime(t *testing.T) {
	m := New()
	if n := testutil.CollectAndCount(&m.ejected); n != 0 {
		t.Fatalf("%d series without a source, want 0", n)
	}
	ejected := 0
	m.SetEjectedSource(func(yield func(string, int) bool) { yield("orders.shop", ejected) })
	ejected = 2
	want := `# HELP rampart_proxy_endpoints_ejected Endpoints of a service currently ejected by outlier detection.
# TYPE rampart_proxy_endpoints_ejected gauge
rampart_proxy_endpoints_ejected{service="orders.shop"} 2
`
	if err := testutil.CollectAndCompare(&m.ejected, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
