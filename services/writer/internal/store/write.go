package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgutil"
)

// writeTx stores batch and its rollups in one transaction: the events go in as one
// set-based insert, and the rollups are computed in Go from the rows that insert
// reports as new, then written as pre-aggregated rows through one pipeline. What the
// rollups depend on is read beside the insert, on a second connection (sideRead).
func (s *Store) writeTx(ctx context.Context, batch []event.Event) (res Result, err error) {
	ctx, span := s.tracer.Start(ctx, "store write batch", trace.WithAttributes(attribute.Int("haru.batch.events", len(batch))))
	defer func() { endSpan(span, err) }()
	if err := s.ensurePartitions(ctx, batch); err != nil {
		return Result{}, err
	}
	given := len(batch)
	batch = distinct(batch)
	var known []*event.Event
	if s.pairs != nil {
		// A batch holds two connections at once: bounding the batches in flight to half
		// the pool keeps them from each holding one and waiting for another.
		select {
		case s.pairs <- struct{}{}:
			defer func() { <-s.pairs }()
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	var side *sideRead
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		zones, err := s.lockSites(ctx, tx, batch)
		if err != nil {
			return err
		}
		known = make([]*event.Event, 0, len(batch))
		for i := range batch {
			if zones[batch[i].SiteID] != nil {
				known = append(known, &batch[i])
			}
		}
		if len(known) == 0 {
			return nil
		}
		// The visitors' locks come first, before any event row: every writer takes
		// its locks in this order (site, visitors, events), so writers given the same
		// events (a redelivery) queue at the visitors instead of deadlocking.
		all := work{zones: zones, dims: known, hours: known, visits: known}
		locks := lockKeys(known)
		if s.pairs == nil {
			return s.insertAndApply(ctx, tx, all, locks, &res)
		}
		// While Postgres inserts the events, the rollups' Go work for all of them goes
		// on, and so do their reads, on a second connection whose transaction holds the
		// visitors' locks until this one ends.
		side = s.startSideRead(ctx, all, locks)
		if err := side.waitLocked(); err != nil {
			return err
		}
		inserted, err := s.insertEvents(ctx, tx, known)
		if err != nil {
			return err
		}
		res = summarize(inserted)
		if len(inserted) == 0 {
			return nil
		}
		if len(inserted) < len(known) {
			// Some were stored before: read again for the new ones alone.
			side.reread(ctx, s, work{zones: zones, dims: inserted, hours: inserted, visits: inserted})
		}
		return s.applyRead(ctx, tx, side)
	})
	side.release()
	if err != nil {
		return Result{}, err
	}
	res.SiteDeleted = len(batch) - len(known)
	res.Duplicates = given - len(batch) + len(known) - res.Inserted
	span.SetAttributes(attribute.Int("haru.batch.inserted", res.Inserted))
	return res, nil
}

// insertAndApply is the write in tx alone, for a pool of one connection: the visitors'
// locks, the events, then the rollups, whose Go work runs while the events insert.
func (s *Store) insertAndApply(ctx context.Context, tx pgx.Tx, all work, locks []int32, res *Result) error {
	if _, err := tx.Exec(ctx, s.q.lockVisitors, locks); err != nil {
		return fmt.Errorf("lock visitors: %w", err)
	}
	ahead := make(chan *prepared, 1)
	go func() { ahead <- prepare(all) }()
	inserted, err := s.insertEvents(ctx, tx, all.dims)
	pre := <-ahead
	if err != nil {
		return err
	}
	*res = summarize(inserted)
	if len(inserted) == 0 {
		return nil
	}
	w := work{zones: all.zones, dims: inserted, hours: inserted, visits: inserted}
	if len(inserted) == len(all.dims) {
		w.pre = pre
	}
	return s.apply(ctx, tx, w)
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "write failed")
	}
	span.End()
}

type eventKey struct {
	site, micros int64
	id           uuid.UUID
}

func keyOf(e *event.Event) eventKey { return eventKey{e.SiteID, e.Time.UnixMicro(), e.ID} }

