package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/haru-analytics/haru/pkg/pgtest"
)

func TestLoggerCarriesTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "info")
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewInMemoryExporter())))
	ctx, span := tp.Tracer("test").Start(context.Background(), "op")
	sc := span.SpanContext()

	tests := []struct {
		name      string
		log       func()
		wantTrace bool
	}{
		{"with a span", func() { log.With("service", "x").WarnContext(ctx, "in span", "k", 1) }, true},
		{"in a group", func() { log.WithGroup("g").InfoContext(ctx, "grouped") }, true},
		{"without a span", func() { log.InfoContext(context.Background(), "no span") }, false},
		{"without a context", func() { log.Info("plain") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf.Reset()
			tt.log()
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			// A group nests the record's own attributes.
			if g, ok := rec["g"].(map[string]any); ok {
				rec = g
			}
			tid, sid := rec["trace_id"], rec["span_id"]
			if !tt.wantTrace {
				if tid != nil || sid != nil {
					t.Fatalf("line %s: want no trace ids", buf.String())
				}
				return
			}
			if tid != sc.TraceID().String() || sid != sc.SpanID().String() {
				t.Fatalf("line %s: want trace_id %s span_id %s", buf.String(), sc.TraceID(), sc.SpanID())
			}
		})
	}
	span.End()
}

func TestPoolCollector(t *testing.T) {
	db := pgtest.New(t)
	if err := db.Pool.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewPoolCollector("writer", db.Pool))
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 8 {
		t.Fatalf("gathered %d series (%v), want 8", n, err)
	}
	mf, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range mf {
		m := f.GetMetric()[0]
		if m.GetGauge() != nil {
			got[f.GetName()] = m.GetGauge().GetValue()
		} else {
			got[f.GetName()] = m.GetCounter().GetValue()
		}
	}
	if got["haru_writer_db_pool_max_connections"] != float64(db.Pool.Config().MaxConns) {
		t.Errorf("max connections %v, want %d", got["haru_writer_db_pool_max_connections"], db.Pool.Config().MaxConns)
	}
	if got["haru_writer_db_pool_acquires_total"] < 1 || got["haru_writer_db_pool_connections"] < 1 {
		t.Errorf("after a ping: %v, want at least one acquire and one connection", got)
	}
	for name := range got {
		if !strings.HasPrefix(name, "haru_writer_db_pool_") {
			t.Errorf("series %s: want the haru_writer_db_pool_ prefix", name)
		}
	}
}

func TestOpsApp(t *testing.T) {
	h := NewHealth()
	failing := errors.New("stream gone")
	var broken atomic.Bool
	h.Add("check", func(context.Context) error {
		if broken.Load() {
			return failing
		}
		return nil
	})
	app := OpsApp(NewRegistry(), h)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := app.Test(httptest.NewRequest(http.MethodGet, path, nil), 10_000)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, tt := range []struct{ path, want string }{
		{"/healthz", "ok"},
		{"/readyz", "ready"},
		{"/metrics", "go_goroutines"},
		{"/debug/pprof/", "heap"},
		{"/debug/pprof/heap?debug=1", "heap profile"},
	} {
		if code, body := get(tt.path); code != http.StatusOK || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s = %d %.80q, want 200 with %q", tt.path, code, body, tt.want)
		}
	}
	broken.Store(true)
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "check: stream gone") {
		t.Errorf("GET /readyz while failing = %d %q", code, body)
	}
}
