package query

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// TestRequestTextOutlivesRequest: what a request names (a dimension, a filter, an
// email) may be kept after the answer, as a cache key or a stream's view, so it must
// not share the buffers the server reuses for the next requests.
func TestRequestTextOutlivesRequest(t *testing.T) {
	app := NewApp(AppConfig(slog.New(slog.NewTextHandler(io.Discard, nil))))
	var kept []string
	app.Get("/keep/:name", func(c *fiber.Ctx) error {
		kept = append(kept, c.Params("name"), c.Query("v"), c.Get("X-Name"))
		return c.SendStatus(fiber.StatusNoContent)
	})
	var want []string
	for i := range 50 {
		name := strings.Repeat(string(rune('a'+i%26)), 5)
		req := httptest.NewRequest("GET", "/keep/"+name+"?v="+name, nil)
		req.Header.Set("X-Name", name)
		if _, err := app.Test(req, -1); err != nil {
			t.Fatal(err)
		}
		want = append(want, name, name, name)
	}
	for i := range want {
		if kept[i] != want[i] {
			t.Fatalf("value %d kept from request %d reads %q after later requests, want %q", i%3, i/3, kept[i], want[i])
		}
	}
}
