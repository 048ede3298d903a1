// Package metrics exports a dmsync node's state as Prometheus metrics. A
// Collector reads an opstate.Snapshot at scrape time (built from the
// components' own status snapshots) and turns it into const metrics, so no
// component counts anything for Prometheus and a scrape never touches the
// kernel's I/O path.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dmsync/dmsync/internal/opstate"
	"github.com/dmsync/dmsync/logd"
)

const ns = "dmsync"

var (
	descBuild = prometheus.NewDesc(ns+"_build_info", "The running dmsyncd's version (value 1).",
		[]string{"version", "node"}, nil)
	descPendingBytes = prometheus.NewDesc(ns+"_pending_bytes",
		"Bytes of the volume written and not yet durably acknowledged by the peer.", []string{"volume"}, nil)
	descPendingRegions = prometheus.NewDesc(ns+"_pending_regions",
		"Regions of the volume written and not yet durably acknowledged by the peer.", []string{"volume"}, nil)
	descSize = prometheus.NewDesc(ns+"_volume_size_bytes", "Size of the volume.", []string{"volume"}, nil)
	descRead = prometheus.NewDesc(ns+"_read_bytes_total",
		"Bytes read from the volume to replicate it (resets when the sender reconnects).", []string{"volume"}, nil)
	descSent = prometheus.NewDesc(ns+"_sent_bytes_total",
		"Chunk bytes sent to the peer (resets when the sender reconnects).", []string{"volume"}, nil)
	descRate = prometheus.NewDesc(ns+"_replication_rate_bytes_per_second",
		"Smoothed rate at which the sender reads the volume.", []string{"volume"}, nil)
	descLastAck = prometheus.NewDesc(ns+"_last_ack_timestamp_seconds",
		"When the peer last durably acknowledged a batch (Unix time; absent before the first).", []string{"volume"}, nil)
	descLastConsistent = prometheus.NewDesc(ns+"_last_consistent_timestamp_seconds",
		"The recovery point: the last moment the peer's replica equalled the volume (Unix time; absent before the first).",
		[]string{"volume"}, nil)
	descPeerUp = prometheus.NewDesc(ns+"_peer_up",
		"1 while the volume's sender is connected to its peer, else 0.", []string{"volume", "peer"}, nil)
	descLegUp = prometheus.NewDesc(ns+"_leg_up",
		"1 while the mirror leg is healthy, else 0 (the health label says how it failed).",
		[]string{"volume", "leg", "device", "health"}, nil)
	descReceiveApplying = prometheus.NewDesc(ns+"_receive_applying",
		"1 while a received replica is half applied (not a consistent point), else 0.", []string{"volume", "from"}, nil)
	descLogLatency = prometheus.NewDesc(ns+"_log_request_duration_seconds",
		"Time from receiving a kernel dirty-log request to sending its reply, by request type.", []string{"type"}, nil)
	descSyncs    = prometheus.NewDesc(ns+"_store_syncs_total", "Synced commits of the dirty log's state store.", nil, nil)
	descSyncTime = prometheus.NewDesc(ns+"_store_sync_seconds_total",
		"Time spent in synced commits of the dirty log's state store.", nil, nil)
	descStoreFailed = prometheus.NewDesc(ns+"_store_failed",
		"1 once the dirty log's state store failed (the log server stopped), else 0.", nil, nil)
	descLogUp = prometheus.NewDesc(ns+"_log_stats_up",
		"1 if the log server's counters could be read for this scrape, else 0.", nil, nil)
	descErrors = prometheus.NewDesc(ns+"_snapshot_errors",
		"Parts of the node's state that could not be read for this scrape (the web view and log name them).", nil, nil)
)

// Collector is a prometheus.Collector over an opstate.Source.
type Collector struct {
	src     opstate.Source
	timeout time.Duration
}

// NewCollector returns a Collector that asks src for a snapshot at every
// scrape, giving it at most timeout (default 5 s).
func NewCollector(src opstate.Source, timeout time.Duration) *Collector {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Collector{src: src, timeout: timeout}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descBuild, descPendingBytes, descPendingRegions, descSize, descRead, descSent, descRate, descLastAck,
		descLastConsistent, descPeerUp, descLegUp, descReceiveApplying, descLogLatency, descSyncs, descSyncTime,
		descStoreFailed, descLogUp, descErrors,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s := c.src.Snapshot(ctx)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descBuild, 1, s.Version, s.Node)
	gauge(descErrors, float64(len(s.Errors)))
	for _, v := range s.Volumes {
		gauge(descSize, float64(v.Size), v.Name)
		for _, l := range v.Legs {
			gauge(descLegUp, b2f(l.OK), v.Name, strconv.Itoa(l.Index), l.Device, l.Health)
		}
		if v.Peer == "" {
			continue
		}
		gauge(descPendingBytes, float64(v.PendingBytes), v.Name)
		gauge(descPendingRegions, float64(v.PendingRegions), v.Name)
		counter(descRead, float64(v.BytesRead), v.Name)
		counter(descSent, float64(v.BytesSent), v.Name)
		gauge(descRate, v.Rate, v.Name)
		gauge(descPeerUp, b2f(v.PeerUp), v.Name, v.Peer)
		if !v.LastAck.IsZero() {
			gauge(descLastAck, unix(v.LastAck), v.Name)
		}
		if !v.LastConsistent.IsZero() {
			gauge(descLastConsistent, unix(v.LastConsistent), v.Name)
		}
	}
	for _, r := range s.Receives {
		gauge(descReceiveApplying, b2f(r.Applying), r.Volume, r.From)
	}
	gauge(descLogUp, b2f(s.Log != nil))
	if s.Log != nil {
		collectLog(ch, s.Log)
	}
}

func collectLog(ch chan<- prometheus.Metric, st *logd.Stats) {
	for _, r := range st.Requests {
		buckets := make(map[float64]uint64, logd.NumLatencyBuckets-1)
		var cum uint64
		for i := range logd.NumLatencyBuckets - 1 {
			cum += r.Buckets[i]
			buckets[logd.LatencyBucketBound(i).Seconds()] = cum
		}
		ch <- prometheus.MustNewConstHistogram(descLogLatency, r.Count, r.Sum.Seconds(), buckets, r.Name)
	}
	ch <- prometheus.MustNewConstMetric(descSyncs, prometheus.CounterValue, float64(st.Syncs))
	ch <- prometheus.MustNewConstMetric(descSyncTime, prometheus.CounterValue, st.SyncTime.Seconds())
	ch <- prometheus.MustNewConstMetric(descStoreFailed, prometheus.GaugeValue, b2f(st.StoreError != ""))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Handler serves /metrics for src: dmsync's metrics plus the Go runtime's
// and the process's.
func Handler(src opstate.Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src, 0),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
