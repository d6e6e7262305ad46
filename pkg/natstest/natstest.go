// Package natstest starts JetStream servers for tests: a private in-process server per
// test, or a unique name prefix on the machine's shared NATS server.
package natstest

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
)

// Server is a test's private JetStream server, listening on a random loopback port.
type Server struct {
	URL      string
	StoreDir string
	srv      *server.Server
}

// New starts a JetStream server with file storage in a temporary directory, shut down
// when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	return NewAt(t, t.TempDir(), server.RANDOM_PORT)
}

// NewAt starts a server on port with its store in dir; restarting on the same dir and
// port models a NATS restart that keeps its data.
func NewAt(t testing.TB, dir string, port int) *Server {
	t.Helper()
	opts := &server.Options{
		Host:               "127.0.0.1",
		Port:               port,
		JetStream:          true,
		StoreDir:           dir,
		NoLog:              true,
		NoSigs:             true,
		JetStreamMaxMemory: 64 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("natstest: server not ready")
	}
	s := &Server{URL: srv.ClientURL(), StoreDir: dir, srv: srv}
	t.Cleanup(s.Shutdown)
	return s
}

// Port is the client port the server listens on.
func (s *Server) Port() int { return s.srv.Addr().(*net.TCPAddr).Port }

// Shutdown stops the server; safe to call twice.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// Conn returns a client connection closed when the test ends.
func (s *Server) Conn(t testing.TB) *nats.Conn {
	t.Helper()
	return Connect(t, s.URL)
}

// Connect dials url with a connection closed when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// MachineURL is the machine's shared NATS server (Debian's 2.9 on the CI machines).
func MachineURL() string {
	if u := os.Getenv("HARU_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// Machine connects to the machine's shared NATS server and returns a name prefix no other
// test uses, so tests share the server without seeing each other. Without the server the
// test skips, except under CI=true, where it fails.
func Machine(t testing.TB) (*nats.Conn, string) {
	t.Helper()
	nc, err := nats.Connect(MachineURL(), nats.Timeout(2*time.Second))
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("machine nats required under CI=true: %v", err)
		}
		t.Skipf("machine nats unavailable: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, UniquePrefix()
}

// UniquePrefix returns a random valid event.Names prefix.
func UniquePrefix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	p := "t" + hex.EncodeToString(b)
	if _, err := event.NewNames(p); err != nil {
		panic(err)
	}
	return p
}

// JetStream starts a private server and returns a JetStream client on it with the
// default names, for tests that set up a stream or bucket through pkg/natsutil.
func JetStream(t testing.TB) (jetstream.JetStream, event.Names) {
	t.Helper()
	js, err := jetstream.New(New(t).Conn(t))
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	names, err := event.NewNames(event.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return js, names
}

// JetStreamAt connects to url (closed when the test ends) and returns its JetStream.
func JetStreamAt(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(Connect(t, url))
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}
