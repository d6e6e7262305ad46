package live

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestPublishAllRefreshesEverySiteWithViewers: after a reconnect every open view gets
// fresh figures, and sites nobody watches are not computed.
func TestPublishAllRefreshesEverySiteWithViewers(t *testing.T) {
	computed := make(chan int64, 10)
	hub := NewHub(func(_ context.Context, site int64, view string) ([]byte, error) {
		computed <- site
		return []byte(fmt.Sprintf("%d/%s", site, view)), nil
	}, time.Second, nil)
	a, b := mustAdd(t, hub, 1, "today"), mustAdd(t, hub, 2, "7d")
	gone := mustAdd(t, hub, 3, "today")
	gone.Remove()
	hub.PublishAll()
	for _, tc := range []struct {
		sub  *Sub
		want string
	}{{a, "1/today"}, {b, "2/7d"}} {
		select {
		case got := <-tc.sub.C:
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("no refresh for %s", tc.want)
		}
	}
	time.Sleep(50 * time.Millisecond)
	close(computed)
	var sites []int64
	for s := range computed {
		sites = append(sites, s)
	}
	if len(sites) != 2 {
		t.Fatalf("computed sites %v, want 1 and 2 once each", sites)
	}
}
