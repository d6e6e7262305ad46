package proctest

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a JetStream cluster of current NATS servers on loopback, each a `haru
// nats` process (the nats-server module embedded in the haru binary), so a test can kill
// one node and start it again on its store.
type NATSCluster struct {
	Nodes []*NATSNode
}

// NATSNode is one server of a NATSCluster.
type NATSNode struct {
	Name      string
	Port      int
	RoutePort int
	StoreDir  string
	bin       string
	args      []string
	logPath   string
	proc      *Proc
}

// StartNATSCluster starts n servers of the haru binary bin as one cluster and waits until
// JetStream has a leader, so streams with n replicas can be created at once.
func StartNATSCluster(t testing.TB, bin string, n int) *NATSCluster {
	t.Helper()
	dir := t.TempDir()
	c := &NATSCluster{}
	for i := range n {
		c.Nodes = append(c.Nodes, &NATSNode{
			Name: fmt.Sprintf("n%d", i+1), Port: FreePort(t), RoutePort: FreePort(t),
			StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), bin: bin,
			logPath: filepath.Join(dir, fmt.Sprintf("nats-n%d.log", i+1)),
		})
	}
	var routes []string
	for _, nd := range c.Nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", nd.RoutePort))
	}
	for _, nd := range c.Nodes {
		nd.args = []string{"nats", "-name", nd.Name, "-store", nd.StoreDir,
			"-listen", "127.0.0.1:" + strconv.Itoa(nd.Port),
			"-cluster", "127.0.0.1:" + strconv.Itoa(nd.RoutePort),
			"-routes", strings.Join(routes, ","), "-log-level", "warn"}
		nd.Start(t)
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			if t.Failed() {
				t.Logf("proctest: nats %s log tail:\n%s", nd.Name, tail(nd.logPath, 3000))
			}
			nd.Kill()
		}
	})
	c.WaitJetStream(t, 30*time.Second)
	return c
}

// URLs is every node's client URL, comma-separated: what HARU_NATS_URL takes.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		urls[i] = nd.URL()
	}
	return strings.Join(urls, ",")
}

// WaitJetStream waits until a client of the cluster gets JetStream account information,
// which needs an elected meta leader.
func (c *NATSCluster) WaitJetStream(t testing.TB, timeout time.Duration) {
	t.Helper()
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatalf("proctest: connect nats cluster: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proctest: nats cluster has no JetStream after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URL is the node's client URL.
func (nd *NATSNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", nd.Port) }

// Start starts the node (again) on its ports and store directory.
func (nd *NATSNode) Start(t testing.TB) {
	t.Helper()
	p, err := startProc("nats-"+nd.Name, nd.logPath, nd.bin, nd.args, baseEnv())
	if err != nil {
		t.Fatalf("proctest: start nats %s: %v", nd.Name, err)
	}
	nd.proc = p
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", nd.Port), 15*time.Second, p.Exited); err != nil {
		t.Fatalf("proctest: nats %s: %v\n%s", nd.Name, err, tail(nd.logPath, 3000))
	}
}

// Kill SIGKILLs the node, as a crash would.
func (nd *NATSNode) Kill() {
	if nd.proc != nil {
		nd.proc.Kill()
	}
}
