package telemetry

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector reports a pgx pool's statistics at scrape time as
// haru_<service>_db_pool_*: connections in use, idle and open against the maximum, and
// how often and how long acquiring one had to wait, which is what shows a pool too
// small for its load.
type PoolCollector struct {
	pool *pgxpool.Pool

	acquired, idle, total, max                  *prometheus.Desc
	acquires, emptyAcquires, canceled, waitSecs *prometheus.Desc
}

// NewPoolCollector returns the collector of pool for service (writer, query).
func NewPoolCollector(service string, pool *pgxpool.Pool) *PoolCollector {
	name := func(s string) string { return "haru_" + service + "_db_pool_" + s }
	return &PoolCollector{
		pool:          pool,
		acquired:      prometheus.NewDesc(name("acquired_connections"), "Postgres connections in use.", nil, nil),
		idle:          prometheus.NewDesc(name("idle_connections"), "Postgres connections open and idle.", nil, nil),
		total:         prometheus.NewDesc(name("connections"), "Postgres connections open, in use or idle (or being opened).", nil, nil),
		max:           prometheus.NewDesc(name("max_connections"), "The pool's connection limit.", nil, nil),
		acquires:      prometheus.NewDesc(name("acquires_total"), "Connections acquired from the pool.", nil, nil),
		emptyAcquires: prometheus.NewDesc(name("empty_acquires_total"), "Acquires that found no idle connection and waited for one to open or be released.", nil, nil),
		canceled:      prometheus.NewDesc(name("canceled_acquires_total"), "Acquires given up because their context ended.", nil, nil),
		waitSecs:      prometheus.NewDesc(name("acquire_seconds_total"), "Time spent acquiring connections.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.acquires, c.emptyAcquires, c.canceled, c.waitSecs} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(c.acquired, float64(s.AcquiredConns()))
	gauge(c.idle, float64(s.IdleConns()))
	gauge(c.total, float64(s.TotalConns()))
	gauge(c.max, float64(s.MaxConns()))
	counter(c.acquires, float64(s.AcquireCount()))
	counter(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	counter(c.canceled, float64(s.CanceledAcquireCount()))
	counter(c.waitSecs, s.AcquireDuration().Seconds())
}

// RegisterPool registers the collector of service's pool on reg. In the single binary
// writer and query share one pool, so both report it.
func RegisterPool(reg prometheus.Registerer, service string, pool *pgxpool.Pool) error {
	if err := reg.Register(NewPoolCollector(service, pool)); err != nil {
		return fmt.Errorf("register %s pool metrics: %w", service, err)
	}
	return nil
}
