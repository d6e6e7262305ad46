package ingest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/natstest"
)

// TestPublisher drives the publisher against a stream, a subject no stream takes, and a
// subject someone listens on but never answers, checking each outcome and that every
// message is reusable afterwards.
func TestPublisher(t *testing.T) {
	srv := natstest.New(t)
	nc := srv.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "pubtest", Subjects: []string{"pubtest.>"}, MaxMsgs: 2, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	listenSilently(t, nc, "silent")
	p, err := newPublisher(nc, 300*time.Millisecond, 2)
	if err != nil {
		t.Fatal(err)
	}
	o := newOutMsg().(*outMsg)
	tests := []struct {
		name    string
		subject string
		id      string
		ctx     func() (context.Context, context.CancelFunc)
		want    error // nil, a sentinel, or *jetstream.APIError for any server error
		took    [2]time.Duration
	}{
		{"stored", "pubtest.a", "1", nil, nil, [2]time.Duration{0, 200 * time.Millisecond}},
		{"duplicate", "pubtest.a", "1", nil, nil, [2]time.Duration{0, 200 * time.Millisecond}},
		{"stored again", "pubtest.b", "2", nil, nil, [2]time.Duration{0, 200 * time.Millisecond}},
		{"stream full", "pubtest.c", "3", nil, &jetstream.APIError{}, [2]time.Duration{0, 200 * time.Millisecond}},
		{"no stream: retried, then refused", "nostream", "4", nil, jetstream.ErrNoStreamResponse, [2]time.Duration{2 * pubRetryWait, 2*pubRetryWait + 250*time.Millisecond}},
		{"no PubAck: the deadline", "silent", "5", nil, jetstream.ErrAsyncPublishTimeout, [2]time.Duration{250 * time.Millisecond, 600 * time.Millisecond}},
		{"no PubAck: the caller gives up first", "silent", "6", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, 50*time.Millisecond)
		}, context.DeadlineExceeded, [2]time.Duration{40 * time.Millisecond, 250 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o.msg.Subject, o.msg.Data, o.msg.Header, o.msgID[0] = tt.subject, []byte(`{}`), o.header, tt.id
			wctx, cancel := ctx, context.CancelFunc(func() {})
			if tt.ctx != nil {
				wctx, cancel = tt.ctx()
			}
			defer cancel()
			start := time.Now()
			if err := p.publish(o); err != nil {
				t.Fatalf("publish: %v", err)
			}
			err := p.await(wctx, o)
			took := time.Since(start)
			var apiErr *jetstream.APIError
			switch {
			case tt.want == nil && err != nil,
				tt.want != nil && !errors.Is(err, tt.want) && !(errors.As(tt.want, &apiErr) && errors.As(err, &apiErr)):
				t.Fatalf("await = %v, want %v", err, tt.want)
			case took < tt.took[0] || took > tt.took[1]:
				t.Fatalf("await took %s, want %s..%s", took, tt.took[0], tt.took[1])
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if len(p.waiting) != 0 || len(p.window) != 0 || len(o.acked) != 0 {
				t.Fatalf("after await: %d waiting, %d window slots taken, %d outcomes unread; want none", len(p.waiting), len(p.window), len(o.acked))
			}
		})
	}
}

// TestPublisherWindow: past the window a publish waits briefly for room, then fails;
// a dropped connection fails every publish awaiting its PubAck at once.
func TestPublisherWindow(t *testing.T) {
	srv := natstest.New(t)
	nc := srv.Conn(t)
	listenSilently(t, nc, "silent")
	p, err := newPublisher(nc, 10*time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	first, second := newOutMsg().(*outMsg), newOutMsg().(*outMsg)
	for _, o := range []*outMsg{first, second} {
		o.msg.Subject, o.msg.Data = "silent", []byte(`{}`)
	}
	if err := p.publish(first); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.publish(second); !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		t.Fatalf("publish past the window = %v, want ErrTooManyStalledMsgs", err)
	}
	if took := time.Since(start); took < pubStallWait || took > pubStallWait+300*time.Millisecond {
		t.Fatalf("stalled publish failed after %s, want about %s", took, pubStallWait)
	}
	done := make(chan error, 1)
	go func() { done <- p.await(context.Background(), first) }()
	time.Sleep(50 * time.Millisecond)
	srv.Shutdown()
	select {
	case err := <-done:
		if !errors.Is(err, nats.ErrDisconnected) {
			t.Fatalf("await after the server stopped = %v, want ErrDisconnected", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("await still waiting 3s after the server stopped")
	}
	if len(p.window) != 0 {
		t.Fatalf("%d window slots still taken", len(p.window))
	}
}

// listenSilently subscribes to subject and never answers: a publish there gets neither
// a PubAck nor a no-responders status.
func listenSilently(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}
