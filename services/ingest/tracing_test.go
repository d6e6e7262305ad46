package ingest

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestCollectTraced: a beacon opens a server span and a producer span, the trace context
// travels in the JetStream message headers, and no span carries the visitor's address or
// User-Agent.
func TestCollectTraced(t *testing.T) {
	h := newHarness(t, testSite, nil)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h.svc.tracer, h.svc.propagator, h.svc.traced = tp.Tracer("test"), propagation.TraceContext{}, true

	status, _, _ := h.send(t, beacon{body: `{"p":"/traced"}`, token: testToken, headers: map[string]string{"X-Forwarded-For": "203.0.113.77"}})
	if status != 202 {
		t.Fatalf("status %d", status)
	}
	spans := rec.Ended()
	names := map[string]bool{}
	for _, s := range spans {
		names[s.Name()] = true
		for _, a := range s.Attributes() {
			v := a.Value.String()
			if strings.Contains(v, "203.0.113.77") || strings.Contains(v, "Firefox") || strings.Contains(v, "Mozilla") {
				t.Fatalf("span %s attribute %s = %q leaks the visitor", s.Name(), a.Key, v)
			}
		}
	}
	if !names["POST /api/collect"] || !names["jetstream publish"] {
		t.Fatalf("spans = %v", names)
	}
	msg, err := h.stream.GetLastMsgForSubject(context.Background(), h.names.EventSubject(testSite.ID))
	if err != nil {
		t.Fatal(err)
	}
	tp0 := msg.Header.Get("traceparent")
	if tp0 == "" || !strings.Contains(tp0, spans[0].SpanContext().TraceID().String()) {
		t.Fatalf("traceparent %q does not carry trace %s", tp0, spans[0].SpanContext().TraceID())
	}
}
