package writer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/telemetry"
)

// TestBatchTraced: a written batch opens a consumer span linked to the trace each
// message carries in its headers, with the store's steps as its descendants, and no span
// carries what identifies the visitor.
func TestBatchTraced(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tracing, err := telemetry.NewTracingWith(rec, "writer", propagation.TraceContext{})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, nil, tracing)
	site := pgtest.NewSite(t, h.pool, "UTC")

	// Two beacons' traces, as ingest would have started them.
	upstream := sdktrace.NewTracerProvider().Tracer("ingest")
	var parents []trace.SpanContext
	for i := range 2 {
		ctx, span := upstream.Start(context.Background(), "POST /api/collect")
		parents = append(parents, span.SpanContext())
		e, err := event.New(h.clock.Now().UTC().Add(time.Duration(i)*time.Second), site, "pageview")
		if err != nil {
			t.Fatal(err)
		}
		e.Visitor, e.Path, e.Browser = 7, "/traced", "Firefox"
		data, err := event.Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: h.names.EventSubject(site), Data: data, Header: nats.Header{}}
		propagation.TraceContext{}.Inject(ctx, telemetry.HeaderCarrier(msg.Header))
		span.End()
		if _, err := h.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(e.ID.String())); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int64
		if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: %d events stored, want 2", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}

	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	var batches []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		byID[s.SpanContext().SpanID()] = s
		if s.Name() == "writer batch" {
			batches = append(batches, s)
		}
		for _, a := range s.Attributes() {
			v := a.Value.String()
			if strings.Contains(v, "Firefox") || strings.Contains(v, "/traced") || strings.Contains(v, "127.0.0.1") {
				t.Fatalf("span %s attribute %s = %q leaks the visitor", s.Name(), a.Key, v)
			}
		}
	}
	type spanKey struct {
		trace trace.TraceID
		span  trace.SpanID
	}
	linked := map[spanKey]bool{}
	for _, b := range batches {
		if b.SpanKind() != trace.SpanKindConsumer {
			t.Fatalf("batch span kind %v, want consumer", b.SpanKind())
		}
		for _, l := range b.Links() {
			linked[spanKey{l.SpanContext.TraceID(), l.SpanContext.SpanID()}] = true
		}
	}
	for _, p := range parents {
		if !linked[spanKey{p.TraceID(), p.SpanID()}] {
			t.Fatalf("no batch span links to the message's trace %s", p.TraceID())
		}
	}
	// Every step of the write descends from a batch span.
	want := []string{"store write batch", "insert events", "rollups", "read rollup state", "write rollups"}
	found := map[string]bool{}
	for _, s := range rec.Ended() {
		root := s
		for root.Parent().IsValid() {
			p, ok := byID[root.Parent().SpanID()]
			if !ok {
				t.Fatalf("span %s has a parent that was not recorded", s.Name())
			}
			root = p
		}
		if root.Name() == "writer batch" {
			found[s.Name()] = true
		}
	}
	for _, name := range want {
		if !found[name] {
			t.Fatalf("no %q span under a batch span; got %v", name, found)
		}
	}
}
