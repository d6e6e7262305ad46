package query

import (
	"net"
	"sync"
	"time"
)

// streams remembers the connections of open event streams by what grants them (a
// session, a site, a share link, an API key), so that ending the grant (logging out,
// deleting the site, revoking the link or the key) closes them at once: the viewer sees
// the stream end and its reconnection is refused. A connection is remembered from when
// its request is authorized until its stream ends, and no longer: after a request that
// started no stream, or after the stream, the connection may carry anyone's requests.
type streams struct {
	mu    sync.Mutex
	conns map[string]map[net.Conn]struct{}
	// keys are what each remembered connection is recorded under, to forget it by.
	keys map[net.Conn][]string
}

func newStreams() *streams {
	return &streams{conns: map[string]map[net.Conn]struct{}{}, keys: map[net.Conn][]string{}}
}

// add records conn under every key.
func (s *streams) add(conn net.Conn, keys ...string) {
	if conn == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		set := s.conns[k]
		if set == nil {
			set = map[net.Conn]struct{}{}
			s.conns[k] = set
		}
		set[conn] = struct{}{}
	}
	s.keys[conn] = append(s.keys[conn], keys...)
}

// forget drops conn from every key it is recorded under.
func (s *streams) forget(conn net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys[conn] {
		if set := s.conns[k]; set != nil {
			delete(set, conn)
			if len(set) == 0 {
				delete(s.conns, k)
			}
		}
	}
	delete(s.keys, conn)
}

// end closes the connections recorded under key. Each is forgotten when its stream (or
// the request that would have started one) ends.
func (s *streams) end(key string) {
	s.mu.Lock()
	set := s.conns[key]
	delete(s.conns, key)
	s.mu.Unlock()
	for c := range set {
		_ = c.Close()
	}
}

// heartbeat is the one ticker every open stream shares: next returns a channel that is
// closed at the next beat. Ten thousand streams cost one timer and one channel a beat,
// not a ticker each. It starts with the first stream and stops when stop is closed.
type heartbeat struct {
	every time.Duration
	stop  <-chan struct{}
	start sync.Once

	mu   sync.Mutex
	beat chan struct{}
}

func newHeartbeat(every time.Duration, stop <-chan struct{}) *heartbeat {
	return &heartbeat{every: every, stop: stop, beat: make(chan struct{})}
}

// next returns the channel closed at the next beat.
func (h *heartbeat) next() <-chan struct{} {
	h.start.Do(func() { go h.run() })
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.beat
}

func (h *heartbeat) run() {
	if h.every <= 0 {
		return
	}
	tick := time.NewTicker(h.every)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
			h.mu.Lock()
			close(h.beat)
			h.beat = make(chan struct{})
			h.mu.Unlock()
		}
	}
}

// running counts the event streams in progress, so that closing them can wait until each
// has ended: HTTP shutdown does not wait for the connections streams took over.
type running struct {
	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup
}

// start counts a stream in, unless wait has begun (the stream then ends at once anyway,
// the service closing its streams); the stream calls done if it was counted.
func (r *running) start() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.wg.Add(1)
	return true
}

func (r *running) done() { r.wg.Done() }

// wait stops counting streams in and waits up to timeout for those counted to end.
func (r *running) wait(timeout time.Duration) bool {
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	ended := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
		return true
	case <-time.After(timeout):
		return false
	}
}
