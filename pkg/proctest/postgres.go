package proctest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a test's private PostgreSQL server: its own data directory and a spare
// loopback port, trust authentication, fsync on. It is stopped and removed when the test
// ends.
type Postgres struct {
	Port    int
	DataDir string
	LogPath string
	bin     string
	asUser  []string // command prefix that runs as the postgres OS user, when root
}

// pgBinDir finds the directory holding initdb, pg_ctl and postgres.
func pgBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", errors.New("no initdb: neither pg_config --bindir nor /usr/lib/postgresql/*/bin has it")
}

// StartPostgres initialises and starts a private Postgres and waits until it accepts
// connections.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		Unavailable(t, "postgres binaries", err)
		return nil
	}
	// Not t.TempDir: its parents are private to the test's user, and when the test runs
	// as root the server runs as postgres, which must reach its data directory.
	root, err := os.MkdirTemp("", "proctest-pg-")
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	p := &Postgres{Port: FreePort(t), DataDir: filepath.Join(root, "data"), LogPath: filepath.Join(root, "postgres.log"), bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			Unavailable(t, "postgres OS user (initdb refuses root)", err)
			return nil
		}
		if _, err := exec.LookPath("runuser"); err != nil {
			Unavailable(t, "runuser (initdb refuses root)", err)
			return nil
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(root, uid, gid); err != nil {
			t.Fatalf("proctest: chown %s: %v", root, err)
		}
		p.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	if out, err := p.command("initdb", "-D", p.DataDir, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("proctest: initdb: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proctest: postgres log tail:\n%s", tail(p.LogPath, 3000))
		}
		_ = p.command("pg_ctl", "stop", "-D", p.DataDir, "-m", "immediate", "-w").Run()
		p.Kill()
	})
	p.Start(t)
	return p
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	full := append(append(append([]string{}, p.asUser...), filepath.Join(p.bin, name)), args...)
	cmd := exec.Command(full[0], full[1:]...)
	// The server's children must not share the test's process group with a shell's
	// Ctrl-C, nor be reached by a Proc's group kill.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// URL connects to database db on this server.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// Start starts the server on its data directory and port and waits until it accepts
// connections.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=100", p.Port, filepath.Dir(p.DataDir))
	// After a Kill the old backends may hold the shared memory for a moment; retry.
	var out []byte
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if out, err = p.command("pg_ctl", "start", "-D", p.DataDir, "-l", p.LogPath, "-w", "-t", "30", "-o", opts).CombinedOutput(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("proctest: pg_ctl start: %v\n%s\n%s", err, out, tail(p.LogPath, 3000))
	}
	p.WaitReady(t)
}

// WaitReady waits until the server answers a query, at most 30 seconds.
func (p *Postgres) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var c *pgx.Conn
		c, err = pgx.Connect(ctx, p.URL("postgres"))
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("proctest: postgres not ready: %v\n%s", err, tail(p.LogPath, 3000))
}

// Stop shuts the server down fast (open sessions are ended, the shutdown is clean).
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if out, err := p.command("pg_ctl", "stop", "-D", p.DataDir, "-m", "fast", "-w", "-t", "30").CombinedOutput(); err != nil {
		t.Fatalf("proctest: pg_ctl stop: %v\n%s", err, out)
	}
}

// Kill SIGKILLs the postmaster, as a crash would; the next Start recovers from the WAL.
// Its backends notice the postmaster is gone and exit on their own; Start retries
// until they have.
func (p *Postgres) Kill() {
	pid := p.postmasterPid()
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 200 {
		if syscall.Kill(pid, 0) != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// postmasterPid reads the first line of postmaster.pid, or 0.
func (p *Postgres) postmasterPid() int {
	b, err := os.ReadFile(filepath.Join(p.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}
