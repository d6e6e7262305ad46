// Command haru is the one Haru binary: haru -target=all|ingest|writer|query, or haru
// admin <command>.
package main

import (
	_ "time/tzdata" // site timezones resolve even in images without a tz database

	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/services/all"
)

func main() { server.Main(all.Main) }
