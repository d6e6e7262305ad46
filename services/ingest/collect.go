package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/services/ingest/internal/collect"
	"github.com/haru-analytics/haru/services/ingest/internal/registry"
	"github.com/haru-analytics/haru/services/ingest/internal/visitor"
)

// MaxRequestBytes is the largest request body ingest reads; bigger ones get 413.
const MaxRequestBytes = 64 << 10

// Errors the collect path maps to HTTP answers in errorHandler, the one place that does.
var (
	ErrUnknownToken = errors.New("unknown site token")
	ErrNoToken      = errors.New("missing site token: send Authorization: Bearer <token> or ?t=<token>")
	ErrUnavailable  = errors.New("cannot accept events right now, retry later")
)

// handleCollect is a beacon's whole path through ingest, top to bottom.
func (s *Service) handleCollect(c *fiber.Ctx) error {
	// 1. Which site? The registry is in memory; until its first load we cannot tell an
	// unknown token from one not seen yet, so that is a 503, not a 401.
	token := bearerToken(c)
	if token == "" {
		return s.reject(c, fiber.StatusUnauthorized, "no_token", ErrNoToken)
	}
	site, ok, err := s.sites.Lookup(token)
	if errors.Is(err, registry.ErrNotLoaded) {
		return s.reject(c, fiber.StatusServiceUnavailable, "registry_loading", ErrUnavailable)
	}
	if !ok {
		return s.reject(c, fiber.StatusUnauthorized, "unknown_token", ErrUnknownToken)
	}

	// 2. What happened? Refuse bad input with the field that is wrong.
	p, err := collect.Parse(c.Body())
	if err != nil {
		return s.reject(c, fiber.StatusBadRequest, "bad_payload", err)
	}

	// 3. Who did it? A keyed hash under the salt of the site's local date; the IP and
	// User-Agent go no further than this function.
	now := s.clock.Now()
	loc := s.zones.get(site.Timezone)
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.PublishTimeout)
	defer cancel()
	daySalt, err := s.salts.ForDate(ctx, visitor.LocalDate(now, loc))
	if err != nil {
		s.log.Error("salt unavailable", "err", err)
		return s.reject(c, fiber.StatusServiceUnavailable, "salt_unavailable", ErrUnavailable)
	}
	ip := s.clientIP.ClientIP(peerAddr(c), func() string { return c.Get(s.clientIP.Header()) })
	ev, err := event.New(now, site.ID, p.Name)
	if err != nil {
		return err
	}
	ev.Visitor = visitor.ID(daySalt, site.ID, ip.String(), c.Get(fiber.HeaderUserAgent))

	// 4. Enrich.
	ev.Path = p.Path
	ev.Referrer = p.Referrer
	ev.ScreenW, ev.ScreenH = p.ScreenW, p.ScreenH
	ev.DurationMS = p.DurationMS
	ev.Props = p.Props

	// 5. Make it durable: 202 only after JetStream's PubAck.
	if err := s.publish(ctx, &ev); err != nil {
		s.log.Warn("publish failed", "site_id", site.ID, "err", err)
		return s.reject(c, fiber.StatusServiceUnavailable, "publish_failed", ErrUnavailable)
	}
	s.metrics.accepted.Inc()
	c.Status(fiber.StatusAccepted)
	return nil
}

// publish stores ev in the stream. The event id is the message id, so JetStream drops a
// retried publish within its duplicate window.
func (s *Service) publish(ctx context.Context, ev *event.Event) error {
	data, err := event.Encode(ev)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = s.js.Publish(ctx, s.names.EventSubject(ev.SiteID), data, jetstream.WithMsgID(ev.ID.String()))
	s.metrics.publishSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	return nil
}

// reject answers a refused beacon with a JSON error and counts it by reason.
func (s *Service) reject(c *fiber.Ctx, status int, reason string, err error) error {
	s.metrics.rejected.WithLabelValues(reason).Inc()
	body := fiber.Map{"error": err.Error()}
	var fe *collect.FieldError
	if errors.As(err, &fe) {
		body = fiber.Map{"error": fe.Reason}
		if fe.Field != "" {
			body["field"] = fe.Field
		}
	}
	if status == fiber.StatusServiceUnavailable {
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	return c.Status(status).JSON(body)
}

func bearerToken(c *fiber.Ctx) string {
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
		return ""
	}
	return c.Query("t")
}

func peerAddr(c *fiber.Ctx) netip.Addr {
	a, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	return a
}

// cors lets any site's page send beacons with sendBeacon or fetch(keepalive). The
// beacon carries no cookies, so a wildcard origin is safe.
func (s *Service) cors(c *fiber.Ctx) error {
	c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
	return c.Next()
}

// preflight answers CORS preflights without touching the registry or NATS, and lets the
// browser cache the answer for a day.
func (s *Service) preflight(c *fiber.Ctx) error {
	c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
	c.Set(fiber.HeaderAccessControlAllowMethods, "POST, OPTIONS")
	c.Set(fiber.HeaderAccessControlAllowHeaders, "Content-Type, Authorization")
	c.Set(fiber.HeaderAccessControlMaxAge, "86400")
	return c.SendStatus(fiber.StatusNoContent)
}

// zoneCache keeps loaded timezones: time.LoadLocation reads the tz database each call.
type zoneCache struct {
	mu    sync.RWMutex
	zones map[string]*time.Location
}

func newZoneCache() *zoneCache { return &zoneCache{zones: map[string]*time.Location{}} }

// get returns the named zone, or UTC for a name the tz database does not know.
func (z *zoneCache) get(name string) *time.Location {
	z.mu.RLock()
	loc, ok := z.zones[name]
	z.mu.RUnlock()
	if ok {
		return loc
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		loc = time.UTC
	}
	z.mu.Lock()
	z.zones[name] = loc
	z.mu.Unlock()
	return loc
}

// metrics are ingest's Prometheus series.
type metrics struct {
	accepted       prometheus.Counter
	rejected       *prometheus.CounterVec
	publishSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haru_ingest_events_accepted_total", Help: "Events stored in JetStream and answered 202.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haru_ingest_requests_rejected_total", Help: "Beacons refused, by reason.",
		}, []string{"reason"}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "haru_ingest_publish_seconds", Help: "Time from publish to JetStream PubAck.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1},
		}),
	}
	for _, c := range []prometheus.Collector{m.accepted, m.rejected, m.publishSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ingest metrics: %w", err)
		}
	}
	return m, nil
}
