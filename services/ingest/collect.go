package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest/internal/bot"
	"github.com/haru-analytics/haru/services/ingest/internal/collect"
	"github.com/haru-analytics/haru/services/ingest/internal/enrich"
	"github.com/haru-analytics/haru/services/ingest/internal/ratelimit"
	"github.com/haru-analytics/haru/services/ingest/internal/registry"
	"github.com/haru-analytics/haru/services/ingest/internal/uacache"
	"github.com/haru-analytics/haru/services/ingest/internal/visitor"
)

// MaxRequestBytes is the largest request body the app reads at all; the handlers
// themselves answer 413 above collect.MaxBodyBytes (collect) and collect.MaxBatchBytes
// (batch), with a JSON body naming the limit.
const MaxRequestBytes = 2 * collect.MaxBatchBytes

// Errors the collect path maps to HTTP answers in reject, the one place that does.
var (
	ErrUnknownToken = errors.New("unknown site token")
	ErrNoToken      = errors.New("missing site token: send Authorization: Bearer <token> or ?t=<token>")
	ErrUnavailable  = errors.New("cannot accept events right now, retry later")
	ErrTooLarge     = fmt.Errorf("body too large: at most %d bytes", collect.MaxBodyBytes)
	ErrContentType  = errors.New("unsupported content type: send application/json or text/plain")
	ErrEncoding     = errors.New("unsupported content encoding: send the body uncompressed")
	ErrEventTooBig  = fmt.Errorf("event too large: its message would exceed %d bytes", natsutil.MaxEventBytes)
	ErrRateLimited  = errors.New("too many events from this address, retry later")
)

// Reasons a beacon is answered 202 but not stored, the label values of
// haru_ingest_events_dropped_total.
const (
	dropForeignHost = "foreign_host"
)

