package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Value returns the total of c's counters and gauges (a histogram's sample
// count) over the series whose labels hold every given name, value pair:
// Value(m.Requests, "direction", "inbound", "code", "200"). Labels not
// named may take any value.
func Value(c prometheus.Collector, match ...string) float64 {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var total float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil || !matches(pb.GetLabel(), match) {
			continue
		}
		switch {
		case pb.Counter != nil:
			total += pb.GetCounter().GetValue()
		case pb.Gauge != nil:
			total += pb.GetGauge().GetValue()
		case pb.Histogram != nil:
			total += float64(pb.GetHistogram().GetSampleCount())
		}
	}
	return total
}

func matches(labels []*dto.LabelPair, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		found := false
		for _, l := range labels {
			if l.GetName() == match[i] {
				found = l.GetValue() == match[i+1]
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
