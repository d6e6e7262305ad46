// Package telemetry builds what every service reports through: the JSON logger, the
// Prometheus registry and the ops listener with /metrics, /healthz and /readyz.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/pprof"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewLogger returns a JSON logger at level ("debug", "info", "warn", "error"); records
// logged with a span's context carry its trace_id and span_id.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToLower(level))); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(TraceHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))), nil
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Check is one readiness condition: nil when the dependency is usable.
type Check func(ctx context.Context) error

// Health collects the readiness checks of every component running in a process.
type Health struct {
	mu     sync.Mutex
	checks map[string]Check
}

// NewHealth returns an empty Health: ready until a check says otherwise.
func NewHealth() *Health { return &Health{checks: map[string]Check{}} }

// Add registers a named readiness check.
func (h *Health) Add(name string, c Check) {
	h.mu.Lock()
	h.checks[name] = c
	h.mu.Unlock()
}

// Ready runs every check and returns their failures joined.
func (h *Health) Ready(ctx context.Context) error {
	h.mu.Lock()
	checks := make(map[string]Check, len(h.checks))
	for k, v := range h.checks {
		checks[k] = v
	}
	h.mu.Unlock()
	var errs []error
	for name, c := range checks {
		if err := c(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// OpsApp returns the ops listener's routes: /metrics from gatherer, /healthz (the
// process is alive), /readyz (every check passes) and Go's profiles under /debug/pprof/
// (the ops listener is for operators alone: it binds to loopback by default).
func OpsApp(gatherer prometheus.Gatherer, health *Health) *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(pprof.New())
	app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.SendString("ok\n") })
	app.Get("/readyz", func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		if err := health.Ready(ctx); err != nil {
			return c.Status(fiber.StatusServiceUnavailable).SendString("not ready: " + err.Error() + "\n")
		}
		return c.SendString("ready\n")
	})
	return app
}

// Base is what every service's main builds before anything else.
type Base struct {
	Log      *slog.Logger
	Registry *prometheus.Registry
	Health   *Health
	// Tracing is nil from NewBase and set by NewServiceBase.
	Tracing *Tracing
}

// NewBase returns a JSON logger on w at level, a registry with the runtime collectors and
// an empty Health.
func NewBase(w io.Writer, level string) (Base, error) {
	log, err := NewLogger(w, level)
	if err != nil {
		return Base{}, err
	}
	return Base{Log: log, Registry: NewRegistry(), Health: NewHealth()}, nil
}

// NewServiceBase is NewBase plus the tracing of service from the OTEL_* variables in
// getenv (a no-op without them): what each binary's Main starts with. Close flushes it.
func NewServiceBase(ctx context.Context, w io.Writer, level string, getenv func(string) string, service string) (Base, error) {
	base, err := NewBase(w, level)
	if err != nil {
		return Base{}, err
	}
	if base.Tracing, err = NewTracing(ctx, getenv, service); err != nil {
		return Base{}, err
	}
	return base, nil
}

// Close flushes pending spans, waiting at most 5 seconds even when ctx has ended.
func (b Base) Close(ctx context.Context) {
	if b.Tracing == nil {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = b.Tracing.Shutdown(sctx)
}

// GathererOf returns reg as a Gatherer for /metrics when it is one (a *prometheus.Registry
// always is), else the default gatherer.
func GathererOf(reg prometheus.Registerer) prometheus.Gatherer {
	if g, ok := reg.(prometheus.Gatherer); ok {
		return g
	}
	return prometheus.DefaultGatherer
}
