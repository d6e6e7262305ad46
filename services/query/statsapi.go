package query

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/limiter"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/haru-analytics/haru/services/query/internal/account"
	"github.com/haru-analytics/haru/services/query/internal/live"
	"github.com/haru-analytics/haru/services/query/internal/stats"
)

// Defaults of the stats routes.
const (
	panelLimit     = 10
	breakdownLimit = 100
)

// mountStats registers the stats routes on r. Every handler reads the site from
// c.Locals(localSite) (an account.Site), set by whichever auth middleware ran before.
func (s *Service) mountStats(r fiber.Router) {
	r.Get("/dashboard", s.traced, mapErrors, s.handleDashboard)
	r.Get("/aggregate", s.traced, mapErrors, s.handleAggregate)
	r.Get("/timeseries", s.traced, mapErrors, s.handleTimeseries)
	r.Get("/breakdown", s.traced, mapErrors, s.handleBreakdown)
	r.Get("/export.csv", s.traced, mapErrors, s.handleExport)
	r.Get("/live", s.traced, mapErrors, s.handleLive)
}

// traced records a span per stats request, parent of its SQL spans. It names the route
// pattern and the site, never the caller's address or user agent.
func (s *Service) traced(c *fiber.Ctx) error {
	ctx, span := s.tracer.Start(c.UserContext(), c.Method()+" "+c.Route().Path, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.route", c.Route().Path), attribute.String("http.request.method", c.Method())))
	defer span.End()
	if site, ok := c.Locals(localSite).(account.Site); ok {
		span.SetAttributes(attribute.Int64("haru.site_id", site.ID))
	}
	c.SetUserContext(ctx)
	err := c.Next()
	status := c.Response().StatusCode()
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if err != nil || status >= 500 {
		span.SetStatus(codes.Error, "request failed")
	}
	return err
}

// rateLimit bounds each API key to cfg.APIRateLimit requests a minute; beyond it a 429
// says when to retry.
func (s *Service) rateLimit() fiber.Handler {
	return limiter.New(limiter.Config{
		Max:        s.cfg.APIRateLimit,
		Expiration: time.Minute,
		KeyGenerator: func(c *fiber.Ctx) string {
			sum := sha256.Sum256([]byte(apiKeyOf(c)))
			return hex.EncodeToString(sum[:16])
		},
		LimitReached: func(c *fiber.Ctx) error {
			return c.Status(fiber.StatusTooManyRequests).JSON(fiber.Map{"error": "rate limit exceeded; retry after the Retry-After seconds"})
		},
	})
}

// view is a parsed stats query of a site.
type view struct {
	site  account.Site
	query stats.Query
}

// siteLocation is the site's timezone (UTC if the stored name does not load).
func siteLocation(site account.Site) *time.Location {
	loc, err := time.LoadLocation(site.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// parseView reads the query parameters of a stats request for site.
func (s *Service) parseView(ctx context.Context, site account.Site, v url.Values, limit int, compare bool) (view, error) {
	loc := siteLocation(site)
	var first time.Time
	if v.Get("period") == "all" {
		var err error
		if first, err = s.stats.FirstDay(ctx, site.ID, loc); err != nil {
			return view{}, err
		}
	}
	q, err := stats.ParseQuery(v, s.clock.Now(), first, loc, limit, compare)
	if err != nil {
		return view{}, err
	}
	return view{site: site, query: q}, nil
}

// requestView is the site and query of a stats request.
func (s *Service) requestView(c *fiber.Ctx, limit int, compare bool) (view, error) {
	v := url.Values{}
	c.Context().QueryArgs().VisitAll(func(k, val []byte) {
		v.Add(string(k), string(val))
	})
	return s.parseView(c.UserContext(), c.Locals(localSite).(account.Site), v, limit, compare)
}

func (s *Service) dashboard(ctx context.Context, v view) (stats.Dashboard, error) {
	info := stats.SiteInfo{ID: v.site.ID, Name: v.site.Name, Domain: v.site.Domain, Timezone: v.site.Timezone}
	defer s.metrics.timeStats()()
	return s.stats.Dashboard(ctx, info, v.query, s.clock.Now())
}

func (s *Service) handleDashboard(c *fiber.Ctx) error {
	v, err := s.requestView(c, panelLimit, true)
	if err != nil {
		return err
	}
	d, err := s.dashboard(c.UserContext(), v)
	if err != nil {
		return err
	}
	return c.JSON(d)
}

func (s *Service) handleAggregate(c *fiber.Ctx) error {
	v, err := s.requestView(c, panelLimit, true)
	if err != nil {
		return err
	}
	res, err := s.stats.Aggregate(c.UserContext(), v.site.ID, v.query)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"period": v.query.Period, "results": res})
}

func (s *Service) handleTimeseries(c *fiber.Ctx) error {
	v, err := s.requestView(c, panelLimit, false)
	if err != nil {
		return err
	}
	res, err := s.stats.Timeseries(c.UserContext(), v.site.ID, v.query)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"period": v.query.Period, "interval": v.query.Period.Interval, "results": res})
}

