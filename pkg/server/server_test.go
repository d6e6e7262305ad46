package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// TestBodyTooLargeAnswersPages: a body past the app's limit, refused before any route
// runs, is a 413 a page can read (CORS) when a page sent it, and plain otherwise.
func TestBodyTooLargeAnswersPages(t *testing.T) {
	app := fiber.New(fiber.Config{BodyLimit: 1024, ErrorHandler: ErrorHandler(slog.New(slog.NewTextHandler(io.Discard, nil)))})
	app.Post("/api/collect", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusAccepted) })
	// A real connection: app.Test fails outright when the body is too large.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	url := "http://" + ln.Addr().String() + "/api/collect"
	for _, tt := range []struct {
		name, origin string
		size         int
		status       int
		cors         string
	}{
		{"from a page", "https://example.com", 4096, 413, "*"},
		{"from a server", "", 4096, 413, ""},
		{"within the limit", "https://example.com", 100, 202, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(strings.Repeat("a", tt.size)))
			if err != nil {
				t.Fatal(err)
			}
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status || resp.Header.Get("Access-Control-Allow-Origin") != tt.cors {
				t.Fatalf("status %d, Access-Control-Allow-Origin %q; want %d, %q",
					resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), tt.status, tt.cors)
			}
		})
	}
}