// distinct drops repeats of an event within the batch (a message published twice). Times
// are cut to the microsecond Postgres keeps, so every key computed here matches the
// stored one.
func distinct(batch []event.Event) []event.Event {
	seen := make(map[eventKey]struct{}, len(batch))
	var out []event.Event // nil while no repeat was found: batch itself is the answer
	for i := range batch {
		batch[i].Time = batch[i].Time.Truncate(time.Microsecond)
		k := keyOf(&batch[i])
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			if out != nil {
				out = append(out, batch[i])
			}
			continue
		}
		if out == nil {
			out = append(make([]event.Event, 0, len(batch)), batch[:i]...)
		}
	}
	if out == nil {
		return batch
	}
	return out
}

// lockSites takes the batch's sites' shared locks and returns the zones of those that
// still exist; events of the others are dropped.
func (s *Store) lockSites(ctx context.Context, tx pgx.Tx, batch []event.Event) (map[int64]*time.Location, error) {
	var ids []int64
	for i := range batch {
		ids = append(ids, batch[i].SiteID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	b := &pgx.Batch{}
	for _, q := range noJoinsOverTables {
		b.Queue(q)
	}
	b.Queue(s.q.lockSites, ids)
	b.Queue(`SELECT id, timezone FROM sites WHERE id = ANY($1)`, ids)
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	for range len(noJoinsOverTables) + 1 {
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("lock sites: %w", err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read sites: %w", err)
	}
	out := map[int64]*time.Location{}
	var id int64
	var tz string
	_, err = pgx.ForEachRow(rows, []any{&id, &tz}, func() error {
		loc, err := s.zones.load(tz)
		if err != nil {
			return fmt.Errorf("site %d: %w", id, err)
		}
		out[id] = loc
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read sites: %w", err)
	}
	return out, br.Close()
}

// insertEvents inserts evs, skipping those stored before, and returns the new ones. The
// common case, none of them stored yet, goes in by COPY, Postgres's cheapest way in, under
// a savepoint. A redelivery fails the COPY on the first stored event's key; the savepoint
// undoes it, and the set-based insert that skips stored events and names the new ones
// (insert_events.sql) takes its place.
func (s *Store) insertEvents(ctx context.Context, tx pgx.Tx, evs []*event.Event) ([]*event.Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	ctx, span := s.tracer.Start(ctx, "insert events")
	defer span.End()
	if _, err := tx.Exec(ctx, "SAVEPOINT copy_events"); err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	if _, err := pgutil.CopyFrom(ctx, tx.Conn().PgConn(), "events", eventColumns, len(evs), copyEvent(evs)); err == nil {
		span.SetAttributes(attribute.Int("haru.events.inserted", len(evs)))
		return evs, nil
	} else if !isUniqueViolation(err) {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT copy_events"); err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	args, err := columns(evs)
	if err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, s.q.insertEvents, args...)
	if err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	isNew := make(map[eventKey]struct{}, len(evs))
	var k eventKey
	var ts time.Time
	_, err = pgx.ForEachRow(rows, []any{&k.site, &ts, &k.id}, func() error {
		k.micros = ts.UnixMicro()
		isNew[k] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	out := make([]*event.Event, 0, len(isNew))
	for _, e := range evs {
		if _, ok := isNew[keyOf(e)]; ok {
			out = append(out, e)
		}
	}
	span.SetAttributes(attribute.Int("haru.events.inserted", len(out)))
	return out, nil
}

// eventColumns are the events columns COPY fills, in copyEvent's order.
var eventColumns = []string{
	"site_id", "ts", "id", "name", "visitor_id", "hostname", "path", "referrer", "ref_source",
	"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
	"country", "region", "browser", "os", "device", "screen_w", "screen_h", "duration_ms", "props",
}

// copyEvent writes events[i] as a COPY row of eventColumns.
func copyEvent(evs []*event.Event) func(w *pgutil.CopyRow, i int) {
	return func(w *pgutil.CopyRow, i int) {
		e := evs[i]
		props, err := propsDoc(e)
		if err != nil {
			w.Fail(err)
		}
		w.Int8(e.SiteID)
		w.Timestamptz(e.Time)
		w.UUID(e.ID)
		w.Text(e.Name)
		w.Int8(e.Visitor)
		w.Text(e.Hostname)
		w.Text(e.Path)
		w.Text(e.Referrer)
		w.Text(e.RefSource)
		w.Text(e.UTMSource)
		w.Text(e.UTMMedium)
		w.Text(e.UTMCampaign)
		w.Text(e.UTMTerm)
		w.Text(e.UTMContent)
		w.Text(e.Country)
		w.Text(e.Region)
		w.Text(e.Browser)
		w.Text(e.OS)
		w.Text(e.Device)
		w.Int4(int64(e.ScreenW))
		w.Int4(int64(e.ScreenH))
		w.Int8(e.DurationMS)
		w.JSONB(props)
	}
}

// propsDoc is e's props as the events.props document, nil (NULL) when there are none.
func propsDoc(e *event.Event) ([]byte, error) {
	if len(e.Props) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(e.Props)
	if err != nil {
		return nil, fmt.Errorf("encode props: %w", err)
	}
	return b, nil
}

// propsJSON is e's props as the events.props value: JSON, or NULL when there are none.
func propsJSON(e *event.Event) (*string, error) {
	b, err := propsDoc(e)
	if b == nil {
		return nil, err
	}
	p := string(b)
	return &p, nil
}

// columns turns evs into one array per events column, the arguments of insert_events.sql.
func columns(evs []*event.Event) ([]any, error) {
	n := len(evs)
	var (
		site, visitor, dur                              = make([]int64, n), make([]int64, n), make([]int64, n)
		ts                                              = make([]time.Time, n)
		ids                                             = make([]pgtype.UUID, n)
		sw, sh                                          = make([]int32, n), make([]int32, n)
		props                                           = make([]*string, n)
		name, host, path, ref, src, us, um, uc, ut, uct = strs(n), strs(n), strs(n), strs(n), strs(n), strs(n), strs(n), strs(n), strs(n), strs(n)
		country, region, browser, os, device            = strs(n), strs(n), strs(n), strs(n), strs(n)
	)
	for i, e := range evs {
		site[i], ts[i], ids[i], name[i], visitor[i] = e.SiteID, e.Time, pgtype.UUID{Bytes: e.ID, Valid: true}, e.Name, e.Visitor
		host[i], path[i], ref[i], src[i] = e.Hostname, e.Path, e.Referrer, e.RefSource
		us[i], um[i], uc[i], ut[i], uct[i] = e.UTMSource, e.UTMMedium, e.UTMCampaign, e.UTMTerm, e.UTMContent
		country[i], region[i], browser[i], os[i], device[i] = e.Country, e.Region, e.Browser, e.OS, e.Device
		sw[i], sh[i], dur[i] = int32(e.ScreenW), int32(e.ScreenH), e.DurationMS
		p, err := propsJSON(e)
		if err != nil {
			return nil, err
		}
		props[i] = p
	}
	return []any{site, ts, ids, name, visitor, host, path, ref, src, us, um, uc, ut, uct,
		country, region, browser, os, device, sw, sh, dur, props}, nil
}

func strs(n int) []string { return make([]string, n) }

func summarize(inserted []*event.Event) Result {
	res := Result{Inserted: len(inserted)}
	for _, e := range inserted {
		i := slices.IndexFunc(res.Sites, func(sc SiteChange) bool { return sc.SiteID == e.SiteID })
		if i < 0 {
			res.Sites = append(res.Sites, SiteChange{SiteID: e.SiteID, From: e.Time, To: e.Time})
			i = len(res.Sites) - 1
		}
		sc := &res.Sites[i]
		sc.Inserted++
		if e.Time.Before(sc.From) {
			sc.From = e.Time
		}
		if e.Time.After(sc.To) {
			sc.To = e.Time
		}
	}
	slices.SortFunc(res.Sites, func(a, b SiteChange) int { return cmp.Compare(a.SiteID, b.SiteID) })
	return res
}
