package ingest

import (
	"context"
	"io"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/config"
	"github.com/haru-analytics/haru/pkg/telemetry"
)

// Main runs the ingest alone, configured from getenv: the whole of `haru -target=ingest`
// and of the ingest's own command.
func Main(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	config.SetMemoryLimit(cfg.MemoryLimit, getenv)
	base, err := telemetry.NewServiceBase(ctx, stdout, cfg.LogLevel, getenv, "ingest")
	if err != nil {
		return err
	}
	defer base.Close(ctx)
	return Run(ctx, cfg, Deps{Log: base.Log, Metrics: base.Registry, Health: base.Health, Clock: clock.System{}, Tracing: base.Tracing}, stdout)
}
