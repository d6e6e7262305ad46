// Package server runs Fiber apps on listeners and stops them in order.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/sync/errgroup"
)

// ShutdownTimeout bounds how long in-flight requests get to finish on shutdown.
const ShutdownTimeout = 10 * time.Second

// Listen opens addr now, so a port conflict fails start-up instead of a goroutine later.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// Serve runs app on ln until ctx ends, then calls beforeShutdown (which ends long-lived
// streams, so they do not hold the shutdown open) and shuts app down, letting in-flight
// requests finish.
func Serve(ctx context.Context, app *fiber.App, ln net.Listener, log *slog.Logger, beforeShutdown func()) error {
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("serve %s: %w", ln.Addr(), err)
		}
		return nil
	case <-ctx.Done():
	}
	if beforeShutdown != nil {
		beforeShutdown()
	}
	if err := app.ShutdownWithTimeout(ShutdownTimeout); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown %s: %w", ln.Addr(), err)
	}
	<-errc
	return nil
}

// Main runs run with a context cancelled by SIGINT or SIGTERM and exits 1 if it fails.
// It is the whole of every cmd/main.go: only main exits.
func Main(run func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// ErrorHandler answers errors that escape a service's own mapping: Fiber's (no such
// route, body too large) keep their status; anything else is a fault of ours, logged, and
// a 500 whose detail stays out of the answer.
//
// A body past the app's limit is refused before any route runs, so before the collect
// route's CORS header is set: the refusal carries one itself when the request came from
// a page, or the page would see a network error instead of the status. It tells the page
// nothing but that its own body was too large.
func ErrorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		if errors.Is(err, fiber.ErrRequestEntityTooLarge) && c.Get(fiber.HeaderOrigin) != "" {
			c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
		}
		var fe *fiber.Error
		if errors.As(err, &fe) {
			return c.Status(fe.Code).JSON(fiber.Map{"error": fe.Message})
		}
		log.ErrorContext(c.UserContext(), "request failed", "method", c.Method(), "route", c.Route().Path, "err", err)
		return c.Status(fiber.StatusInternalServerError).JSON(fiber.Map{"error": "internal error"})
	}
}

// Alone is what a service running alone serves until its context ends: its background
// loop, its public app (nil for none, as for the writer) and its ops app.
type Alone struct {
	Log *slog.Logger
	// Run is the service's background loop (registry watch, consumer, mirror).
	Run      func(ctx context.Context) error
	App      *fiber.App
	HTTPAddr string
	// BeforeShutdown ends long-lived streams before the public app shuts down.
	BeforeShutdown func()
	Ops            *fiber.App
	OpsAddr        string
}

// Serve opens both listeners first (a port conflict fails at once), then runs the loop
// and both apps under one errgroup; the first failure or ctx's end stops them all.
func (a Alone) Serve(ctx context.Context) error {
	var ln net.Listener
	if a.App != nil {
		var err error
		if ln, err = Listen(a.HTTPAddr); err != nil {
			return err
		}
	}
	opsLn, err := Listen(a.OpsAddr)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	if a.App != nil {
		g.Go(func() error { return Serve(gctx, a.App, ln, a.Log, a.BeforeShutdown) })
	}
	g.Go(func() error { return Serve(gctx, a.Ops, opsLn, a.Log, nil) })
	return g.Wait()
}

// Compressed reports whether c's body comes compressed (a Content-Encoding other than
// identity). Fiber's c.Body() and fasthttp's multipart form reader unpack such a body with
// no bound on its unpacked size, so a few bytes could cost gigabytes: handlers refuse it
// before reading the body.
func Compressed(c *fiber.Ctx) bool {
	enc := c.Get(fiber.HeaderContentEncoding)
	return enc != "" && !strings.EqualFold(enc, "identity")
}
