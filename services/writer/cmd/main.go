// Command writer runs the writer alone, against the NATS in HARU_NATS_URL and the
// Postgres in HARU_DATABASE_URL.
package main

import (
	_ "time/tzdata" // site timezones resolve even in images without a tz database

	"context"
	"io"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/writer"
)

func main() { server.Main(run) }

func run(ctx context.Context, _ []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := writer.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	base, err := telemetry.NewBase(stdout, cfg.LogLevel)
	if err != nil {
		return err
	}
	return writer.Run(ctx, cfg, writer.Deps{
		Log: base.Log, Metrics: base.Registry, Health: base.Health, Clock: clock.System{},
	}, stdout)
}
