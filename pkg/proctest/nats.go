package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// NATSServerPath is where Debian's nats-server package installs the server.
const NATSServerPath = "/usr/sbin/nats-server"

// NATSServer is the nats-server binary to start: $HARU_NATS_SERVER if set (the benchmark
// suite sets it to a server built from this module's nats-server version), else the first
// nats-server on PATH, else Debian's.
func NATSServer() (string, error) {
	if p := os.Getenv("HARU_NATS_SERVER"); p != "" {
		return exec.LookPath(p)
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	return exec.LookPath(NATSServerPath)
}

// NATS is a test's private nats-server process with JetStream, on a spare loopback port.
// Kill and Start keep its store directory and port, so a restart keeps the stream.
type NATS struct {
	Port     int
	StoreDir string
	bin      string
	logPath  string
	proc     *Proc
}

// StartNATS starts a private nats-server and waits until it accepts connections.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	bin, err := NATSServer()
	if err != nil {
		Unavailable(t, "nats-server", err)
		return nil
	}
	dir := t.TempDir()
	n := &NATS{Port: FreePort(t), StoreDir: filepath.Join(dir, "store"), bin: bin, logPath: filepath.Join(dir, "nats-server.log")}
	n.Start(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proctest: nats-server log tail:\n%s", tail(n.logPath, 3000))
		}
		n.Kill()
	})
	return n
}

// URL is the server's client URL.
func (n *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Start starts the server (again) on its port and store directory.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	args := []string{"-js", "-sd", n.StoreDir, "-a", "127.0.0.1", "-p", strconv.Itoa(n.Port)}
	p, err := startProc("nats-server", n.logPath, n.bin, args, baseEnv())
	if err != nil {
		t.Fatalf("proctest: start nats-server: %v", err)
	}
	n.proc = p
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", n.Port), 15*time.Second, p.Exited); err != nil {
		t.Fatalf("proctest: nats-server: %v\n%s", err, tail(n.logPath, 3000))
	}
}

// Kill SIGKILLs the server, as a crash would.
func (n *NATS) Kill() {
	if n.proc != nil {
		n.proc.Kill()
	}
}
