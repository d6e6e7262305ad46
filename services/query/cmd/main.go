// Command query runs the query alone; see the README for its HARU_* variables.
package main

import (
	"context"
	"io"
	_ "time/tzdata" // site timezones resolve even in images without a tz database

	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/services/query"
)

func main() {
	server.Main(func(ctx context.Context, _ []string, getenv func(string) string, stdout io.Writer) error {
		return query.Main(ctx, getenv, stdout)
	})
}
