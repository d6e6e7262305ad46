package proctest

import "time"

// Launch starts bin with exactly env, its output appended to logPath, for a harness that
// is a command rather than a test (the benchmark suite); the caller stops it.
func Launch(name, logPath, bin string, args []string, env map[string]string) (*Proc, error) {
	return startProc(name, logPath, bin, args, env)
}

// Tail returns the last n bytes of the process's log.
func (p *Proc) Tail(n int64) string { return tail(p.LogPath, n) }

// WaitTCP waits until addr accepts connections, timeout passes or exited (if not nil)
// reports the process gone.
func WaitTCP(addr string, timeout time.Duration, exited func() bool) error {
	return waitTCP(addr, timeout, exited)
}
