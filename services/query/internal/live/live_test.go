package live

import (
	"context"
	"errors"
	"fmt"

	"sync/atomic"
	"testing"
	"time"
)

// TestComputeOncePerView: a hundred viewers of two views of a site cost two
// computations per update, and each viewer gets its view's bytes.
func TestComputeOncePerView(t *testing.T) {
	var calls atomic.Int64
	gate := make(chan struct{})
	hub := NewHub(func(_ context.Context, site int64, view string) ([]byte, error) {
		calls.Add(1)
		<-gate
		return []byte(fmt.Sprintf("%d/%s", site, view)), nil
	}, time.Second, nil)

	var subs []*Sub
	for i := range 100 {
		view := "today"
		if i%2 == 1 {
			view = "7d"
		}
		subs = append(subs, mustAdd(t, hub, 1, view))
	}
	other := mustAdd(t, hub, 2, "today")
	hub.Publish(1)
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// Updates arriving while the refresh runs coalesce into one more round.
	for range 10 {
		hub.Publish(1)
	}
	close(gate)

	for i, s := range subs {
		want := "1/today"
		if i%2 == 1 {
			want = "1/7d"
		}
		select {
		case got := <-s.C:
			if string(got) != want {
				t.Fatalf("sub %d got %q, want %q", i, got, want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("sub %d got nothing", i)
		}
	}
	waitIdle(t, hub, 1)
	if n := calls.Load(); n != 4 {
		t.Fatalf("compute called %d times, want 4 (2 views × first round and one coalesced round)", n)
	}
	select {
	case got := <-other.C:
		t.Fatalf("site 2 viewer got %q from site 1's update", got)
	default:
	}
}

func TestRemoveAndLen(t *testing.T) {
	hub := NewHub(func(context.Context, int64, string) ([]byte, error) { return []byte("x"), nil }, time.Second, nil)
	a, b := mustAdd(t, hub, 1, "today"), mustAdd(t, hub, 1, "today")
	if hub.Len() != 2 {
		t.Fatalf("Len = %d, want 2", hub.Len())
	}
	a.Remove()
	a.Remove()
	b.Remove()
	if hub.Len() != 0 {
		t.Fatalf("Len = %d after removes, want 0", hub.Len())
	}
	hub.Publish(1) // no viewers: nothing to do, must not panic
}

// TestSlowViewerGetsNewest: a viewer that has not read keeps only the latest payload.
func TestSlowViewerGetsNewest(t *testing.T) {
	var n atomic.Int64
	hub := NewHub(func(context.Context, int64, string) ([]byte, error) {
		return []byte(fmt.Sprint(n.Add(1))), nil
	}, time.Second, nil)
	s := mustAdd(t, hub, 1, "today")
	for range 5 {
		hub.Publish(1)
		waitIdle(t, hub, 1)
	}
	got := <-s.C
	if string(got) != fmt.Sprint(n.Load()) {
		t.Fatalf("got %q, want the newest %d", got, n.Load())
	}
}

func waitIdle(t *testing.T, h *Hub, site int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		st := h.sites[site]
		busy := st != nil && st.refreshing
		h.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("refresh still running")
}

func mustAdd(t *testing.T, hub *Hub, site int64, view string) *Sub {
	t.Helper()
	s, err := hub.Add(site, view)
	if err != nil {
		t.Fatalf("Add(%d, %q): %v", site, view, err)
	}
	return s
}

// TestViewsPerSiteBounded: a site is watched in at most MaxViewsPerSite distinct views;
// more viewers of those views, and views of other sites, always join, and a view whose
// last viewer left makes room.
func TestViewsPerSiteBounded(t *testing.T) {
	hub := NewHub(func(context.Context, int64, string) ([]byte, error) { return []byte("x"), nil }, time.Second, nil)
	var first *Sub
	for i := range MaxViewsPerSite {
		s := mustAdd(t, hub, 1, fmt.Sprintf("filter=%d", i))
		if i == 0 {
			first = s
		}
	}
	if _, err := hub.Add(1, "filter=new"); !errors.Is(err, ErrTooManyViews) {
		t.Fatalf("a view past the bound: err %v, want ErrTooManyViews", err)
	}
	again := mustAdd(t, hub, 1, "filter=0")
	mustAdd(t, hub, 2, "filter=new")
	first.Remove()
	if _, err := hub.Add(1, "filter=new"); !errors.Is(err, ErrTooManyViews) {
		t.Fatalf("with filter=0 still watched: err %v, want ErrTooManyViews", err)
	}
	again.Remove()
	mustAdd(t, hub, 1, "filter=new")
}
