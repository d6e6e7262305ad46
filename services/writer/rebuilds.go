package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haru-analytics/haru/services/writer/internal/store"
)

// A site's change of timezone asks for its rollups to be rebuilt (rollup_rebuilds, written
// in the change's transaction): the days written before were bucketed in the old zone.
// Writers take the requests up, one site at a time across replicas, and rebuild every day
// of the site that holds raw events, as `haru admin rebuild-rollups -all` does, while
// ingestion goes on.

// rebuildLease is how long a writer holds a request without news: it is renewed after
// each chunk of days. A writer that stops mid-way leaves it to run out, and another
// starts the rebuild over.
const rebuildLease = 2 * time.Minute

// rebuildChunkDays is the days rebuilt per transaction: a writer batch holding an event of
// the site waits for one chunk at a time.
const rebuildChunkDays = 1

// rebuildRetry is how long a failed rebuild waits before it is tried again, times its
// attempts so far, up to maxRebuildRetry.
const (
	rebuildRetry    = time.Minute
	maxRebuildRetry = 30 * time.Minute
)

// settleRebuild removes a site's request once a rebuild begun after it was asked for is
// done, unless it was asked for again meanwhile (requested_at moved on).
const settleRebuild = `DELETE FROM rollup_rebuilds WHERE site_id = $1 AND requested_at = $2`

// rebuilder runs the requested rebuilds.
type rebuilder struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	result *prometheus.CounterVec
	// chunkDone, when set, is called after each chunk has committed.
	chunkDone func(site int64)
}

const (
	rebuildDone   = "done"
	rebuildFailed = "failed"
)

func newRebuildMetrics(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "haru_writer_rollup_rebuilds_total",
		Help: "Rollup rebuilds a timezone change asked for, by result: done, or failed (tried again later).",
	}, []string{"result"})
	c.WithLabelValues(rebuildDone)
	c.WithLabelValues(rebuildFailed)
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("register rebuild metrics: %w", err)
	}
	return c, nil
}

// runPending runs the requested rebuilds no writer holds, one after the other, until none
// is left or ctx ends, and returns how many it ran (failed ones included).
func (r *rebuilder) runPending(ctx context.Context) (int, error) {
	n := 0
	for {
		site, asked, ok, err := r.claim(ctx)
		if err != nil || !ok {
			return n, err
		}
		if err := r.run(ctx, site, asked); err != nil {
			return n, err
		}
		n++
	}
}

// claim leases the oldest request no writer holds.
func (r *rebuilder) claim(ctx context.Context) (site int64, asked time.Time, ok bool, err error) {
	err = r.pool.QueryRow(ctx, `
		UPDATE rollup_rebuilds SET leased_until = clock_timestamp() + make_interval(secs => $1), attempts = attempts + 1
		WHERE site_id = (SELECT site_id FROM rollup_rebuilds
			WHERE leased_until IS NULL OR leased_until < clock_timestamp()
			ORDER BY requested_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING site_id, requested_at`, rebuildLease.Seconds()).Scan(&site, &asked)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, time.Time{}, false, nil
	}
	if err != nil {
		return 0, time.Time{}, false, fmt.Errorf("claim a rollup rebuild: %w", err)
	}
	return site, asked, true, nil
}

// run rebuilds site's rollups for the request made at asked and settles the request: gone
// when done, unless asked again meanwhile (then it is left for another run, in the zone
// the site has by then); put off when the rebuild failed. It returns an error only when
// ctx ended, the request then released for the next writer.
func (r *rebuilder) run(ctx context.Context, site int64, asked time.Time) error {
	start := time.Now()
	r.log.Info("rebuilding rollups after a timezone change", "site_id", site)
	from, to, err := RebuildAllRollups(ctx, r.pool, site, rebuildChunkDays, func(_, _ time.Time, _ time.Duration) {
		if _, err := r.pool.Exec(ctx, `UPDATE rollup_rebuilds SET leased_until = clock_timestamp() + make_interval(secs => $2)
			WHERE site_id = $1`, site, rebuildLease.Seconds()); err != nil && ctx.Err() == nil {
			r.log.Warn("renew rollup rebuild lease", "site_id", site, "err", err)
		}
		if r.chunkDone != nil {
			r.chunkDone(site)
		}
	})
	// Settled even when ctx ended: the next writer need not wait for the lease.
	settle := context.WithoutCancel(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		_, _ = r.pool.Exec(settle, `UPDATE rollup_rebuilds SET leased_until = NULL, attempts = attempts - 1 WHERE site_id = $1`, site)
		return ctx.Err()
	case errors.Is(err, store.ErrUnknownSite):
		// Deleted meanwhile: its request went with it.
		return nil
	case err != nil:
		r.result.WithLabelValues(rebuildFailed).Inc()
		r.log.Error("rollup rebuild failed; will retry", "site_id", site, "err", err)
		_, serr := r.pool.Exec(settle, `UPDATE rollup_rebuilds
			SET leased_until = clock_timestamp() + least(make_interval(secs => $2) * attempts, make_interval(secs => $3)), last_error = $4
			WHERE site_id = $1`, site, rebuildRetry.Seconds(), maxRebuildRetry.Seconds(), err.Error())
		if serr != nil {
			r.log.Warn("put off rollup rebuild", "site_id", site, "err", serr)
		}
		return nil
	}
	r.result.WithLabelValues(rebuildDone).Inc()
	r.log.Info("rebuilt rollups after a timezone change", "site_id", site, "from", from.Format(time.DateOnly),
		"to", to.Format(time.DateOnly), "took", time.Since(start).Round(time.Millisecond).String())
	tag, err := r.pool.Exec(settle, settleRebuild, site, asked)
	if err == nil && tag.RowsAffected() == 0 {
		// Asked for again while it ran: once more, at once.
		_, err = r.pool.Exec(settle, `UPDATE rollup_rebuilds SET leased_until = NULL, attempts = 0 WHERE site_id = $1`, site)
	}
	if err != nil {
		r.log.Warn("settle rollup rebuild", "site_id", site, "err", err)
	}
	return nil
}

// rebuildRequested runs the requested rebuilds every RebuildPoll until ctx ends.
func (s *Service) rebuildRequested(ctx context.Context) error {
	if s.cfg.RebuildPoll <= 0 {
		return nil
	}
	t := time.NewTicker(s.cfg.RebuildPoll)
	defer t.Stop()
	for {
		if _, err := s.rebuilds.runPending(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("run requested rollup rebuilds", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RebuildAllRollupsNow is RebuildAllRollups for an operator (`haru admin rebuild-rollups
// -all`): a rebuild a change of zone asked for before it started is done by it, so no
// writer runs it again.
func RebuildAllRollupsNow(ctx context.Context, pool *pgxpool.Pool, siteID int64, chunk int,
	done func(from, to time.Time, took time.Duration)) (from, to time.Time, err error) {
	var asked time.Time
	err = pool.QueryRow(ctx, `SELECT requested_at FROM rollup_rebuilds WHERE site_id = $1`, siteID).Scan(&asked)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return from, to, fmt.Errorf("read rollup rebuild request: %w", err)
	}
	from, to, err = RebuildAllRollups(ctx, pool, siteID, chunk, done)
	if err != nil || asked.IsZero() {
		return from, to, err
	}
	if _, err := pool.Exec(ctx, settleRebuild, siteID, asked); err != nil {
		return from, to, fmt.Errorf("settle rollup rebuild request: %w", err)
	}
	return from, to, nil
}
