package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pipeline sends statements on a transaction's connection as each becomes ready:
// Postgres executes the first while Go still computes the next. A pgx.Batch instead
// sends nothing until all are queued. close waits for every statement.
type pipeline struct {
	conn *pgx.Conn
	pl   *pgconn.Pipeline
	sds  map[string]*pgconn.StatementDescription
	eqb  pgx.ExtendedQueryBuilder
	err  error
}

// startPipeline prepares the statements the pipeline may send (once per connection:
// later calls find them prepared) and starts it.
func startPipeline(ctx context.Context, tx pgx.Tx, sqls ...string) (*pipeline, error) {
	conn := tx.Conn()
	sds := make(map[string]*pgconn.StatementDescription, len(sqls))
	for _, sql := range sqls {
		sd, err := conn.Prepare(ctx, sql, sql)
		if err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		sds[sql] = sd
	}
	return &pipeline{conn: conn, pl: conn.PgConn().StartPipeline(ctx), sds: sds}, nil
}

// send queues sql with args; nothing goes out before flush or close.
func (p *pipeline) send(sql string, args ...any) {
	if p.err != nil {
		return
	}
	sd, ok := p.sds[sql]
	if !ok {
		p.err = fmt.Errorf("pipeline: statement not prepared: %.40q", sql)
		return
	}
	if err := p.eqb.Build(p.conn.TypeMap(), sd, args); err != nil {
		p.err = fmt.Errorf("encode arguments: %w", err)
		return
	}
	// SendQueryStatement copies the encoded values, so the builder is free for the next.
	p.pl.SendQueryStatement(sd, p.eqb.ParamValues, p.eqb.ParamFormats, p.eqb.ResultFormats)
}

// flush sends what is queued, for Postgres to start on.
func (p *pipeline) flush() {
	if p.err == nil {
		p.err = p.pl.Flush()
	}
}

// close sends what is left and waits until Postgres has executed every statement; it
// returns the first error, a statement's *pgconn.PgError among them.
func (p *pipeline) close() error {
	if p.err == nil {
		p.err = p.pl.Sync()
	}
	if p.err != nil {
		// End what was queued with a sync point so Close can drain it and leave the
		// connection usable for the rollback.
		p.pl.SendPipelineSync()
		_ = p.pl.Flush()
		_ = p.pl.Close()
		return p.err
	}
	return p.pl.Close()
}
