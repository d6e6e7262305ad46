package query

import (
	"fmt"
	"testing"
	"time"
)

func TestAttemptsRefill(t *testing.T) {
	now := time.Unix(0, 0)
	a := newAttempts(3, time.Minute, func() time.Time { return now })
	for i := 0; i < 3; i++ {
		if !a.allow("k") {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
	}
	if a.allow("k") {
		t.Fatal("4th attempt allowed")
	}
	if !a.allow("other") {
		t.Fatal("another key shares the budget")
	}
	now = now.Add(59 * time.Second)
	if a.allow("k") {
		t.Fatal("allowed before a minute passed")
	}
	now = now.Add(time.Second)
	if !a.allow("k") || a.allow("k") {
		t.Fatal("after a minute: want exactly one attempt back")
	}
	now = now.Add(time.Hour)
	for i := 0; i < 3; i++ {
		if !a.allow("k") {
			t.Fatal("after an hour the burst is not back")
		}
	}
	if a.allow("k") {
		t.Fatal("refill exceeded the burst")
	}
}

func TestAttemptsBoundedMemory(t *testing.T) {
	now := time.Unix(0, 0)
	a := newAttempts(1, time.Second, func() time.Time { return now })
	for i := 0; i < maxBuckets; i++ {
		a.allow(fmt.Sprint(i))
	}
	now = now.Add(time.Second) // every bucket has refilled: all can go
	a.allow("new")
	if n := len(a.buckets); n != 1 {
		t.Fatalf("%d buckets after pruning, want 1", n)
	}
}
