package query

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/haru-analytics/haru/services/query/internal/account"
	"github.com/haru-analytics/haru/services/query/internal/stats"
)

// Locals keys set by middleware.
const (
	localUser = "user_id"
	localSite = "site"
)

// requireAPIKey authenticates a request by API key: `Authorization: Bearer <key>`, or
// `?key=` for EventSource, which cannot set headers.
func (s *Service) requireAPIKey(c *fiber.Ctx) error {
	key := ""
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		key, _ = strings.CutPrefix(h, "Bearer ")
	} else {
		key = c.Query("key")
	}
	if key == "" {
		return account.ErrUnauthorized
	}
	user, err := s.accounts.UserByAPIKey(c.UserContext(), strings.TrimSpace(key))
	if err != nil {
		return err
	}
	c.Locals(localUser, user)
	return c.Next()
}

// withSite loads the :site of the route if the caller owns it. Any other site id, a
// missing one or someone else's, is a 404: existence is not disclosed.
func (s *Service) withSite(c *fiber.Ctx) error {
	id, err := strconv.ParseInt(c.Params("site"), 10, 64)
	if err != nil || id <= 0 {
		return account.ErrNotFound
	}
	site, err := s.accounts.SiteOf(c.UserContext(), c.Locals(localUser).(int64), id)
	if err != nil {
		return err
	}
	c.Locals(localSite, site)
	return c.Next()
}

func (s *Service) handleSites(c *fiber.Ctx) error {
	sites, err := s.accounts.SitesOf(c.UserContext(), c.Locals(localUser).(int64))
	if err != nil {
		return err
	}
	if sites == nil {
		sites = []account.Site{}
	}
	return c.JSON(fiber.Map{"sites": sites})
}

// statsBody is the JSON of a site's figures for a period.
type statsBody struct {
	SiteID  int64         `json:"site_id"`
	Period  stats.Period  `json:"period"`
	Summary stats.Summary `json:"summary"`
}

// figures computes a site's statsBody for a named period.
func (s *Service) figures(ctx context.Context, site account.Site, periodName string) (statsBody, error) {
	loc, err := time.LoadLocation(site.Timezone)
	if err != nil {
		loc = time.UTC
	}
	p, err := stats.ParsePeriod(periodName, s.clock.Now(), loc)
	if err != nil {
		return statsBody{}, err
	}
	start := time.Now()
	sum, err := s.stats.Summary(ctx, site.ID, p)
	s.metrics.statsSeconds.WithLabelValues(p.Name).Observe(time.Since(start).Seconds())
	if err != nil {
		return statsBody{}, err
	}
	return statsBody{SiteID: site.ID, Period: p, Summary: sum}, nil
}

func (s *Service) handleStats(c *fiber.Ctx) error {
	body, err := s.figures(c.UserContext(), c.Locals(localSite).(account.Site), c.Query("period"))
	if err != nil {
		return err
	}
	return c.JSON(body)
}

// handleLive streams Server-Sent Events: "stats" with the current figures on connect
// and after every update of the site, and a comment every heartbeat so a vanished viewer
// is noticed.
func (s *Service) handleLive(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	periodName := strings.Clone(c.Query("period"))
	first, err := s.figures(c.UserContext(), site, periodName)
	if err != nil {
		return err
	}
	sub := s.hub.Add(site.ID, periodName)
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	// The stream outlives the handler: past this point it uses only the copies above.
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer sub.Remove()
		heartbeat := time.NewTicker(s.cfg.Heartbeat)
		defer heartbeat.Stop()
		fmt.Fprint(w, "retry: 2000\n\n")
		if writeEvent(w, "stats", first) != nil {
			return
		}
		for {
			select {
			case <-s.hub.Closing():
				return
			case <-heartbeat.C:
				if _, err := w.WriteString(": ping\n\n"); err != nil || w.Flush() != nil {
					return
				}
			case payload := <-sub.C:
				if writeFrame(w, "stats", payload) != nil {
					return
				}
			}
		}
	})
	return nil
}

// renderView is the hub's ComputeFunc: a site's figures for a view (a period name),
// computed once per update however many streams show it.
func (s *Service) renderView(ctx context.Context, siteID int64, view string) ([]byte, error) {
	site, err := s.accounts.SiteByID(ctx, siteID)
	if err != nil {
		return nil, err
	}
	body, err := s.figures(ctx, site, view)
	if err != nil {
		return nil, err
	}
	return json.Marshal(body)
}

func writeEvent(w *bufio.Writer, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFrame(w, name, data)
}

func writeFrame(w *bufio.Writer, name string, data []byte) error {
	if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
		return err
	}
	return w.Flush()
}

// mapErrors is the one place the query service's errors become HTTP answers. Bad input
// is a 4xx with a message; only a fault of ours is a 500, and its detail stays in the log.
func mapErrors(c *fiber.Ctx) error {
	err := c.Next()
	if err == nil {
		return nil
	}
	status, msg := fiber.StatusInternalServerError, "internal error"
	var fe *fiber.Error
	switch {
	case errors.As(err, &fe):
		status, msg = fe.Code, fe.Message
	case errors.Is(err, account.ErrUnauthorized):
		status, msg = fiber.StatusUnauthorized, "missing or invalid API key"
	case errors.Is(err, account.ErrNotFound):
		status, msg = fiber.StatusNotFound, "not found"
	case errors.Is(err, account.ErrInvalid), errors.Is(err, stats.ErrBadPeriod):
		status, msg = fiber.StatusBadRequest, err.Error()
	case errors.Is(err, account.ErrEmailTaken):
		status, msg = fiber.StatusConflict, err.Error()
	}
	if status == fiber.StatusInternalServerError {
		return err // logged by the app's error handler
	}
	return c.Status(status).JSON(fiber.Map{"error": msg})
}
