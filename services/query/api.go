package query

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/haru-analytics/haru/services/query/internal/account"
	"github.com/haru-analytics/haru/services/query/internal/stats"
)

// Locals keys set by middleware.
const (
	localUser   = "user_id"
	localSite   = "site"
	localAPIKey = "api_key_id"
)

// requireAPIKey authenticates a request by API key: `Authorization: Bearer <key>`, or
// `?key=` for EventSource, which cannot set headers.
func (s *Service) requireAPIKey(c *fiber.Ctx) error {
	key := apiKeyOf(c)
	if key == "" {
		return account.ErrUnauthorized
	}
	user, keyID, err := s.accounts.UserByAPIKey(c.UserContext(), key)
	if err != nil {
		return err
	}
	c.Locals(localUser, user)
	c.Locals(localAPIKey, keyID)
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
// then send writes each value received from next, with a heartbeat comment at every beat
// of the service's shared heartbeat, until a write fails (the viewer left), the service
// closes its streams, or send or start fail. done runs when the stream ends.
//
// The stream takes over the connection (a hijack): its one goroutine writes the response
// head and then each frame whole, as an HTTP/1.1 chunk, straight to the socket. Nothing of
// the request's handling (Fiber's and fasthttp's buffers, a body pipe and the goroutine
// that copies it) stays allocated for the hours a dashboard is open: what a stream holds
// is its goroutine, its connection and its subscription. The app must come from NewApp.
// The stream outlives the handler, so the functions must not use c.
func streamEvents[T any](s *Service, c *fiber.Ctx, next <-chan T, start func(eventConn) error, send func(eventConn, T) error, done func()) error {
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	if c.Method() == fiber.MethodHead {
		done()
		return nil
	}
	if !c.App().Server().KeepHijackedConns {
		done()
		return errors.New("event stream: the app was not made by NewApp")
	}
	c.Response().Header.SetContentLength(-1) // chunked
	head := slices.Concat(c.Response().Header.Header(), retryChunk)
	w := eventConn{c.Context().Conn()}
	c.Context().HijackSetNoResponse(true)
	// fasthttp runs the hijack handler right after this handler returns, unless sending
	// what the connection's earlier requests left buffered fails first (a client that
	// pipelined a request before this one and reset the connection): then it never runs,
	// and what the stream holds (its view, whose number per site is bounded) would stay
	// taken for ever. Whichever comes first, the handler or hijackWait, owns the stream.
	var owner atomic.Int32 // 0 undecided, 1 the hijack handler, 2 the watchdog
	abandon := time.AfterFunc(hijackWait, func() {
		if owner.CompareAndSwap(0, 2) {
			s.web.streams.forget(w.conn)
			_ = w.conn.Close()
			done()
		}
	})
	// fasthttp releases the request's buffers and state when the hijack handler returns;
	// the stream goes on in a goroutine of its own.
	c.Context().Hijack(func(net.Conn) {
		abandon.Stop()
		if !owner.CompareAndSwap(0, 1) {
			return
		}
		counted := s.streams.start()
		go func() {
			if counted {
				defer s.streams.done()
			}
			defer w.conn.Close()
			defer s.web.streams.forget(w.conn)
			defer done()
			err := w.send(head)
			head = nil // a stream lives for hours: keep nothing it has sent
			if err != nil || start(w) != nil {
				return
			}
			beat := s.heartbeat.next()
			for {
				select {
				case <-s.hub.Closing():
					_ = w.send(lastChunk)
					return
				case <-beat:
					if w.send(pingChunk) != nil {
						return
					}
					beat = s.heartbeat.next()
				case v := <-next:
					if send(w, v) != nil {
						return
					}
				}
			}
		}()
	})
	return nil
}

// hijackWait is how long a stream waits for fasthttp to hand it its connection before
// giving up what it holds; fasthttp does it at once or never.
var hijackWait = 10 * time.Second

// streamWriteTimeout bounds one write to a stream: a viewer that has stopped reading for
// so long (its socket buffers full) is let go rather than held forever.
const streamWriteTimeout = 10 * time.Second

// eventConn is the connection of a hijacked event stream.
type eventConn struct{ conn net.Conn }

// send writes b, whole chunks, to the viewer.
func (w eventConn) send(b []byte) error {
	if err := w.conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
		return err
	}
	_, err := w.conn.Write(b)
	return err
}

// The fixed chunks of every stream: the reconnection delay, the heartbeat comment and the
// end of the body. They are shared, never written to.
var (
	retryChunk = chunk([]byte("retry: 2000\n\n"))
	pingChunk  = chunk([]byte(": ping\n\n"))
	lastChunk  = []byte("0\r\n\r\n")
)

// eventFrame encodes one Server-Sent Event, as the HTTP/1.1 chunk that carries it: encoded
// once, the same bytes go to every stream that shows it.
func eventFrame(name string, data []byte) []byte {
	return chunk(slices.Concat([]byte("event: "+name+"\ndata: "), data, []byte("\n\n")))
}

// chunk frames b as one chunk of a chunked HTTP/1.1 body.
func chunk(b []byte) []byte {
	out := strconv.AppendInt(make([]byte, 0, len(b)+12), int64(len(b)), 16)
	out = append(out, "\r\n"...)
	out = append(out, b...)
	return append(out, "\r\n"...)
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