// handleCollect is a beacon's whole path through ingest, top to bottom.
func (s *Service) handleCollect(c *fiber.Ctx) error {
	// 1. Is it a beacon at all? Cheap checks first, before any lookup.
	if !acceptedContentType(c.Get(fiber.HeaderContentType)) {
		return s.reject(c, fiber.StatusUnsupportedMediaType, "content_type", ErrContentType)
	}
	// Beacons are small and sent uncompressed; the body as sent, never c.Body(), which
	// would unpack it.
	if server.Compressed(c) {
		return s.reject(c, fiber.StatusUnsupportedMediaType, "content_encoding", ErrEncoding)
	}
	body := c.Request().Body()
	if len(body) > collect.MaxBodyBytes {
		return s.reject(c, fiber.StatusRequestEntityTooLarge, "too_large", ErrTooLarge)
	}

	// 2. Who sends it, and too often? The address is counted per replica and goes no
	// further than this function and the visitor hash.
	now := s.clock.Now()
	peer := peerAddr(c)
	ip := s.clientIP.ClientIP(peer, func() string { return c.Get(s.clientIP.Header()) })
	if s.limiter != nil {
		if ok, wait := s.limiter.Allow(ratelimit.Key(ip), now); !ok {
			return s.rateLimited(c, wait, "rate_limited", ErrRateLimited)
		}
	}

	// 3. Which site? The registry is in memory; until its first load we cannot tell an
	// unknown token from one not seen yet, so that is a 503, not a 401.
	token := bearerToken(c)
	if token == "" {
		return s.reject(c, fiber.StatusUnauthorized, "no_token", ErrNoToken)
	}
	site, ok, err := s.sites.Lookup(token)
	if !ok {
		return s.unknownSite(c, err, "unknown_token", ErrUnknownToken)
	}

	// 4. What happened? Refuse bad input with the field that is wrong.
	p, err := collect.Parse(body)
	if err != nil {
		return s.reject(c, fiber.StatusBadRequest, "bad_payload", err)
	}
	page := enrich.ParsePage(p.URL, p.Path, p.HashMode)
	if err := collect.CheckPagePath(page.Path); err != nil {
		return s.reject(c, fiber.StatusBadRequest, "bad_payload", err)
	}

	// 5. Is it a person on this site? Bots, prefetches and other sites' pages get a 202
	// (they learn nothing) and are dropped, counted by reason.
	userAgent := c.Get(fiber.HeaderUserAgent)
	agent := s.agents.Get(userAgent)
	if reason := bot.Check(bot.Request{
		Agent:   agent.botReason,
		Purpose: c.Get("Purpose"), SecPurpose: c.Get("Sec-Purpose"), XMoz: c.Get("X-Moz"),
	}); reason != "" {
		return s.drop(c, reason)
	}
	if !s.hostAllowed(site, page.Host, c.Get(fiber.HeaderOrigin)) {
		return s.drop(c, dropForeignHost)
	}

	// 6. Which visitor? A keyed hash under the salt of the site's local date. Every wait
	// below is bounded by PublishTimeout: the salt store's and the PubAck's own timers.
	ctx := c.UserContext()
	daySalt, err := s.salts.ForDate(ctx, s.zones.get(site.Timezone).localDate(now))
	if err != nil {
		s.log.ErrorContext(ctx, "salt unavailable", "err", err)
		return s.reject(c, fiber.StatusServiceUnavailable, "salt_unavailable", ErrUnavailable)
	}
	ev, err := event.New(now, site.ID, p.Name)
	if err != nil {
		return err
	}
	ev.Visitor = visitor.ID(daySalt, site.ID, ip, userAgent)
	if p.SendID != 0 {
		// A retry of a beacon ingest may have stored already is the same event.
		ev.ID = visitor.EventID(daySalt, site.ID, ev.Visitor, body)
	}

	// 7. Describe it.
	ev.Hostname, ev.Path = page.Host, page.Path
	ev.UTMSource, ev.UTMMedium, ev.UTMCampaign = page.UTM.Source, page.UTM.Medium, page.UTM.Campaign
	ev.UTMTerm, ev.UTMContent = page.UTM.Term, page.UTM.Content
	if ev.RefSource = enrich.RefSource(p.Referrer, page.Host, site.Domain); ev.RefSource != "" {
		ev.Referrer = p.Referrer // a self-referral is internal navigation: no referrer at all
	}
	trusted := s.clientIP.Trusted(peer)
	ev.Country = enrich.Country(ip, c.Get(s.cfg.CountryHeader), trusted)
	if ev.Region = enrich.Region(ev.Country, c.Get(s.cfg.RegionHeader), trusted); ev.Region == "" {
		ev.Region = s.regions.Region(ip, ev.Country)
	}
	ev.Browser, ev.OS = agent.Browser, agent.OS
	ev.Device = enrich.Device(agent.Device, p.ScreenW)
	ev.ScreenW, ev.ScreenH = p.ScreenW, p.ScreenH
	ev.DurationMS = p.DurationMS
	ev.Props = p.Props

	// 8. Make it durable: 202 only after JetStream's PubAck, 503 if it does not come in
	// time (NATS down, stream full), so the tracker may retry.
	if err := s.publish(ctx, &ev); errors.Is(err, ErrEventTooBig) {
		return s.reject(c, fiber.StatusRequestEntityTooLarge, "too_large", err)
	} else if err != nil {
		s.log.WarnContext(ctx, "publish failed", "site_id", site.ID, "err", err)
		return s.reject(c, fiber.StatusServiceUnavailable, "publish_failed", ErrUnavailable)
	}
	s.metrics.accepted.Inc()
	c.Status(fiber.StatusAccepted)
	return nil
}

// hostAllowed reports whether a beacon's page belongs to site: its host (from the page
// URL, else the Origin header) must be the site's domain or a subdomain. A beacon that
// names no page at all (curl, server-side senders) is accepted, as is any host when the
// site allows any or has no domain set.
func (s *Service) hostAllowed(site event.Site, pageHost, origin string) bool {
	if site.AllowAnyHost || site.Domain == "" {
		return true
	}
	host := pageHost
	if host == "" && origin != "" && origin != "null" {
		host = enrich.ParsePage(origin, "", false).Host
		if host == "" {
			return false // an Origin we cannot read is no evidence of the right site
		}
	}
	return host == "" || enrich.SameSite(host, site.Domain)
}

