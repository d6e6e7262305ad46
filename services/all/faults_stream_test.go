package all

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
)

// publishEvent publishes e to the events stream as ingest does, its id as Nats-Msg-Id,
// and returns the PubAck.
func (r *crashRig) publishEvent(ctx context.Context, js jetstream.JetStream, e event.Event) *jetstream.PubAck {
	r.t.Helper()
	data, err := event.Encode(&e)
	if err != nil {
		r.t.Fatal(err)
	}
	ack, err := js.Publish(ctx, r.names.EventSubject(e.SiteID), data, jetstream.WithMsgID(e.ID.String()))
	if err != nil {
		r.t.Fatalf("publish %s: %v", e.ID, err)
	}
	return ack
}

// storedCount is how many rows carry the event id.
func (r *crashRig) storedCount(ctx context.Context, e event.Event) int {
	r.t.Helper()
	var n int
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE id = $1`, e.ID).Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}

// TestFaultSameEventTwice publishes one event three ways and expects one row each time:
// a retried publish within the duplicate window (JetStream drops it), the same event
// again after the window (Postgres's key drops it), and an event whose first delivery
// went to a writer that died without acking (redelivered after the ack wait).
func TestFaultSameEventTwice(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := newRig(t, map[string]string{"HARU_STREAM_DUPLICATE_WINDOW": "1s"})
	js := r.jetstream(t)
	st := newLoadStats()
	newEvent := func(path string) event.Event {
		e, err := event.New(time.Now(), r.siteID, event.PageviewName)
		if err != nil {
			t.Fatal(err)
		}
		e.Visitor, e.Path, e.Hostname = 42, path, "localhost"
		return e
	}

	// A retried publish: the second is a duplicate to JetStream.
	e := newEvent("/twice")
	if ack := r.publishEvent(ctx, js, e); ack.Duplicate {
		t.Fatalf("first publish acked as a duplicate")
	}
	if ack := r.publishEvent(ctx, js, e); !ack.Duplicate {
		t.Errorf("retried publish within the window not flagged duplicate")
	}
	st.accepted.Add(1)
	st.sent.Add(2)
	r.drain(ctx, js, 1)

	// Past the window JetStream takes it again; the writer must skip it.
	time.Sleep(1500 * time.Millisecond)
	if ack := r.publishEvent(ctx, js, e); ack.Duplicate {
		t.Fatalf("publish after the window flagged duplicate: the window is not 1s")
	}
	st.sent.Add(1)
	deadline := time.Now().Add(10 * time.Second)
	for r.writerMetrics()["haru_writer_events_skipped_total"] < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("writer never skipped the republished event: %v", r.writerMetrics())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := r.storedCount(ctx, e); n != 1 {
		t.Errorf("event published again after the window stored %d times, want 1", n)
	}

	// A writer that took a message and died: play it by fetching from the writers'
	// consumer while the real writer is stopped, and never acking.
	r.writer.Kill()
	cons, err := js.Consumer(ctx, r.names.Stream, event.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	// Until the server has seen the killed writer's connection close, its pull request
	// still waits there and would take the next message, out of reach for the ack wait.
	deadline = time.Now().Add(10 * time.Second)
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumWaiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed writer's pull request still waits after 10s: %d waiting", info.NumWaiting)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e2 := newEvent("/redelivered")
	r.publishEvent(ctx, js, e2)
	st.sent.Add(1)
	st.accepted.Add(1)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var taken int
	for range batch.Messages() {
		taken++
	}
	if taken != 1 {
		t.Fatalf("fetched %d messages, want the one just published", taken)
	}
	// A writer sets the consumer's ack wait as it starts; shorten it after.
	r.startWriter()
	r.shortenAckWait(ctx, js)
	took := r.drain(ctx, js, 2)
	if n := r.storedCount(ctx, e2); n != 1 {
		t.Errorf("redelivered event stored %d times, want 1", n)
	}
	if wm := r.writerMetrics(); wm["haru_writer_messages_redelivered_total"] < 1 {
		t.Errorf("the writer saw no redelivery: %v", wm)
	}
	report(t, "same event: publish retried, again after the window, redelivered", st, r.checkExact(ctx, st), took)
}

// TestFaultPoison mixes undecodable messages into the stream under load: each is
// terminated with a reason and counted, and every accepted beacon still lands.
func TestFaultPoison(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := newCrashRig(t)
	js := r.jetstream(t)
	nc, err := nats.Connect(r.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// JetStream announces each terminated message on an advisory subject.
	advisories, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + r.names.Stream + ".>")
	if err != nil {
		t.Fatal(err)
	}
	valid, err := event.New(time.Now(), r.siteID, event.PageviewName)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := event.Encode(&valid)
	poison := [][]byte{
		[]byte("not json"),
		{},
		[]byte(`{"v":99}`),
		[]byte(`{"v":1,"id":"not-a-uuid"}`),
		[]byte(strings.Replace(string(good), `"v":1`, `"v":0`, 1)),
		[]byte(strings.Replace(string(good), `"site":`, `"site":-`, 1)),
		[]byte(strings.Replace(string(good), `"p":"`, `"p":"\u0000`, 1)),
		[]byte(`[1,2,3]`),
		[]byte(`{"v":1,"id":"` + valid.ID.String() + `","ts":"yesterday"}`),
		[]byte("\xff\xfe\xfd"),
	}

	st, loaded := r.startLoad()
	for _, p := range poison {
		time.Sleep(300 * time.Millisecond)
		if _, err := js.Publish(ctx, r.names.EventSubject(r.siteID), p); err != nil {
			t.Fatalf("publish poison: %v", err)
		}
	}
	<-loaded
	took := r.drain(ctx, js, st.accepted.Load())
	wm := r.writerMetrics()
	if got := wm["haru_writer_messages_terminated_total"]; got != float64(len(poison)) {
		t.Errorf("terminated counter = %v, want %d", got, len(poison))
	}
	// The reason is in the log: a 2.9 server drops the reason of a terminate.
	var logged int
	for _, line := range strings.Split(r.writer.Log(), "\n") {
		if strings.Contains(line, "terminating undecodable message") && strings.Contains(line, "decode event") {
			logged++
		}
	}
	if logged != len(poison) {
		t.Errorf("writer logged %d terminations with a reason, want %d", logged, len(poison))
	}
	for i := range poison {
		if _, err := advisories.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("terminated advisories: %d of %d: %v", i, len(poison), err)
		}
	}
	t.Logf("%d terminated advisories; writer %v", len(poison), wm)
	report(t, "10 poison messages mixed into the load", st, r.checkExact(ctx, st), took)
}
