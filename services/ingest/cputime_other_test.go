//go:build !unix

package ingest

import "time"

// processCPU is not measured here: the benchmarks report 0 CPU per beacon.
func processCPU() time.Duration { return 0 }
