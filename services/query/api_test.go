package query

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/telemetry"
)

// TestAPIAuthorization probes every API route as the owner, as another user, with a
// revoked or malformed key and with none: only the owner gets data; another user's site
// is indistinguishable from a missing one.
func TestAPIAuthorization(t *testing.T) {
	db := pgtest.New(t)
	ns := natstest.New(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{NATS: natsutil.Config{Prefix: "haru", Stream: natsutil.DefaultStreamSettings()}, Heartbeat: 1e9}
	reg := prometheus.NewRegistry()
	svc, err := New(ctx, cfg, Deps{Log: log, Metrics: reg, Health: telemetry.NewHealth(),
		Clock: clock.System{}, NATS: ns.Conn(t), Pool: db.Pool})
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp(AppConfig(log))
	svc.Register(app)
	// A real listener: a live stream takes over its connection, which app.Test's
	// in-memory one cannot give.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(5 * time.Second) })
	origin := "http://" + ln.Addr().String()
	do := func(req *http.Request) (*http.Response, error) {
		u, err := url.Parse(origin + req.URL.RequestURI())
		if err != nil {
			return nil, err
		}
		req.URL, req.RequestURI = u, "" // a server request made a client one
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp, err
	}

	adm, err := NewAdmin(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateUser(ctx, "owner@example.com", "owner-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateUser(ctx, "Other@Example.com", "other-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateUser(ctx, "OWNER@example.com", "dupe-password"); err != ErrEmailTaken {
		t.Fatalf("case-insensitive duplicate email: err = %v, want ErrEmailTaken", err)
	}
	site, err := adm.CreateSite(ctx, "owner@example.com", "Shop", "shop.example", "UTC")
	if err != nil {
		t.Fatal(err)
	}
	ownerKey, _ := adm.CreateAPIKey(ctx, "owner@example.com", "k")
	otherKey, _ := adm.CreateAPIKey(ctx, "other@example.com", "k")
	revoked, _ := adm.CreateAPIKey(ctx, "owner@example.com", "old")
	if _, err := adm.CreateAPIKey(ctx, "owner@example.com", "old"); err != nil { // replaces, so revokes the first
		t.Fatal(err)
	}

	routes := []string{
		fmt.Sprintf("/api/v1/sites/%d/dashboard?period=today", site.ID),
		fmt.Sprintf("/api/v1/sites/%d/live?period=today", site.ID),
	}
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"owner", "Bearer " + ownerKey, http.StatusOK},
		{"other user", "Bearer " + otherKey, http.StatusNotFound},
		{"revoked key", "Bearer " + revoked, http.StatusUnauthorized},
		{"malformed key", "Bearer nope", http.StatusUnauthorized},
		{"no key", "", http.StatusUnauthorized},
	}
	for _, route := range routes {
		for _, tt := range tests {
			t.Run(route+"/"+tt.name, func(t *testing.T) {
				req := httptest.NewRequest(http.MethodGet, route, nil)
				if tt.auth != "" {
					req.Header.Set("Authorization", tt.auth)
				}
				if tt.want == http.StatusOK && route == routes[1] {
					svc.CloseStreams() // the stream ends after its first frame
				}
				resp, err := do(req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != tt.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
				}
			})
		}
	}
	for _, bad := range []string{"/api/v1/sites/999999/dashboard", "/api/v1/sites/abc/dashboard", "/api/v1/sites/-1/dashboard"} {
		req := httptest.NewRequest(http.MethodGet, bad, nil)
		req.Header.Set("Authorization", "Bearer "+ownerKey)
		resp, err := do(req)
		if err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s = %v, %v; want 404", bad, resp.StatusCode, err)
		}
	}
	req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("/api/v1/sites/%d/dashboard?period=fortnight", site.ID), nil)
	req.Header.Set("Authorization", "Bearer "+ownerKey)
	if resp, err := do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad period = %v, %v; want 400", resp.StatusCode, err)
	}

	// Requests are counted by route pattern, never by raw path.
	for status, want := range map[string]float64{"200": 1, "404": 4, "401": 3, "400": 1} {
		got := testutil.ToFloat64(svc.metrics.requests.WithLabelValues("/api/v1/sites/:site/dashboard", status))
		if got != want {
			t.Errorf("stats requests with status %s = %v, want %v", status, got, want)
		}
	}
}
