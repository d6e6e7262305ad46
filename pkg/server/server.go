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
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
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
func ErrorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		var fe *fiber.Error
		if errors.As(err, &fe) {
			return c.Status(fe.Code).JSON(fiber.Map{"error": fe.Message})
		}
		log.Error("request failed", "method", c.Method(), "route", c.Route().Path, "err", err)
		return c.Status(fiber.StatusInternalServerError).JSON(fiber.Map{"error": "internal error"})
	}
}
