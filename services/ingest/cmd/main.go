// Command ingest runs the beacon endpoint alone, against the NATS in HARU_NATS_URL.
package main

import (
	"context"
	"io"
	_ "time/tzdata" // site timezones resolve even in images without a tz database

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest"
)

func main() { server.Main(run) }

func run(ctx context.Context, _ []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := ingest.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	base, err := telemetry.NewBase(stdout, cfg.LogLevel)
	if err != nil {
		return err
	}
	tracing, err := telemetry.NewTracing(ctx, getenv, "ingest")
	if err != nil {
		return err
	}
	defer tracing.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck
	return ingest.Run(ctx, cfg, ingest.Deps{
		Log: base.Log, Metrics: base.Registry, Health: base.Health, Clock: clock.System{}, Tracing: tracing,
	}, stdout)
}
