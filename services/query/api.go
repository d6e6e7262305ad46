package query

import (
	"bufio"
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
	key := apiKeyOf(c)
	if key == "" {
		return account.ErrUnauthorized
	}
	user, err := s.accounts.UserByAPIKey(c.UserContext(), key)
	if err != nil {
		return err
	}
	c.Locals(localUser, user)
	return c.Next()
}

// apiKeyOf is the API key a request presents, "" for none.
func apiKeyOf(c *fiber.Ctx) string {
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		key, _ := strings.CutPrefix(h, "Bearer ")
		return strings.TrimSpace(key)
	}
	return strings.TrimSpace(c.Query("key"))
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

// streamEvents answers c with a Server-Sent Events stream: start writes the first frames,
// then send writes each value received from next, with a heartbeat comment every
// Heartbeat, until a write fails (the viewer left), the service closes its streams, or
// send or start fail. done runs when the stream ends. The stream outlives the handler, so
// the functions must not use c.
func streamEvents[T any](s *Service, c *fiber.Ctx, next <-chan T, start func(*bufio.Writer) error, send func(*bufio.Writer, T) error, done func()) {
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer done()
		heartbeat := time.NewTicker(s.cfg.Heartbeat)
		defer heartbeat.Stop()
		fmt.Fprint(w, "retry: 2000\n\n")
		if start(w) != nil {
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
			case v := <-next:
				if send(w, v) != nil {
					return
				}
			}
		}
	})
}

// writeFrame writes one Server-Sent Event and flushes it to the client.
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
	var field *stats.FieldError
	switch {
	case errors.As(err, &fe):
		status, msg = fe.Code, fe.Message
	case errors.Is(err, account.ErrUnauthorized):
		status, msg = fiber.StatusUnauthorized, "missing or invalid API key"
	case errors.Is(err, account.ErrNotFound):
		status, msg = fiber.StatusNotFound, "not found"
	case errors.As(err, &field):
		return c.Status(fiber.StatusBadRequest).JSON(fiber.Map{"error": field.Msg, "field": field.Field})
	case errors.Is(err, account.ErrInvalid):
		status, msg = fiber.StatusBadRequest, err.Error()
	case errors.Is(err, account.ErrEmailTaken):
		status, msg = fiber.StatusConflict, err.Error()
	}
	if status == fiber.StatusInternalServerError {
		return err // logged by the app's error handler
	}
	return c.Status(status).JSON(fiber.Map{"error": msg})
}
