// Package natsutil connects to NATS and sets up what Haru keeps there: the events stream
// and the KV buckets of the site registry and the salts. Their settings live here, in one
// place, because they are costly to change once an install holds data.
package natsutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
)

// StreamSettings are the operator's choices for the events stream.
type StreamSettings struct {
	// MaxBytes bounds the backlog. A full stream refuses new events (DiscardNew) instead of
	// deleting old ones, so ingest answers 503 rather than losing accepted data.
	MaxBytes int64
	// Replicas is 1 on a single server and 3 in a production cluster; AutoReplicas picks
	// between them by what the connection sees.
	Replicas int
	// DuplicateWindow only covers publish retries; Postgres's unique key is the real guard.
	DuplicateWindow time.Duration
}

// DefaultStreamSettings suit a single box.
func DefaultStreamSettings() StreamSettings {
	return StreamSettings{MaxBytes: 1 << 30, Replicas: 1, DuplicateWindow: 30 * time.Second}
}

// AutoReplicas asks for the durable choice for the servers a connection reaches: 3 when
// they form a cluster of at least three, else 1.
const AutoReplicas = 0

// ResolveReplicas returns replicas, or for AutoReplicas what nc's servers allow: 3 when the
// server nc is connected to belongs to a cluster and at least three servers are known
// (configured or announced by the cluster), else 1.
func ResolveReplicas(nc *nats.Conn, replicas int) int {
	if replicas != AutoReplicas {
		return replicas
	}
	if nc != nil && nc.ConnectedClusterName() != "" && len(nc.Servers()) >= 3 {
		return 3
	}
	return 1
}

// Validate reports settings JetStream would refuse or that would lose data.
func (s StreamSettings) Validate() error {
	var errs []error
	if s.MaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("stream max bytes %d: want at least 1MiB", s.MaxBytes))
	}
	if s.Replicas != AutoReplicas && s.Replicas != 1 && s.Replicas != 3 && s.Replicas != 5 {
		errs = append(errs, fmt.Errorf("stream replicas %d: want 1, 3 or 5, or 0 for 3 in a cluster and 1 otherwise", s.Replicas))
	}
	if s.DuplicateWindow < time.Second || s.DuplicateWindow > 10*time.Minute {
		errs = append(errs, fmt.Errorf("duplicate window %s: want between 1s and 10m", s.DuplicateWindow))
	}
	return errors.Join(errs...)
}

// MaxEventBytes bounds one message; ingest's own body limit is far below it.
const MaxEventBytes = 64 << 10

// SaltTTL is how long a daily salt lives: long enough to cover every timezone's local
// day from its first use, short enough that yesterday's visitors cannot be re-identified.
const SaltTTL = 72 * time.Hour

// StreamConfig is the events stream as DESIGN.md describes it: it holds only what the
// writer has not stored yet.
func StreamConfig(n event.Names, s StreamSettings) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.Stream,
		Description: "Haru events not yet stored by the writer",
		Subjects:    []string{n.StreamSubjects()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    s.MaxBytes,
		MaxMsgs:     -1,
		MaxAge:      0,
		MaxMsgSize:  MaxEventBytes,
		Duplicates:  s.DuplicateWindow,
		Replicas:    s.Replicas,
	}
}

// EnsureStream creates the events stream, or updates it to the given settings
// (AutoReplicas resolved against js's connection).
func EnsureStream(ctx context.Context, js jetstream.JetStream, n event.Names, s StreamSettings) (jetstream.Stream, error) {
	s.Replicas = ResolveReplicas(js.Conn(), s.Replicas)
	st, err := js.CreateOrUpdateStream(ctx, StreamConfig(n, s))
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", n.Stream, err)
	}
	return st, nil
}

// EnsureSites creates the site registry bucket if it is missing (replicas may be
// AutoReplicas). Only the latest value of a key matters; a deleted site's key is deleted,
// which watchers see.
func EnsureSites(ctx context.Context, js jetstream.JetStream, n event.Names, replicas int) (jetstream.KeyValue, error) {
	return ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      n.Sites,
		Description: "Haru site registry: token to site, mirrored from Postgres",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    ResolveReplicas(js.Conn(), replicas),
	})
}

// EnsureSalts creates the salts bucket if it is missing (replicas may be AutoReplicas).
// Salts expire with the bucket's TTL and never reach Postgres or its backups.
func EnsureSalts(ctx context.Context, js jetstream.JetStream, n event.Names, replicas int) (jetstream.KeyValue, error) {
	return ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      n.Salts,
		Description: "Haru daily visitor-hash salts",
		History:     1,
		TTL:         SaltTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    ResolveReplicas(js.Conn(), replicas),
	})
}

func ensureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another process won the race to create it.
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// Connect dials url and keeps reconnecting for as long as the process lives: a NATS
// outage makes ingest answer 503 and the writer wait, never exit.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "subject", subj, "err", err)
		}),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	return nc, nil
}

// PublishFailFast makes a publish made while the connection is down fail at once instead
// of waiting in the client's reconnect buffer: a buffered publish would be sent after the
// publisher had already answered 503, and the event be stored although the sender was told
// to retry it.
func PublishFailFast() nats.Option { return nats.ReconnectBufSize(-1) }

// Config is how a service reaches NATS and how it sets up what lives there.
type Config struct {
	// URL of the NATS servers (comma-separated); only -target=all may leave it empty and
	// embed a server.
	URL string
	// Prefix names the install's stream, subjects and buckets.
	Prefix string
	Stream StreamSettings
}

// ConfigFromEnv reads HARU_NATS_URL, HARU_NATS_PREFIX, HARU_STREAM_MAX_BYTES,
// HARU_STREAM_REPLICAS (unset or 0: 3 in a cluster, 1 otherwise) and
// HARU_STREAM_DUPLICATE_WINDOW.
func ConfigFromEnv(env interface {
	String(string, string) string
	Int(string, int) int
	Int64(string, int64) int64
	Duration(string, time.Duration) time.Duration
}) Config {
	d := DefaultStreamSettings()
	return Config{
		URL:    env.String("HARU_NATS_URL", ""),
		Prefix: env.String("HARU_NATS_PREFIX", event.DefaultPrefix),
		Stream: StreamSettings{
			MaxBytes:        env.Int64("HARU_STREAM_MAX_BYTES", d.MaxBytes),
			Replicas:        env.Int("HARU_STREAM_REPLICAS", AutoReplicas),
			DuplicateWindow: env.Duration("HARU_STREAM_DUPLICATE_WINDOW", d.DuplicateWindow),
		},
	}
}

// Validate checks the settings; requireURL is false only for the single binary, which
// embeds a server when no URL is given.
func (c Config) Validate(requireURL bool) error {
	var errs []error
	if requireURL && c.URL == "" {
		errs = append(errs, errors.New("HARU_NATS_URL is required when a target runs alone"))
	}
	if _, err := event.NewNames(c.Prefix); err != nil {
		errs = append(errs, err)
	}
	if err := c.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Names returns the install's NATS names; call after Validate.
func (c Config) Names() event.Names {
	n, err := event.NewNames(c.Prefix)
	if err != nil {
		panic(fmt.Sprintf("natsutil: names of unvalidated config: %v", err))
	}
	return n
}

// Drain lets nc deliver what it buffers (acks, the last publishes) and waits, up to ten
// seconds, until it is closed.
func Drain(nc *nats.Conn, log *slog.Logger) {
	if err := nc.Drain(); err != nil {
		log.Warn("drain nats", "err", err)
		nc.Close()
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nc.Close()
}
