// Package rig runs Haru as real processes for the benchmark suite: the haru binary
// (built once), a fresh database on a Postgres of this machine with sites and an API key,
// `haru -target=all` or the three services apart over a private nats-server, each on
// spare loopback ports. Close stops everything it started and drops the database.
package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haru-analytics/haru/pkg/pgutil"
	"github.com/haru-analytics/haru/pkg/proctest"
	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
	"github.com/haru-analytics/haru/services/query"
)

// Options configure a rig.
type Options struct {
	// Bin is the haru binary (see Build).
	Bin string
	// DatabaseURL names the Postgres server to use; the database in it is ignored and a
	// fresh one is created (and dropped by Close).
	DatabaseURL string
	// Sites is how many sites to create.
	Sites int
	// Env is added to every haru process's environment.
	Env map[string]string
	Log *slog.Logger
}

// Site is a created site.
type Site struct {
	ID int64
	traffic.Site
}

// Rig is a fresh database with sites, and the processes started on it.
type Rig struct {
	dir      string
	bin      string
	dbURL    string
	adminURL string
	dbName   string
	env      map[string]string
	log      *slog.Logger
	procs    []*Proc
	natsURL  string

	Sites []Site
	// Key is an API key of the user owning every site.
	Key string
}

// Build builds the haru binary of this module to path.
func Build(ctx context.Context, path string) error {
	return goBuild(ctx, path, "github.com/haru-analytics/haru/services/all/cmd")
}

// BuildNATS builds the nats-server of the version this module embeds to path.
func BuildNATS(ctx context.Context, path string) error {
	return goBuild(ctx, path, "github.com/nats-io/nats-server/v2")
}

func goBuild(ctx context.Context, path, pkg string) error {
	out, err := exec.CommandContext(ctx, "go", "build", "-o", path, pkg).CombinedOutput()
	if err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, out)
	}
	return nil
}

// New creates and migrates a fresh database and adds the
// sites, a user and an API key to it.
func New(ctx context.Context, o Options) (r *Rig, err error) {
	if o.Sites < 1 {
		return nil, errors.New("rig: at least one site")
	}
	if o.Bin == "" {
		return nil, errors.New("rig: no haru binary")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "haru-bench-")
	if err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	r = &Rig{dir: dir, bin: o.Bin, env: o.Env, log: o.Log}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	u, err := url.Parse(o.DatabaseURL)
	if err != nil {
		return r, fmt.Errorf("parse database url: %w", err)
	}
	r.dbName = fmt.Sprintf("haru_benchrun_%d", time.Now().UnixNano())
	admin := *u
	admin.Path = "/postgres"
	u.Path = "/" + r.dbName
	r.dbURL, r.adminURL = u.String(), admin.String()
	if _, err := pgutil.EnsureDatabase(ctx, r.dbURL); err != nil {
		r.dbName = ""
		return r, err
	}
	if err := r.seed(ctx, o.Sites); err != nil {
		return r, err
	}
	return r, nil
}

// seed migrates the database and creates the user, sites and key.
func (r *Rig) seed(ctx context.Context, n int) error {
	pool, err := pgutil.Open(ctx, r.dbURL, 2, "haru-bench")
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pgutil.Migrate(ctx, pool); err != nil {
		return err
	}
	adm, err := query.NewAdmin(pool)
	if err != nil {
		return err
	}
	const email = "bench@haru.local"
	if _, err := adm.CreateUser(ctx, email, "bench-password-123"); err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	for i := range n {
		name := fmt.Sprintf("site%d", i+1)
		s, err := adm.CreateSite(ctx, email, name, name+".example", "UTC")
		if err != nil {
			return fmt.Errorf("create site: %w", err)
		}
		r.Sites = append(r.Sites, Site{ID: s.ID, Site: traffic.Site{Token: s.Token, Domain: s.Domain}})
	}
	if r.Key, err = adm.CreateAPIKey(ctx, email, "bench"); err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	return nil
}

// TrafficSites are the sites as the traffic generator takes them.
func (r *Rig) TrafficSites() []traffic.Site {
	out := make([]traffic.Site, len(r.Sites))
	for i, s := range r.Sites {
		out[i] = s.Site
	}
	return out
}

// baseEnv is what every haru process gets: a minimal environment, the rig's database,
// no rate limit, the generator trusted as a proxy, and Options.Env on top.
func (r *Rig) baseEnv(dataDir string) map[string]string {
	env := map[string]string{
		"HARU_DATABASE_URL":    r.dbURL,
		"HARU_DATA_DIR":        dataDir,
		"HARU_RATE_LIMIT":      "0",
		"HARU_API_RATE_LIMIT":  "100000000", // thousands of viewers share one key
		"HARU_TRUSTED_PROXIES": "127.0.0.1/32",
		"HARU_LOG_LEVEL":       "warn",
	}
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	if r.natsURL != "" {
		env["HARU_NATS_URL"] = r.natsURL
	}
	for k, v := range r.env {
		env[k] = v
	}
	return env
}

// Start runs `haru -target=<target>` with a public (except for the writer) and an ops
// listener on spare loopback ports and waits until its /readyz answers 200.
func (r *Rig) Start(ctx context.Context, target string) (*Proc, error) {
	ops, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := r.baseEnv(filepath.Join(r.dir, "data-"+target))
	env["HARU_OPS_ADDR"] = ops
	httpAddr := ""
	if target != "writer" {
		if httpAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		env["HARU_HTTP_ADDR"] = httpAddr
	}
	p, err := startProc(target, filepath.Join(r.dir, target+".log"), r.bin, []string{"-target=" + target}, env)
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	p.HTTPAddr, p.OpsAddr = httpAddr, ops
	if err := p.waitReady(ctx, "http://"+ops+"/readyz", 60*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// StartNATS starts a private nats-server with JetStream on a spare loopback port; the
// processes started after it use it instead of an embedded server.
func (r *Rig) StartNATS() (*Proc, error) {
	bin, err := proctest.NATSServer()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	args := []string{"-js", "-sd", filepath.Join(r.dir, "nats"), "-a", "127.0.0.1", "-p", port}
	p, err := startProc("nats-server", filepath.Join(r.dir, "nats-server.log"), bin, args, map[string]string{"PATH": os.Getenv("PATH")})
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	if err := proctest.WaitTCP(addr, 15*time.Second, p.Exited); err != nil {
		return nil, fmt.Errorf("nats-server: %w\n%s", err, p.Tail(3000))
	}
	r.natsURL = "nats://" + addr
	return p, nil
}

// Close stops every process (the last started first), drops the database and removes
// the rig's directory.
func (r *Rig) Close() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		r.procs[i].Stop(10 * time.Second)
	}
	r.procs = nil
	if r.dbName != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, r.adminURL); err != nil {
			r.log.Warn("drop bench database", "db", r.dbName, "err", err)
		} else {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{r.dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
				r.log.Warn("drop bench database", "db", r.dbName, "err", err)
			}
			conn.Close(ctx)
		}
		r.dbName = ""
	}
	_ = os.RemoveAll(r.dir)
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	port, err := proctest.Port()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

// RaiseFileLimit sets the soft limit of open files to the hard limit (children inherit
// it) and returns the new soft limit.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read file limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise file limit: %w", err)
	}
	return lim.Cur, nil
}
