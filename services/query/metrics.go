package query

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the query service's Prometheus series.
type metrics struct {
	requests     *prometheus.CounterVec
	seconds      *prometheus.HistogramVec
	statsSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, liveStreams func() float64) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haru_query_http_requests_total", Help: "Query requests answered, by route and HTTP status.",
		}, []string{"route", "status"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "haru_query_http_request_seconds", Help: "Time to answer a query request (a live stream: to its first frame), by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		statsSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "haru_query_stats_seconds", Help: "Time to compute a site's dashboard figures, for the dashboard API and for each live view update.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	sse := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "haru_query_sse_connections", Help: "Open live streams.",
	}, liveStreams)
	for _, c := range []prometheus.Collector{m.requests, m.seconds, m.statsSeconds, sse} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register query metrics: %w", err)
		}
	}
	return m, nil
}

// observe counts a request by its route pattern (never the raw path, which holds ids)
// and the status it was answered with.
func (m *metrics) observe(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	route := c.Route().Path
	status := c.Response().StatusCode()
	if err != nil {
		if fe := (*fiber.Error)(nil); errors.As(err, &fe) {
			status = fe.Code
		} else {
			status = fiber.StatusInternalServerError
		}
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.seconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
	return err
}

// timeStats starts timing a dashboard computation; call the returned func when it ends.
func (m *metrics) timeStats() func() {
	t := prometheus.NewTimer(m.statsSeconds)
	return func() { t.ObserveDuration() }
}
