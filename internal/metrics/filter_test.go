package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// filtered is one metric of a collector, for testutil.ToFloat64.
type filtered struct {
	c    *Collector
	name string
}

func (f *filtered) Describe(ch chan<- *prometheus.Desc) { f.c.Describe(ch) }

func (f *filtered) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 100)
	go func() { f.c.Collect(all); close(all) }()
	for m := range all {
		if strings.Contains(m.Desc().String(), `"`+f.name+`"`) {
			ch <- m
		}
	}
}
