package ingest

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// streamCollector reports the events stream's fill at scrape time, so operators see the
// backlog approach the limit at which ingest starts answering 503.
type streamCollector struct {
	stream                 jetstream.Stream
	bytes, limit, msgs, up *prometheus.Desc
}

func newStreamCollector(st jetstream.Stream) *streamCollector {
	return &streamCollector{
		stream: st,
		bytes:  prometheus.NewDesc("haru_ingest_stream_bytes", "Bytes held by the events stream (not yet stored by the writer).", nil, nil),
		limit:  prometheus.NewDesc("haru_ingest_stream_max_bytes", "The events stream's byte limit; at it, beacons get 503.", nil, nil),
		msgs:   prometheus.NewDesc("haru_ingest_stream_messages", "Events held by the events stream.", nil, nil),
		up:     prometheus.NewDesc("haru_ingest_stream_info_up", "1 if the stream's state could be read at this scrape.", nil, nil),
	}
}

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.limit
	ch <- c.msgs
	ch <- c.up
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.stream.Info(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(info.State.Bytes))
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(info.Config.MaxBytes))
	ch <- prometheus.MustNewConstMetric(c.msgs, prometheus.GaugeValue, float64(info.State.Msgs))
}
