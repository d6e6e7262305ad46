package query

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/seed"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/writer"
)

// TestStatsReadFromReplica: with a read pool, figures come from it while API keys and
// sites are still looked up on the primary. The two databases hold the same site but
// only the "replica" holds events, so the answer tells which one was read.
func TestStatsReadFromReplica(t *testing.T) {
	primary, replica := pgtest.New(t), pgtest.New(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for _, db := range []*pgtest.DB{primary, replica} {
		adm, err := NewAdmin(db.Pool)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := adm.CreateUser(ctx, "owner@example.com", "owner-password"); err != nil {
			t.Fatal(err)
		}
		if _, err := adm.CreateSite(ctx, "owner@example.com", "Shop", "shop.example", "UTC"); err != nil {
			t.Fatal(err)
		}
	}
	adm, _ := NewAdmin(primary.Pool)
	key, err := adm.CreateAPIKey(ctx, "owner@example.com", "k") // on the primary only
	if err != nil {
		t.Fatal(err)
	}
	from := now.AddDate(0, 0, -3)
	if _, err := seed.Load(ctx, replica.Pool, seed.NewGenerator(1, from, now.Add(-time.Hour), 7), 500); err != nil {
		t.Fatal(err)
	}
	if err := writer.RebuildRollups(ctx, replica.Pool, 1, from, now); err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pageviews := func(readPool bool) float64 {
		t.Helper()
		cfg := Config{NATS: natsutil.Config{Prefix: "haru", Stream: natsutil.DefaultStreamSettings()}, Heartbeat: time.Second}
		deps := Deps{Log: log, Metrics: prometheus.NewRegistry(), Health: telemetry.NewHealth(),
			Clock: clock.System{}, NATS: natstest.New(t).Conn(t), Pool: primary.Pool}
		if readPool {
			deps.ReadPool = replica.Pool
		}
		svc, err := New(ctx, cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		app := NewApp(AppConfig(log))
		svc.Register(app)
		req := httptest.NewRequest(http.MethodGet, "/api/v1/sites/1/aggregate?period=7d&metrics=pageviews", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := app.Test(req, 10000)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Results map[string]struct{ Value float64 } `json:"results"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("aggregate = %d, %v", resp.StatusCode, err)
		}
		return body.Results["pageviews"].Value
	}
	if got := pageviews(false); got != 0 {
		t.Fatalf("without a read pool: %v pageviews, want 0 (the primary holds none)", got)
	}
	if got := pageviews(true); got == 0 {
		t.Fatalf("with the read pool: %v pageviews, want the replica's", got)
	}
}
