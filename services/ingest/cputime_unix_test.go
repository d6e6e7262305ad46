//go:build unix

package ingest

import (
	"syscall"
	"time"
)

// processCPU is the user plus system CPU time this process has used: on a shared
// machine, CPU per beacon holds far stiller than the wall time per beacon.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
