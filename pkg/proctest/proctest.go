// Package proctest runs Haru and its dependencies as real processes for fault tests: the
// haru binary built once per test process, a private Postgres and a private nats-server on
// spare loopback ports, each of which a test can kill, stop and start again on the same
// data. It never touches the machine's shared Postgres or NATS.
//
// A test that needs the PostgreSQL binaries or nats-server skips without them, except
// under CI=true, where it fails: a silent skip in CI would be a lie.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Unavailable skips the test, or fails it under CI=true.
func Unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s required under CI=true: %v", what, err)
	}
	t.Skipf("%s unavailable: %v", what, err)
}

var build struct {
	once sync.Once
	path string
	err  error
}

// Build builds the haru binary once per test process and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		// One directory for every test process's binary, each named by its pid; the
		// binaries of processes that have ended are removed here, since a sync.Once has
		// no cleanup of its own.
		dir := filepath.Join(os.TempDir(), "haru-proctest-bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			build.err = err
			return
		}
		removeStale(dir)
		build.path = filepath.Join(dir, fmt.Sprintf("haru-%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-o", build.path, "github.com/haru-analytics/haru/services/all/cmd")
		out, err := cmd.CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatalf("proctest: %v", build.err)
	}
	return build.path
}

// removeStale deletes binaries left by test processes that no longer run.
func removeStale(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "haru-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := Port()
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	return port
}

// handedOut are the ports Port returned in this process.
var handedOut sync.Map

// Port returns a loopback TCP port that was free a moment ago and that it has not
// returned before: the kernel may give a port just closed again, and two listeners of one
// process (a service's public and ops ports) would then be given the same.
func Port() (int, error) {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if _, given := handedOut.LoadOrStore(port, true); !given {
			return port, nil
		}
	}
	return 0, errors.New("free port: every one offered was handed out before")
}

// FreeAddr returns a free "127.0.0.1:port".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// tail returns the last n bytes of a file, for a failing test's log.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(buf, off)
	return string(buf)
}

// killGroup SIGKILLs a process group, ignoring one that is already gone.
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// Proc is one running child process (the haru binary, usually) in its own process group,
// its stdout and stderr appended to a log file.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// baseEnv is the minimal environment a child starts from; the test's own HARU_* settings
// never leak in.
func baseEnv() map[string]string {
	env := map[string]string{}
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOCOVERDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	return env
}

// Start runs bin with args and env (merged over a minimal base). The process is killed,
// with its whole group, when the test ends; if the test failed its log's tail is printed.
func Start(t testing.TB, name, bin string, args []string, env map[string]string) *Proc {
	t.Helper()
	merged := baseEnv()
	for k, v := range env {
		merged[k] = v
	}
	logPath := filepath.Join(t.TempDir(), name+".log")
	p, err := startProc(name, logPath, bin, args, merged)
	if err != nil {
		t.Fatalf("proctest: start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("proctest: %s log tail (%s):\n%s", name, logPath, tail(logPath, 4000))
		}
	})
	return p
}

func startProc(name, logPath, bin string, args []string, env map[string]string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (and process group id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill SIGKILLs the process and its group and waits for it to be reaped.
func (p *Proc) Kill() {
	killGroup(p.cmd.Process.Pid)
	<-p.done
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to end, at most timeout, and returns its exit error.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Log returns what the process has written so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// WaitReady polls readyURL until it answers 200; it fails the test if the process exits
// first or 20 seconds pass.
func (p *Proc) WaitReady(t testing.TB, readyURL string) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if p.Exited() {
			t.Fatalf("proctest: %s exited before ready: %v\n%s", p.Name, p.err, tail(p.LogPath, 4000))
		}
		resp, err := client.Get(readyURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("proctest: %s not ready at %s within 20s\n%s", p.Name, readyURL, tail(p.LogPath, 4000))
}

// Run runs bin to completion (at most timeout) with env merged over the base, returning
// its combined output.
func Run(t testing.TB, bin string, args []string, env map[string]string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	merged := baseEnv()
	for k, v := range env {
		merged[k] = v
	}
	for k, v := range merged {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("proctest: %s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// waitTCP waits until addr accepts connections or timeout passes.
func waitTCP(addr string, timeout time.Duration, exited func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if exited != nil && exited() {
			return errors.New("process exited")
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("%s not accepting connections within %s", addr, timeout)
}
