package all

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/telemetry"
)

// NATS runs one embedded JetStream server, optionally as a node of a cluster, until ctx
// ends: `haru nats -name n1 -listen 127.0.0.1:4222 -cluster 127.0.0.1:6222 -routes ...`.
// It is not part of the documented interface (production runs the official nats-server);
// the process tests use it to run a cluster of current servers on loopback.
func NATS(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("haru nats", flag.ContinueOnError)
	fs.SetOutput(stdout)
	name := fs.String("name", "", "server name, unique in the cluster")
	listen := fs.String("listen", "127.0.0.1:4222", "client listener, host:port")
	store := fs.String("store", "", "JetStream store directory")
	clusterName := fs.String("cluster-name", "haru", "cluster name")
	clusterListen := fs.String("cluster", "", "route listener, host:port; empty runs a single server")
	routes := fs.String("routes", "", "peers' route URLs, comma-separated (nats-route://host:port)")
	syncAlways := fs.Bool("sync", false, "fsync every JetStream write")
	level := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *store == "" || *name == "" {
		return errors.New("haru nats: -name and -store are required")
	}
	log, err := telemetry.NewLogger(stdout, *level)
	if err != nil {
		return err
	}
	log = log.With("service", "nats", "server_name", *name)
	o := natsutil.EmbeddedOptions{
		StoreDir: *store, Listen: *listen, SyncAlways: *syncAlways, ServerName: *name,
		Logger: natsutil.ServerLogger(log),
	}
	if *clusterListen != "" {
		o.Cluster = &natsutil.ClusterOptions{Name: *clusterName, Listen: *clusterListen}
		for _, r := range strings.Split(*routes, ",") {
			if r = strings.TrimSpace(r); r != "" {
				o.Cluster.Routes = append(o.Cluster.Routes, r)
			}
		}
	}
	emb, err := natsutil.StartEmbedded(o)
	if err != nil {
		return fmt.Errorf("haru nats: %w", err)
	}
	log.Info("nats ready", "url", emb.ClientURL())
	<-ctx.Done()
	emb.Shutdown()
	return nil
}
