package insights

import (
	"sort"
	"time"

	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// Bounds of the ledger.
const (
	// LedgerRetention is how long the hourly ledger keeps an hour.
	LedgerRetention = 7 * 24 * time.Hour
	// MaxLedgerEdgesPerHour bounds the edges of one hour; traffic of
	// further edges in that hour is counted in Stats.LedgerOverflow only.
	MaxLedgerEdgesPerHour = 4096
)

type ledgerEdge struct {
	src, dst Party
	service  string
}

type ledgerKey struct {
	hour int64 // Unix seconds of the hour's start
	edge ledgerEdge
}

// ledger is the traffic of every edge by hour.
type ledger struct {
	hours map[ledgerKey]*EdgeHour
	count map[int64]int // edges per hour
}

func newLedger() ledger {
	return ledger{hours: make(map[ledgerKey]*EdgeHour), count: make(map[int64]int)}
}

func ledgerParty(p Party) Party {
	return Party{SPIFFEID: p.SPIFFEID, Namespace: p.Namespace, Workload: p.Workload}
}

func (l *ledger) add(now time.Time, src, dst Party, er *graph.EdgeReport, st *Stats) {
	hour := now.UTC().Truncate(time.Hour)
	k := ledgerKey{hour: hour.Unix(), edge: ledgerEdge{src: ledgerParty(src), dst: ledgerParty(dst), service: er.Service}}
	h := l.hours[k]
	if h == nil {
		if l.count[k.hour] >= MaxLedgerEdgesPerHour {
			st.LedgerOverflow++
			return
		}
		h = &EdgeHour{Hour: hour, Source: k.edge.src, Destination: k.edge.dst, Service: er.Service, MTLS: er.MTLS}
		l.hours[k] = h
		l.count[k.hour]++
	}
	h.MTLS = h.MTLS && er.MTLS
	h.Requests += er.Requests
	h.Failures += er.Failures
	h.Denied += er.Denied
	h.RateLimited += er.RateLimited
}

func (l *ledger) restore(h EdgeHour) {
	h.Hour = h.Hour.UTC().Truncate(time.Hour)
	k := ledgerKey{hour: h.Hour.Unix(), edge: ledgerEdge{src: ledgerParty(h.Source), dst: ledgerParty(h.Destination), service: h.Service}}
	if x := l.hours[k]; x != nil {
		x.MTLS = x.MTLS && h.MTLS
		x.Requests += h.Requests
		x.Failures += h.Failures
		x.Denied += h.Denied
		x.RateLimited += h.RateLimited
		return
	}
	if l.count[k.hour] >= MaxLedgerEdgesPerHour {
		return
	}
	h.Source, h.Destination = k.edge.src, k.edge.dst
	l.hours[k] = &h
	l.count[k.hour]++
}

// prune drops the hours that ended more than LedgerRetention before now;
// it says whether it dropped any.
func (l *ledger) prune(now time.Time) bool {
	cut := now.Add(-LedgerRetention).Add(-time.Hour).Unix()
	dropped := false
	for k := range l.hours {
		if k.hour <= cut {
			delete(l.hours, k)
			dropped = true
		}
	}
	for h := range l.count {
		if h <= cut {
			delete(l.count, h)
		}
	}
	return dropped
}

// entries returns the ledger sorted by hour, then destination, then
// source.
func (l *ledger) entries() []EdgeHour {
	out := make([]EdgeHour, 0, len(l.hours))
	for _, h := range l.hours {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Hour.Equal(b.Hour) {
			return a.Hour.Before(b.Hour)
		}
		return edgeLess(a.Destination, a.Source, a.Service, b.Destination, b.Source, b.Service)
	})
	return out
}

func edgeLess(ad, as Party, asvc string, bd, bs Party, bsvc string) bool {
	for _, p := range [][2]string{
		{ad.Namespace, bd.Namespace}, {ad.Workload, bd.Workload}, {ad.SPIFFEID, bd.SPIFFEID},
		{as.Namespace, bs.Namespace}, {as.Workload, bs.Workload}, {as.SPIFFEID, bs.SPIFFEID},
		{asvc, bsvc},
	} {
		if p[0] != p[1] {
			return p[0] < p[1]
		}
	}
	return false
}

// Totals sums the ledger per edge over the hours from the one that holds
// since to now: the granularity is an hour, so the totals may include up
// to an hour of traffic before since. An edge is MTLS when all of its
// hours were. Edges are sorted by destination, then source.
func (e *Engine) Totals(since time.Time) []EdgeTotal {
	from := since.UTC().Truncate(time.Hour).Unix()
	e.mu.Lock()
	agg := make(map[ledgerEdge]*EdgeTotal)
	for k, h := range e.ledger.hours {
		if k.hour < from {
			continue
		}
		t := agg[k.edge]
		end := h.Hour.Add(time.Hour)
		if t == nil {
			t = &EdgeTotal{Source: h.Source, Destination: h.Destination, Service: h.Service, MTLS: true, First: h.Hour, Last: end}
			agg[k.edge] = t
		}
		t.MTLS = t.MTLS && h.MTLS
		t.Requests += h.Requests
		t.Failures += h.Failures
		t.Denied += h.Denied
		t.RateLimited += h.RateLimited
		if h.Hour.Before(t.First) {
			t.First = h.Hour
		}
		if end.After(t.Last) {
			t.Last = end
		}
	}
	e.mu.Unlock()
	out := make([]EdgeTotal, 0, len(agg))
	for _, t := range agg {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return edgeLess(a.Destination, a.Source, a.Service, b.Destination, b.Source, b.Service)
	})
	return out
}
