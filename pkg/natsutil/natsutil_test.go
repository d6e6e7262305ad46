package natsutil

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startCluster starts n embedded servers routed to each other and returns their client
// URLs once JetStream answers through the first.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	ports := make([]int, n)
	var routes []string
	for i := range ports {
		ports[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i]))
	}
	var urls []string
	for i := range n {
		emb, err := StartEmbedded(EmbeddedOptions{
			StoreDir: t.TempDir(), Listen: "127.0.0.1:0", ServerName: fmt.Sprintf("s%d", i),
			Cluster: &ClusterOptions{Name: "test", Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(emb.Shutdown)
		urls = append(urls, emb.ClientURL())
	}
	return urls
}

// TestAutoReplicas: with HARU_STREAM_REPLICAS unset the stream and buckets get three
// replicas on a three-server cluster and one on a single server.
func TestAutoReplicas(t *testing.T) {
	single, err := StartEmbedded(EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(single.Shutdown)
	cluster := startCluster(t, 3)
	tests := []struct {
		name string
		url  string
		want int
	}{
		{"single server", single.ClientURL(), 1},
		{"three-server cluster, one URL given", cluster[1], 3},
	}
	names, err := event.NewNames("auto")
	if err != nil {
		t.Fatal(err)
	}
	settings := DefaultStreamSettings()
	settings.Replicas = AutoReplicas
	if err := settings.Validate(); err != nil {
		t.Fatalf("auto replicas refused: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := natstest.JetStreamAt(t, tt.url)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// A new cluster elects its JetStream leader first.
			var st jetstream.Stream
			for {
				actx, acancel := context.WithTimeout(ctx, 2*time.Second)
				st, err = EnsureStream(actx, js, names, settings)
				acancel()
				if err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.Replicas; got != tt.want {
				t.Errorf("stream replicas = %d, want %d", got, tt.want)
			}
			kv, err := EnsureSalts(ctx, js, names, AutoReplicas)
			if err != nil {
				t.Fatal(err)
			}
			status, err := kv.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := status.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; got != tt.want {
				t.Errorf("salts bucket replicas = %d, want %d", got, tt.want)
			}
		})
	}
}