// publish stores ev in the stream and waits for its PubAck until ctx ends.
func (s *Service) publish(ctx context.Context, ev *event.Event) error {
	if trace.SpanContextFromContext(ctx).IsValid() {
		var span trace.Span
		ctx, span = s.tracer.Start(ctx, "jetstream publish", trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(attribute.Int64("haru.site_id", ev.SiteID), attribute.String("haru.event_id", ev.ID.String())))
		defer span.End()
		err := s.publishAndWait(ctx, ev)
		if err != nil {
			span.SetStatus(codes.Error, "publish failed")
		}
		return err
	}
	return s.publishAndWait(ctx, ev)
}

func (s *Service) publishAndWait(ctx context.Context, ev *event.Event) error {
	start := time.Now()
	o, err := s.publishAsync(ctx, ev)
	if err == nil {
		err = s.awaitAck(ctx, o)
	}
	s.metrics.publishSeconds.Observe(time.Since(start).Seconds())
	return err
}

// outMsg is one event's message on its way to the stream, with what the publisher
// needs to match its PubAck. Each is reused, once the publisher holds it no longer.
type outMsg struct {
	msg nats.Msg
	// header is the message's own: Nats-Msg-Id, its value set in place for each event.
	header nats.Header
	msgID  []string

	token uint64     // the publisher's, in the reply subject
	sent  time.Time  // the last publish: the PubAck deadline counts from it
	acked chan error // the PubAck's outcome
	timer *time.Timer
}

func newOutMsg() any {
	o := &outMsg{msgID: make([]string, 1), acked: make(chan error, 1), timer: time.NewTimer(time.Hour)}
	o.timer.Stop()
	o.header = nats.Header{jetstream.MsgIDHeader: o.msgID}
	o.msg.Data = make([]byte, 0, 1024)
	return o
}

// publishAsync sends ev to the stream and returns it awaiting its PubAck: no round trip
// is waited for here, so one connection carries many beacons' publishes at once (up to
// publishWindow). The event id is the message id, so JetStream drops a retried publish
// within its duplicate window.
func (s *Service) publishAsync(ctx context.Context, ev *event.Event) (*outMsg, error) {
	o := s.outMsgs.Get().(*outMsg)
	data, err := event.AppendEncode(o.msg.Data[:0], ev)
	if err == nil && len(data) > natsutil.MaxEventBytes {
		// The stream would refuse it, and would again on every retry: refused here, as
		// the sender's to fix. The payload limits keep a beacon far below this.
		err = ErrEventTooBig
	}
	if err != nil {
		s.outMsgs.Put(o)
		return nil, err
	}
	o.msg.Subject, o.msg.Data, o.msg.Header, o.msgID[0] = s.subjects.get(ev.SiteID), data, o.header, ev.ID.String()
	if trace.SpanContextFromContext(ctx).IsValid() {
		// The writer continues the trace from the message headers: a traced message has
		// headers of its own.
		o.msg.Header = nats.Header{jetstream.MsgIDHeader: {o.msgID[0]}}
		s.propagator.Inject(ctx, telemetry.HeaderCarrier(o.msg.Header))
	}
	if err := s.pub.publish(o); err != nil {
		s.outMsgs.Put(o)
		return nil, fmt.Errorf("publish event: %w", err)
	}
	return o, nil
}

// awaitAck waits for a publish's PubAck until ctx ends or PublishTimeout has passed
// since the publish. The message is reused afterwards.
func (s *Service) awaitAck(ctx context.Context, o *outMsg) error {
	err := s.pub.await(ctx, o)
	s.outMsgs.Put(o)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("publish event: no PubAck: %w", err)
		}
		return fmt.Errorf("publish event: %w", err)
	}
	return nil
}

// subjectCache keeps each site's event subject, formatted once rather than per beacon.
type subjectCache struct {
	names  event.Names
	mu     sync.RWMutex
	bySite map[int64]string
}

