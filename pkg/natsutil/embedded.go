package natsutil

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Embedded is a JetStream server inside this process, for the single-box shape
// (`haru -target=all`) and for tests.
type Embedded struct {
	srv *server.Server
}

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// StoreDir holds JetStream's files; it survives restarts.
	StoreDir string
	// Listen, when set (host:port, port 0 for any), also opens a client port. Left empty,
	// the server is reached only in-process and never collides with a NATS already on the
	// host.
	Listen string
	// SyncAlways fsyncs every write: durable across power loss on one box, and slow.
	SyncAlways bool
}

// StartEmbedded starts a JetStream server and waits until it is ready.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	opts := &server.Options{
		ServerName:         "haru-embedded",
		JetStream:          true,
		StoreDir:           filepath.Clean(o.StoreDir),
		DontListen:         o.Listen == "",
		NoSigs:             true,
		NoLog:              true,
		SyncAlways:         o.SyncAlways,
		MaxPayload:         1 << 20,
		JetStreamMaxMemory: 64 << 20,
	}
	if o.Listen != "" {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: %w", o.Listen, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("start embedded nats: not ready after 10s")
	}
	return &Embedded{srv: srv}, nil
}

// ConnectOption makes nats.Connect reach the embedded server in-process.
func (e *Embedded) ConnectOption() nats.Option { return nats.InProcessServer(e.srv) }

// ClientURL is the client port's URL, or "" when the server opened none.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Shutdown stops the server and waits for it to finish.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
