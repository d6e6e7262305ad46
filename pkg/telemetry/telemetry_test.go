package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
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