// breakdownView is a request's view with its dimension.
func (s *Service) breakdownView(c *fiber.Ctx) (view, error) {
	v, err := s.requestView(c, breakdownLimit, false)
	if err != nil {
		return view{}, err
	}
	v.query, err = v.query.WithDimension(c.Query("dimension"))
	return v, err
}

func (s *Service) handleBreakdown(c *fiber.Ctx) error {
	v, err := s.breakdownView(c)
	if err != nil {
		return err
	}
	rows, err := s.stats.Breakdown(c.UserContext(), v.site.ID, v.query)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"period": v.query.Period, "dimension": v.query.Dimension, "results": rows})
}

// handleExport answers the view as CSV: the rows of ?dimension= when given, else the
// time series.
func (s *Service) handleExport(c *fiber.Ctx) error {
	var (
		name    string
		metrics []string
		records []map[string]any
	)
	if c.Query("dimension") != "" {
		v, err := s.breakdownView(c)
		if err != nil {
			return err
		}
		rows, err := s.stats.Breakdown(c.UserContext(), v.site.ID, v.query)
		if err != nil {
			return err
		}
		name, metrics = v.query.Dimension, v.query.Metrics
		if len(metrics) == 0 {
			metrics = stats.BreakdownMetrics(name)
		}
		for _, r := range rows {
			records = append(records, map[string]any{name: r["value"]})
			maps.Copy(records[len(records)-1], r)
		}
	} else {
		v, err := s.requestView(c, panelLimit, false)
		if err != nil {
			return err
		}
		points, err := s.stats.Timeseries(c.UserContext(), v.site.ID, v.query)
		if err != nil {
			return err
		}
		name, metrics = "date", v.query.Metrics
		if len(metrics) == 0 {
			metrics = stats.AllMetrics
		}
		for _, p := range points {
			records = append(records, map[string]any(p))
		}
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	_ = w.Write(append([]string{name}, metrics...)) // writes to a strings.Builder cannot fail
	for _, r := range records {
		line := []string{formatCell(r[name])}
		for _, m := range metrics {
			line = append(line, formatCell(r[m]))
		}
		_ = w.Write(line)
	}
	w.Flush()
	if name == "date" {
		name = "timeseries"
	}
	site := c.Locals(localSite).(account.Site)
	c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
	c.Set(fiber.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="haru-site%d-%s.csv"`, site.ID, name))
	return c.SendString(b.String())
}

// formatCell writes a number, a time or a string as a CSV cell. Strings are what
// visitors' beacons chose (a page path, a referrer, a property): one a spreadsheet would
// read as a formula gets a leading quote, which shows it as text (OWASP's advice against
// CSV injection), lest a path like =HYPERLINK(...) run in the site owner's spreadsheet.
func formatCell(v any) string {
	switch v := v.(type) {
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case time.Time:
		return v.Format(time.RFC3339)
	case string:
		if v != "" && strings.ContainsRune(formulaStarts, rune(v[0])) {
			return "'" + v
		}
		return v
	}
	return fmt.Sprint(v)
}

// formulaStarts are the first characters that make a spreadsheet read a cell as a formula.
const formulaStarts = "=+-@\t\r"

// handleLive streams Server-Sent Events: "stats" with the view's dashboard on connect
// and after every update of the site, and a comment every heartbeat so a vanished viewer
// is noticed. The hub computes each distinct view once per update, however many watch.
func (s *Service) handleLive(c *fiber.Ctx) error {
	v, err := s.requestView(c, panelLimit, true)
	if err != nil {
		return err
	}
	sub, err := s.hub.Add(v.site.ID, v.query.Canonical())
	if errors.Is(err, live.ErrTooManyViews) {
		c.Set(fiber.HeaderRetryAfter, "60")
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"error": err.Error() + "; watch one of them, or retry later"})
	}
	if c.Method() == fiber.MethodHead {
		// Whether the stream would open, without computing its first frame.
		sub.Remove()
		c.Set(fiber.HeaderContentType, "text/event-stream")
		return nil
	}
	d, err := s.dashboard(c.UserContext(), v)
	if err != nil {
		sub.Remove()
		return err
	}
	data, err := json.Marshal(d)
	if err != nil {
		sub.Remove()
		return err
	}
	first := eventFrame("stats", data)
	return streamEvents(s, c, sub.C,
		func(w eventConn) error {
			err := w.send(first)
			first = nil // a stream lives for hours: keep nothing of its first frame
			return err
		},
		eventConn.send, // the hub's frames are encoded once for every stream of the view
		sub.Remove)
}

// renderView is the hub's ComputeFunc: the dashboard of a view (the canonical query
// string) as the "stats" event its streams send, computed and encoded once per update
// however many streams show it.
func (s *Service) renderView(ctx context.Context, siteID int64, key string) ([]byte, error) {
	site, err := s.accounts.SiteByID(ctx, siteID)
	if err != nil {
		return nil, err
	}
	values, err := url.ParseQuery(key)
	if err != nil {
		return nil, fmt.Errorf("view %q: %w", key, err)
	}
	v, err := s.parseView(ctx, site, values, panelLimit, true)
	if err != nil {
		return nil, err
	}
	d, err := s.dashboard(ctx, v)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	return eventFrame("stats", data), nil
}