// maxSubjects bounds the cache; past it, it starts over (sites come and go).
const maxSubjects = 1 << 16

func newSubjectCache(names event.Names) *subjectCache {
	return &subjectCache{names: names, bySite: map[int64]string{}}
}

func (c *subjectCache) get(site int64) string {
	c.mu.RLock()
	subj, ok := c.bySite[site]
	c.mu.RUnlock()
	if ok {
		return subj
	}
	subj = c.names.EventSubject(site)
	c.mu.Lock()
	if len(c.bySite) >= maxSubjects {
		clear(c.bySite)
	}
	c.bySite[site] = subj
	c.mu.Unlock()
	return subj
}

// traceRequest opens a request's span. It records the route and the status
// only: never the client's address or User-Agent.
func (s *Service) traceRequest(c *fiber.Ctx) error {
	if !s.traced {
		return c.Next()
	}
	ctx, span := s.tracer.Start(c.UserContext(), "POST "+c.Route().Path, trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	c.SetUserContext(ctx)
	err := c.Next()
	span.SetAttributes(attribute.Int("http.response.status_code", c.Response().StatusCode()))
	return err
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

// unknownSite answers a failed registry lookup: 503 while the registry has not loaded
// (a key not seen yet is not known to be unknown), else 401.
func (s *Service) unknownSite(c *fiber.Ctx, err error, reason string, unknown error) error {
	if errors.Is(err, registry.ErrNotLoaded) {
		return s.reject(c, fiber.StatusServiceUnavailable, "registry_loading", ErrUnavailable)
	}
	return s.reject(c, fiber.StatusUnauthorized, reason, unknown)
}

// rateLimited answers 429 with the whole seconds until the window ends as Retry-After.
func (s *Service) rateLimited(c *fiber.Ctx, wait time.Duration, reason string, err error) error {
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	return s.reject(c, fiber.StatusTooManyRequests, reason, err)
}

// drop answers a beacon that will not be stored exactly as a stored one, counting why.
func (s *Service) drop(c *fiber.Ctx, reason string) error {
	s.metrics.droppedWith(reason).Inc()
	c.Status(fiber.StatusAccepted)
	return nil
}

// acceptedContentType allows JSON, sendBeacon's text/plain, and no type at all (some
// server-side senders omit it); anything else is not a beacon.
func acceptedContentType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	return mt == "" || strings.EqualFold(mt, fiber.MIMEApplicationJSON) || strings.EqualFold(mt, fiber.MIMETextPlain)
}

// countStatus returns the handler that counts every answer of one route by status. An
// error escaping the handler is answered later by the app's error handler, so its status
// is taken from the error.
func (s *Service) countStatus() fiber.Handler {
	var route atomic.Pointer[routeSeconds]
	return func(c *fiber.Ctx) error {
		start := time.Now()
		err := c.Next()
		status := c.Response().StatusCode()
		if err != nil {
			status = fiber.StatusInternalServerError
			var fe *fiber.Error
			if errors.As(err, &fe) {
				status = fe.Code
			}
		}
		s.metrics.requestsWith(status).Inc()
		// The route's histogram child is looked up once, not per request.
		path := c.Route().Path
		r := route.Load()
		if r == nil || r.path != path {
			r = &routeSeconds{path: path, seconds: s.metrics.requestSeconds.WithLabelValues(path)}
			route.Store(r)
		}
		r.seconds.Observe(time.Since(start).Seconds())
		return err
	}
}

// routeSeconds is one route's child of haru_ingest_http_request_seconds.
type routeSeconds struct {
	path    string
	seconds prometheus.Observer
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

// agentVerdict is what one User-Agent tells ingest: the parsed agent and bot.UserAgent's
// verdict on it. Both cost microseconds and depend on the string alone, so they are
// cached per User-Agent.
type agentVerdict struct {
	enrich.Agent
	botReason string // "" for a person
}

// agentCacheSize is the entries of one generation of the User-Agent cache (two are
// kept): the browser versions of most of a day's traffic, in under a megabyte.
const agentCacheSize = 4096

func newAgentCache() (*uacache.Cache[agentVerdict], error) {
	agents := enrich.NewAgents()
	return uacache.New(agentCacheSize, func(ua string) agentVerdict {
		a := agents.Parse(ua)
		return agentVerdict{Agent: a, botReason: bot.UserAgent(ua, a.Bot)}
	})
}

// zoneCache keeps loaded timezones: time.LoadLocation reads the tz database each call.
type zoneCache struct {
	mu    sync.RWMutex
	zones map[string]*zone
}

func newZoneCache() *zoneCache { return &zoneCache{zones: map[string]*zone{}} }

// get returns the named zone, or UTC for a name the tz database does not know.
func (z *zoneCache) get(name string) *zone {
	z.mu.RLock()
	zn, ok := z.zones[name]
	z.mu.RUnlock()
	if ok {
		return zn
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		loc = time.UTC
	}
	zn = &zone{loc: loc}
	z.mu.Lock()
	z.zones[name] = zn
	z.mu.Unlock()
	return zn
}

// zone is a loaded timezone and the last local date asked of it.
type zone struct {
	loc  *time.Location
	last atomic.Pointer[zoneDay]
}

// zoneDay is a local date and the day number of the wall clock it belongs to.
type zoneDay struct {
	day  int64
	date string
}

// localDate is visitor.LocalDate(t, z.loc) without formatting (and allocating) the
// same date for every beacon: the date is the day of t's wall clock, so it changes
// only when that day number does, whatever the offset did meanwhile.
func (z *zone) localDate(t time.Time) string {
	_, offset := t.In(z.loc).Zone()
	wall := t.Unix() + int64(offset)
	day := wall / 86400
	if wall%86400 < 0 {
		day-- // floor, for wall clocks before 1970
	}
	if d := z.last.Load(); d != nil && d.day == day {
		return d.date
	}
	date := visitor.LocalDate(t, z.loc)
	z.last.Store(&zoneDay{day: day, date: date})
	return date
}

// metrics are ingest's Prometheus series.
type metrics struct {
	requests       *prometheus.CounterVec
	accepted       prometheus.Counter
	dropped        *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	publishSeconds prometheus.Histogram
	requestSeconds *prometheus.HistogramVec

	// byStatus caches requests' child per HTTP status (100..599), each resolved on first
	// use so no series appears before its first answer. A label lookup formats, hashes
	// and locks on every request; these are a load.
	byStatus [500]atomic.Pointer[prometheus.Counter]
	// byReason holds dropped's children for the known reasons; read-only after start.
	byReason map[string]prometheus.Counter
}

// droppedWith is the child of haru_ingest_events_dropped_total for reason.
func (m *metrics) droppedWith(reason string) prometheus.Counter {
	if c, ok := m.byReason[reason]; ok {
		return c
	}
	return m.dropped.WithLabelValues(reason)
}

// requestsWith is the child of haru_ingest_requests_total for status.
func (m *metrics) requestsWith(status int) prometheus.Counter {
	i := status - 100
	if i < 0 || i >= len(m.byStatus) {
		return m.requests.WithLabelValues(strconv.Itoa(status))
	}
	if c := m.byStatus[i].Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(strconv.Itoa(status))
	m.byStatus[i].Store(&c)
	return c
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haru_ingest_requests_total", Help: "Collect requests answered, by HTTP status.",
		}, []string{"status"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haru_ingest_events_dropped_total", Help: "Beacons answered 202 but not stored, by reason.",
		}, []string{"reason"}),
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
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "haru_ingest_http_request_seconds", Help: "Time to answer a collect request, by route.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.accepted, m.dropped, m.rejected, m.publishSeconds, m.requestSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ingest metrics: %w", err)
		}
	}
	// Start every drop reason at zero so a rate() over it exists before the first drop.
	m.byReason = map[string]prometheus.Counter{}
	for _, r := range []string{bot.ReasonUserAgent, bot.ReasonPrefetch, dropForeignHost} {
		m.byReason[r] = m.dropped.WithLabelValues(r)
	}
	return m, nil
}
