package proctest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

func TestPostgresKillAndRestart(t *testing.T) {
	pg := StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exec := func(sql string) {
		t.Helper()
		c, err := pgx.Connect(ctx, pg.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		t.Helper()
		c, err := pgx.Connect(ctx, pg.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM kept`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	exec(`CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)`)
	pg.Kill()
	pg.Start(t)
	exec(`INSERT INTO kept VALUES (2)`)
	pg.Stop(t)
	pg.Start(t)
	if n := count(); n != 2 {
		t.Fatalf("rows after kill and stop = %d, want 2", n)
	}
}

func TestNATSKillKeepsStream(t *testing.T) {
	n := StartNATS(t)
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "KEPT", Subjects: []string{"kept.>"}, Storage: nats.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish("kept.a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	n.Kill()
	n.Start(t)
	nc, err = nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = nc.JetStream()
	var info *nats.StreamInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err = js.StreamInfo("KEPT")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("messages after kill = %d, want 1", info.State.Msgs)
	}
}

func TestProcLifecycle(t *testing.T) {
	bin := Build(t)
	out := Run(t, bin, []string{"admin", "help"}, nil, 30*time.Second)
	if !strings.Contains(out, "seed-demo") {
		t.Fatalf("haru admin help = %q, want the command list", out)
	}
	p := Start(t, "sleep", "/bin/sleep", []string{"30"}, nil)
	if p.Exited() {
		t.Fatal("sleep exited at once")
	}
	p.Kill()
	if err := p.Wait(5 * time.Second); err == nil {
		t.Fatal("Wait after Kill = nil, want the kill's exit error")
	}
}

func TestNATSClusterLosesANode(t *testing.T) {
	c := StartNATSCluster(t, Build(t), 3)
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Storage: nats.FileStorage, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		t.Helper()
		for range n {
			if _, err := js.Publish("r3.a", []byte("x"), nats.AckWait(5*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(10)
	c.Nodes[0].Kill()
	// Two of three still make a quorum: the stream keeps taking messages, perhaps after
	// a new leader is elected.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := js.Publish("r3.a", []byte("x"), nats.AckWait(2*time.Second)); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("publish with a node down: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	publish(9)
	c.Nodes[0].Start(t)
	info, err := js.StreamInfo("R3")
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 20 || info.Config.Replicas != 3 {
		t.Fatalf("stream after a node's loss: %d messages, %d replicas; want 20, 3", info.State.Msgs, info.Config.Replicas)
	}
}

// TestNATSServerChoice checks which nats-server binary the harness starts: the one
// HARU_NATS_SERVER names (an error if it does not exist), else the one on PATH.
func TestNATSServerChoice(t *testing.T) {
	dir := t.TempDir()
	named := filepath.Join(dir, "my-nats-server")
	if err := os.WriteFile(named, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HARU_NATS_SERVER", named)
	if got, err := NATSServer(); err != nil || got != named {
		t.Fatalf("with HARU_NATS_SERVER=%s: got %q, %v", named, got, err)
	}
	t.Setenv("HARU_NATS_SERVER", filepath.Join(dir, "missing"))
	if got, err := NATSServer(); err == nil {
		t.Fatalf("with HARU_NATS_SERVER naming no file: got %q, want an error", got)
	}
	onPath := filepath.Join(dir, "nats-server")
	if err := os.WriteFile(onPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HARU_NATS_SERVER", "")
	t.Setenv("PATH", dir)
	if got, err := NATSServer(); err != nil || got != onPath {
		t.Fatalf("with nats-server on PATH at %s: got %q, %v", onPath, got, err)
	}
}

// TestPortNeverTwice: ports are handed out once per process, however often the kernel
// offers a port again once it is closed (with 500 draws from the ephemeral range it all
// but surely does).
func TestPortNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
