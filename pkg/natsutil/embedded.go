package natsutil

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
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
	// ServerName names the server; in a cluster it must be unique and stable, since
	// JetStream's Raft groups know their peers by name. Empty means "haru-embedded".
	ServerName string
	// Cluster, when set, joins a JetStream cluster: this server's route listener and the
	// routes to its peers (a server ignores the route to itself).
	Cluster *ClusterOptions
	// Logger receives the server's log lines; nil keeps it silent.
	Logger server.Logger
}

// ClusterOptions make an embedded server one node of a JetStream cluster.
type ClusterOptions struct {
	// Name is the cluster's name, the same on every node.
	Name string
	// Listen is this node's route listener, host:port.
	Listen string
	// Routes are the peers' route URLs, nats-route://host:port.
	Routes []string
}

// StartEmbedded starts a JetStream server and waits until it is ready.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	name := o.ServerName
	if name == "" {
		name = "haru-embedded"
	}
	opts := &server.Options{
		ServerName:         name,
		JetStream:          true,
		StoreDir:           filepath.Clean(o.StoreDir),
		DontListen:         o.Listen == "",
		NoSigs:             true,
		NoLog:              o.Logger == nil,
		SyncAlways:         o.SyncAlways,
		MaxPayload:         1 << 20,
		JetStreamMaxMemory: 64 << 20,
	}
	if o.Listen != "" {
		host, p, err := hostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen: %w", err)
		}
		opts.Host, opts.Port = host, p
	}
	if c := o.Cluster; c != nil {
		host, p, err := hostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats cluster listen: %w", err)
		}
		if c.Name == "" {
			return nil, fmt.Errorf("embedded nats cluster: no name")
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: p}
		if len(c.Routes) > 0 {
			opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	if o.Logger != nil {
		srv.SetLogger(o.Logger, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("start embedded nats: not ready after 10s")
	}
	return &Embedded{srv: srv}, nil
}

// hostPort splits host:port; port 0 asks for any free port.
func hostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	return host, p, nil
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

// ServerLogger adapts log to the NATS server's logger: its notices at info, warnings and
// errors at their levels, debug and trace lines at debug.
func ServerLogger(log *slog.Logger) server.Logger { return serverLogger{log} }

type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
