package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publisher sends events to JetStream and matches each PubAck to the beacon awaiting
// it. It does what jetstream.PublishMsgAsync does for ingest, at a fraction of its cost
// per message (which was a third of ingest's CPU): no goroutine timer, channel pair or
// reflective JSON decode per event. The semantics are the same: a bounded window of
// publishes awaiting their PubAck (a publish past it waits briefly for room, then
// fails), a PubAck deadline counted from each publish, two more tries 250 ms apart when
// no stream answers, every pending publish failed at once when the connection drops,
// and the server's own error for a refused message (a full stream, say).
type publisher struct {
	nc      *nats.Conn
	timeout time.Duration // the PubAck deadline, PublishTimeout
	prefix  string        // of every reply subject: an inbox of this publisher's own
	window  chan struct{} // a slot per publish awaiting its PubAck
	next    atomic.Uint64 // reply token of the next publish

	mu      sync.Mutex
	waiting map[uint64]*outMsg // by reply token
}

// The jetstream package's defaults, kept so a publish behaves as it did through it.
const (
	pubRetryWait     = 250 * time.Millisecond
	pubRetryAttempts = 2
	pubStallWait     = 200 * time.Millisecond
)

// errNoResponders is a publish no stream answered; after its retries it is
// jetstream.ErrNoStreamResponse.
var errNoResponders = errors.New("no responders")

func newPublisher(nc *nats.Conn, timeout time.Duration, window int) (*publisher, error) {
	p := &publisher{
		nc: nc, timeout: timeout, prefix: nc.NewInbox() + ".",
		window: make(chan struct{}, window), waiting: map[uint64]*outMsg{},
	}
	// Subscribe before watching the status: a connection closed in between still ends
	// the watch, as the status channel reports CLOSED.
	if _, err := nc.Subscribe(p.prefix+"*", p.handleAck); err != nil {
		return nil, fmt.Errorf("subscribe to PubAcks: %w", err)
	}
	status := nc.StatusChanged(nats.RECONNECTING, nats.CLOSED)
	go p.failOnDisconnect(status)
	return p, nil
}

// publish sends o (its message ready but for Reply) and registers it for its PubAck.
func (p *publisher) publish(o *outMsg) error {
	select {
	case p.window <- struct{}{}:
	default:
		o.timer.Reset(pubStallWait)
		select {
		case p.window <- struct{}{}:
			o.timer.Stop()
		case <-o.timer.C:
			return jetstream.ErrTooManyStalledMsgs
		}
	}
	o.token = p.next.Add(1)
	o.msg.Reply = p.prefix + strconv.FormatUint(o.token, 36)
	o.sent = time.Now()
	p.mu.Lock()
	p.waiting[o.token] = o
	p.mu.Unlock()
	if err := p.nc.PublishMsg(&o.msg); err != nil {
		_ = p.giveUp(o, err)
		return err
	}
	return nil
}

// await waits for o's PubAck until ctx ends or the PubAck deadline passes, publishing
// o again when no stream answered. On return the publisher holds o no longer, so it may
// be reused.
func (p *publisher) await(ctx context.Context, o *outMsg) error {
	for retries := 0; ; retries++ {
		var err error
		o.timer.Reset(time.Until(o.sent.Add(p.timeout)))
		select {
		case err = <-o.acked:
			o.timer.Stop()
		case <-o.timer.C:
			err = p.giveUp(o, jetstream.ErrAsyncPublishTimeout)
		case <-ctx.Done():
			o.timer.Stop()
			err = p.giveUp(o, ctx.Err())
		}
		if !errors.Is(err, errNoResponders) {
			return err
		}
		if retries == pubRetryAttempts {
			return jetstream.ErrNoStreamResponse
		}
		o.timer.Reset(pubRetryWait)
		select {
		case <-o.timer.C:
		case <-ctx.Done():
			o.timer.Stop()
			return ctx.Err()
		}
		// Published again, the message has the PubAck deadline anew, as through jetstream.
		if err := p.publish(o); err != nil {
			return err
		}
	}
}

// giveUp stops waiting for o's PubAck and returns why: err, or the PubAck's own
// outcome when it came meanwhile.
func (p *publisher) giveUp(o *outMsg, err error) error {
	if p.forget(o) {
		<-p.window
		return err
	}
	return <-o.acked // settled under mu, so it is in the channel already
}

// forget unregisters o and reports whether it was still registered; whoever
// unregisters o frees its window slot and, but for the publisher itself, settles it.
func (p *publisher) forget(o *outMsg) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting[o.token] != o {
		return false
	}
	delete(p.waiting, o.token)
	return true
}

// settleLocked hands a waiting publish its outcome if it is still waiting; mu is held.
func (p *publisher) settleLocked(token uint64, err error) {
	o, ok := p.waiting[token]
	if !ok {
		return // given up already, or a PubAck from before a reconnect
	}
	delete(p.waiting, token)
	o.acked <- err // buffered: never blocks
	<-p.window
}

// handleAck matches a PubAck (or the server's no-responders status) to its publish.
func (p *publisher) handleAck(m *nats.Msg) {
	token, err := strconv.ParseUint(m.Subject[len(p.prefix):], 36, 64)
	if err != nil {
		return
	}
	outcome := pubAckOutcome(m)
	p.mu.Lock()
	p.settleLocked(token, outcome)
	p.mu.Unlock()
}

// failOnDisconnect fails every publish awaiting its PubAck when the connection drops:
// those PubAcks will not come.
func (p *publisher) failOnDisconnect(status chan nats.Status) {
	for s := range status {
		p.mu.Lock()
		for token := range p.waiting {
			p.settleLocked(token, nats.ErrDisconnected)
		}
		p.mu.Unlock()
		if s == nats.CLOSED {
			return
		}
	}
}

// pubAckOutcome reads a PubAck: nil for a stored (or duplicate) message, else why not.
func pubAckOutcome(m *nats.Msg) error {
	if len(m.Data) == 0 {
		if m.Header.Get("Status") == "503" {
			return errNoResponders
		}
		return jetstream.ErrInvalidJSAck
	}
	// A stored message's PubAck is {"stream":"…","seq":…[,…]}: no need to decode it.
	if bytes.HasPrefix(m.Data, []byte(`{"stream":"`)) && !bytes.Contains(m.Data, []byte(`"error"`)) {
		return nil
	}
	var pa struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
	}
	if err := json.Unmarshal(m.Data, &pa); err != nil {
		return jetstream.ErrInvalidJSAck
	}
	if pa.Error != nil {
		return pa.Error
	}
	if pa.Stream == "" {
		return jetstream.ErrInvalidJSAck
	}
	return nil
}
