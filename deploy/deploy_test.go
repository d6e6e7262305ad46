package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/scanner"
	"go/token"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

	"github.com/haru-analytics/haru/pkg/config"
)

// The tests run in deploy/; these are relative to it.
const (
	repoRoot    = ".."
	composePath = "../docker-compose.yml"
)

// targets are the -target values the binary accepts.
var targets = []string{"all", "ingest", "writer", "query"}

// pendingMetrics are series the alert rules use that the services are expected to export
// but may not yet: a rule may name them before the code does. Each is logged while it is
// missing from the sources, and the list can shrink as they arrive.
var pendingMetrics = []string{}

// requiredPanels are the series the Grafana dashboard must chart.
var requiredPanels = []string{
	"haru_ingest_events_accepted_total",
	"haru_ingest_requests_rejected_total",
	"haru_ingest_publish_seconds",
	"haru_writer_rows_written_total",
	"haru_writer_commit_seconds",
	"haru_writer_batch_events",
	"haru_writer_events_skipped_total",
	"haru_writer_consumer_pending_messages",
	"haru_writer_db_pool_acquired_connections",
	"haru_ingest_requests_total",
	"haru_ingest_http_request_seconds",
	"haru_ingest_stream_bytes",
	"haru_ingest_stream_max_bytes",
	"haru_query_http_requests_total",
	"haru_query_http_request_seconds",
	"haru_query_stats_seconds",
	"haru_query_sse_connections",
	"haru_query_db_pool_acquired_connections",
	"go_memstats_heap_inuse_bytes",
}

// literals are the string constants of the Go sources under services/ and pkg/ (test
// files excluded), read once: what the code really reads and exports.
type literals struct {
	all    map[string]bool
	byDir  map[string]map[string]bool // top directory (services/all, pkg/telemetry, ...) → literals
	idents map[string]bool            // identifiers, to see that a collector is registered
}

var (
	litOnce sync.Once
	litVal  literals
	litErr  error
)

func sourceLiterals(t testing.TB) literals {
	t.Helper()
	litOnce.Do(func() { litVal, litErr = scanLiterals(repoRoot, "services", "pkg") })
	if litErr != nil {
		t.Fatalf("scan Go sources: %v", litErr)
	}
	return litVal
}

func scanLiterals(root string, dirs ...string) (literals, error) {
	l := literals{all: map[string]bool{}, byDir: map[string]map[string]bool{}, idents: map[string]bool{}}
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			key := filepath.ToSlash(filepath.Dir(rel))
			if l.byDir[key] == nil {
				l.byDir[key] = map[string]bool{}
			}
			fset := token.NewFileSet()
			var s scanner.Scanner
			s.Init(fset.AddFile(path, -1, len(src)), src, nil, 0)
			for {
				_, tok, lit := s.Scan()
				if tok == token.EOF {
					break
				}
				switch tok {
				case token.IDENT:
					l.idents[lit] = true
				case token.STRING:
					v, err := strconv.Unquote(lit)
					if err != nil {
						continue
					}
					l.all[v] = true
					l.byDir[key][v] = true
				}
			}
			return nil
		})
		if err != nil {
			return l, err
		}
	}
	if len(l.all) == 0 {
		return l, errors.New("no string literals found")
	}
	return l, nil
}

// under reports whether any package under dir (services/all, pkg, ...) has literal v.
func (l literals) under(dir, v string) bool {
	for k, set := range l.byDir {
		if (k == dir || strings.HasPrefix(k, dir+"/")) && set[v] {
			return true
		}
	}
	return false
}

// envNames are the HARU_* variables the code reads.
func (l literals) envNames() map[string]bool {
	names := map[string]bool{}
	re := regexp.MustCompile(`^HARU_[A-Z0-9_]+$`)
	for v := range l.all {
		if re.MatchString(v) {
			names[v] = true
		}
	}
	return names
}

func checkEnvName(t *testing.T, where, name string) {
	t.Helper()
	if !strings.HasPrefix(name, "HARU_") {
		return
	}
	if !sourceLiterals(t).envNames()[name] {
		t.Errorf("%s: %s is not read anywhere under services/ or pkg/", where, name)
	}
}

// addrPort returns the port of a listen address such as ":4011" or "127.0.0.1:4011".
func addrPort(t *testing.T, where, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: address %q: %v", where, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s: port of %q: %v", where, addr, err)
	}
	return n
}

// checkOpsAddr requires an ops listener that other containers (probes, Prometheus) reach.
func checkOpsAddr(t *testing.T, where, addr string) int {
	t.Helper()
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("%s: HARU_OPS_ADDR %q listens on loopback only; probes and Prometheus cannot reach it", where, addr)
	}
	return addrPort(t, where, addr)
}

// checkCommand validates a haru command line: -target=X or admin <command>.
func checkCommand(t *testing.T, where string, args []string) string {
	t.Helper()
	lit := sourceLiterals(t)
	if len(args) == 0 {
		return "all" // the image's CMD
	}
	if args[0] == "admin" {
		if len(args) < 2 {
			t.Errorf("%s: admin without a command", where)
			return "admin"
		}
		if !lit.under("services/all", args[1]) {
			t.Errorf("%s: admin command %q is not in services/all", where, args[1])
		}
		return "admin"
	}
	target, ok := strings.CutPrefix(strings.TrimPrefix(args[0], "-"), "target=")
	if !ok {
		t.Errorf("%s: command %q: want -target=... or admin ...", where, args)
		return ""
	}
	if !slices.Contains(targets, target) || !lit.under("services/all", target) {
		t.Errorf("%s: unknown target %q", where, target)
	}
	return target
}

// metricNames extracts the Haru, Go runtime and process series a PromQL expression uses,
// with histogram suffixes removed when the base name is the one registered.
func metricNames(expr string, known map[string]bool) []string {
	re := regexp.MustCompile(`\b(?:haru|go|process)_[a-zA-Z0-9_]+`)
	var out []string
	for _, m := range re.FindAllString(expr, -1) {
		name := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(m, suf); ok && !known[m] && known[base] {
				name = base
			}
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// checkMetric requires a series the code registers: a haru_* name as a string literal,
// or a Go runtime or process series of client_golang's collectors, registered in pkg/.
func checkMetric(t *testing.T, where, name string, allowPending bool) {
	t.Helper()
	lit := sourceLiterals(t)
	switch {
	case strings.HasPrefix(name, "haru_"):
		if lit.all[name] || poolMetric(lit, name) {
			return
		}
		if allowPending && slices.Contains(pendingMetrics, name) {
			t.Logf("%s: %s is not exported yet", where, name)
			return
		}
		t.Errorf("%s: metric %s is not registered anywhere under services/ or pkg/", where, name)
	case strings.HasPrefix(name, "go_"):
		if !lit.idents["NewGoCollector"] {
			t.Errorf("%s: %s needs the Go collector, which no package registers", where, name)
		}
	case strings.HasPrefix(name, "process_"):
		if !lit.idents["NewProcessCollector"] {
			t.Errorf("%s: %s needs the process collector, which no package registers", where, name)
		}
	}
}

// poolMetric reports whether name is a Postgres pool series, haru_<service>_db_pool_<x>,
// whose name telemetry.PoolCollector builds from the service's name: <x> is a literal of
// pkg/telemetry and the service registers the collector under its name.
func poolMetric(lit literals, name string) bool {
	m := regexp.MustCompile(`^haru_([a-z]+)_db_pool_([a-z_]+)$`).FindStringSubmatch(name)
	return m != nil && lit.under("pkg/telemetry", m[2]) && lit.under("services/"+m[1], m[1]) && lit.idents["RegisterPool"]
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func decodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// ----- Dockerfile -----

func TestDockerfile(t *testing.T) {
	lines := dockerfileInstructions(t, "Dockerfile")
	var froms, users []string
	var build, entrypoint, cmd string
	cgoOff := false
	for _, l := range lines {
		word, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(word) {
		case "FROM":
			froms = append(froms, rest)
			users = nil // USER is per stage
		case "USER":
			users = append(users, rest)
		case "ENTRYPOINT":
			entrypoint = rest
		case "CMD":
			cmd = rest
		case "ENV", "ARG":
			if strings.Contains(rest, "CGO_ENABLED=0") {
				cgoOff = true
			}
		case "RUN":
			if strings.Contains(rest, "go build") {
				build = rest
				if strings.Contains(rest, "CGO_ENABLED=0") {
					cgoOff = true
				}
			}
		}
	}
	if len(froms) < 2 {
		t.Errorf("want a multi-stage build, got FROM %q", froms)
	} else if !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("builder stage FROM %q: want golang:1.26", froms[0])
	}
	if !cgoOff {
		t.Error("the build does not set CGO_ENABLED=0: the final image has no C library")
	}
	m := regexp.MustCompile(`go build .*-o\s+(\S+)\s+(\./\S+)`).FindStringSubmatch(build)
	if m == nil {
		t.Fatalf("no `go build ... -o BIN ./pkg` in the Dockerfile: %q", build)
	}
	pkg := filepath.Join(repoRoot, filepath.FromSlash(m[2]))
	if !bytes.Contains(readFile(t, filepath.Join(pkg, "main.go")), []byte("package main")) {
		t.Errorf("go build %s: not a main package", m[2])
	}
	if !bytes.Contains(readFile(t, filepath.Join(pkg, "main.go")), []byte("services/all")) {
		t.Errorf("go build %s: not the single binary (services/all)", m[2])
	}
	if len(users) == 0 {
		t.Error("the final stage has no USER: it would run as root")
	}
	for _, u := range users {
		name, _, _ := strings.Cut(u, ":")
		if name == "root" || name == "0" {
			t.Errorf("final stage USER %q is root", u)
		}
	}
	var ep, args []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) != 1 || ep[0] != m[1] {
		t.Errorf("ENTRYPOINT %s: want [%q] (exec form)", entrypoint, m[1])
	}
	if err := json.Unmarshal([]byte(cmd), &args); err != nil {
		t.Errorf("CMD %s: want exec form: %v", cmd, err)
	}
	if got := checkCommand(t, "Dockerfile CMD", args); got != "all" {
		t.Errorf("CMD %s: want -target=all", cmd)
	}
}

// dockerfileInstructions returns a Dockerfile's instructions, continuation lines joined
// and comments dropped.
func dockerfileInstructions(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	return out
}

// ----- docker-compose.yml -----

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

type composeService struct {
	Image       string         `yaml:"image"`
	Build       any            `yaml:"build"`
	Command     stringList     `yaml:"command"`
	Environment map[string]any `yaml:"environment"`
	Deploy      struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"deploy"`
	Volumes     []string       `yaml:"volumes"`
	Healthcheck map[string]any `yaml:"healthcheck"`
	DependsOn   yaml.Node      `yaml:"depends_on"`
	Networks    yaml.Node      `yaml:"networks"`
}

// stringList is a compose command: a list, or a string split on spaces.
type stringList []string

func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = strings.Fields(n.Value)
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*s = l
	return nil
}

// env returns a variable as compose would set it with nothing in the shell's
// environment: ${VAR:-default} becomes default.
func (c composeService) env(key string) string {
	v, ok := c.Environment[key]
	if !ok || v == nil {
		return ""
	}
	return interpolate(fmt.Sprint(v))
}

func interpolate(s string) string {
	re := regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}`)
	return re.ReplaceAllString(s, "$1")
}

// mount returns the container path a source (named volume or host path) is mounted at.
func (c composeService) mount(source string) (string, bool) {
	for _, v := range c.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[0] == source {
			return parts[1], true
		}
	}
	return "", false
}

// dependsOn returns the services this one waits for, with their conditions.
func (c composeService) dependsOn(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch c.DependsOn.Kind {
	case 0:
	case yaml.SequenceNode:
		var l []string
		if err := c.DependsOn.Decode(&l); err != nil {
			t.Fatalf("depends_on: %v", err)
		}
		for _, s := range l {
			out[s] = "service_started"
		}
	default:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := c.DependsOn.Decode(&m); err != nil {
			t.Fatalf("depends_on: %v", err)
		}
		for k, v := range m {
			out[k] = v.Condition
		}
	}
	return out
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	decodeYAML(t, composePath, &c)
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml has no services")
	}
	return c
}

// isHaru reports whether a compose service runs the Haru image.
func isHaru(c composeService) bool {
	return c.Build != nil || strings.Contains(c.Image, "haru")
}

func TestComposeHaruServices(t *testing.T) {
	c := loadCompose(t)
	byTarget := map[string]string{}
	for name, s := range c.Services {
		for k := range s.Environment {
			checkEnvName(t, "compose service "+name, k)
		}
		if !isHaru(s) {
			continue
		}
		target := checkCommand(t, "compose service "+name, s.Command)
		if target == "" || target == "admin" {
			continue
		}
		if prev, dup := byTarget[target]; dup {
			t.Errorf("compose services %s and %s both run -target=%s", prev, name, target)
		}
		byTarget[target] = name
	}
	for _, target := range []string{"ingest", "writer", "query"} {
		name, ok := byTarget[target]
		if !ok {
			t.Errorf("no compose service runs -target=%s", target)
			continue
		}
		s := c.Services[name]
		where := "compose service " + name
		if s.env("HARU_OPS_ADDR") == "" {
			t.Errorf("%s: HARU_OPS_ADDR is not set (the default listens on loopback)", where)
		} else {
			checkOpsAddr(t, where, s.env("HARU_OPS_ADDR"))
		}
		if s.env("HARU_STREAM_REPLICAS") != "3" {
			t.Errorf("%s: HARU_STREAM_REPLICAS=%q, want 3", where, s.env("HARU_STREAM_REPLICAS"))
		}
		if target == "ingest" {
			// ingest keeps no database connection.
			if s.env("HARU_DATABASE_URL") != "" {
				t.Errorf("%s: ingest is given HARU_DATABASE_URL; it must stay database-free", where)
			}
		} else if db, err := url.Parse(s.env("HARU_DATABASE_URL")); err != nil || db.Hostname() == "" {
			t.Errorf("%s: HARU_DATABASE_URL %q: %v", where, s.env("HARU_DATABASE_URL"), err)
		} else if _, ok := c.Services[db.Hostname()]; !ok {
			t.Errorf("%s: HARU_DATABASE_URL host %q is not a compose service", where, db.Hostname())
		}
		checkNATSURL(t, where, s.env("HARU_NATS_URL"), natsServices(c))
		deps := s.dependsOn(t)
		if deps["migrate"] != "service_completed_successfully" {
			t.Errorf("%s: want depends_on migrate: service_completed_successfully, got %v", where, deps)
		}
		for dep := range deps {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("%s: depends on unknown service %q", where, dep)
			}
		}
	}
	if name := byTarget["ingest"]; name != "" {
		if r := c.Services[name].Deploy.Replicas; r == nil || *r != 2 {
			t.Errorf("compose service %s: want deploy.replicas 2, got %v", name, r)
		}
	}

	m, ok := c.Services["migrate"]
	if !ok {
		t.Fatal("no migrate service")
	}
	if !slices.Equal(m.Command, []string{"admin", "migrate"}) {
		t.Errorf("migrate: command %q, want [admin migrate]", m.Command)
	}
	if m.env("HARU_DATABASE_URL") == "" {
		t.Error("migrate: HARU_DATABASE_URL is not set")
	}
}

func TestComposePostgres(t *testing.T) {
	c := loadCompose(t)
	pg, ok := c.Services["postgres"]
	if !ok {
		t.Fatal("no postgres service")
	}
	if !strings.HasPrefix(pg.Image, "postgres:15") {
		t.Errorf("postgres image %q: want postgres:15", pg.Image)
	}
	var vol string
	for _, v := range pg.Volumes {
		if parts := strings.Split(v, ":"); len(parts) >= 2 && strings.HasPrefix(parts[1], "/var/lib/postgresql") {
			vol = parts[0]
		}
	}
	if _, ok := c.Volumes[vol]; !ok {
		t.Errorf("postgres: its data directory is not on a named volume (%q)", pg.Volumes)
	}
	if pg.Healthcheck["test"] == nil {
		t.Error("postgres: no healthcheck")
	}
	if dep := c.Services["migrate"].dependsOn(t)["postgres"]; dep != "service_healthy" {
		t.Errorf("migrate: depends on postgres with %q, want service_healthy", dep)
	}
}

// natsServices are the compose services running nats-server, by name.
func natsServices(c composeFile) map[string]composeService {
	out := map[string]composeService{}
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "nats:") {
			out[name] = s
		}
	}
	return out
}

// checkNATSURL requires the client URL list to name every server of the cluster.
func checkNATSURL(t *testing.T, where, raw string, servers map[string]composeService) {
	t.Helper()
	hosts := map[string]bool{}
	for _, u := range strings.Split(raw, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Scheme != "nats" || p.Port() != "4222" {
			t.Errorf("%s: HARU_NATS_URL entry %q: want nats://host:4222", where, u)
			continue
		}
		hosts[p.Hostname()] = true
	}
	for name := range servers {
		if !hosts[name] {
			t.Errorf("%s: HARU_NATS_URL %q does not name NATS server %s", where, raw, name)
		}
	}
	for h := range hosts {
		if _, ok := servers[h]; !ok {
			t.Errorf("%s: HARU_NATS_URL names %q, which is not a NATS service", where, h)
		}
	}
}

func TestComposeNATSCluster(t *testing.T) {
	c := loadCompose(t)
	servers := natsServices(c)
	if len(servers) != 3 {
		t.Fatalf("want 3 NATS servers, got %d", len(servers))
	}
	names := map[string]bool{}
	for name, s := range servers {
		where := "compose service " + name
		tag := strings.TrimPrefix(s.Image, "nats:")
		var major, minor int
		if _, err := fmt.Sscanf(tag, "%d.%d", &major, &minor); err != nil || major != 2 || minor < 10 {
			t.Errorf("%s: image %q: want nats:2.10 or newer", where, s.Image)
		}
		// The configuration file it runs with.
		i := slices.Index(s.Command, "-c")
		if i < 0 || i+1 >= len(s.Command) {
			t.Fatalf("%s: command %q has no -c config", where, s.Command)
		}
		var host string
		for _, v := range s.Volumes {
			if parts := strings.Split(v, ":"); len(parts) >= 2 && parts[1] == s.Command[i+1] {
				host = parts[0]
			}
		}
		if host == "" {
			t.Fatalf("%s: %s is not mounted", where, s.Command[i+1])
		}
		for k, v := range s.Environment {
			t.Setenv(k, fmt.Sprint(v))
		}
		opts, err := server.ProcessConfigFile(filepath.Join(repoRoot, filepath.FromSlash(host)))
		if err != nil {
			t.Fatalf("%s: %s: %v", where, host, err)
		}
		if !opts.JetStream {
			t.Errorf("%s: JetStream is not enabled", where)
		}
		if opts.ServerName == "" || names[opts.ServerName] {
			t.Errorf("%s: server name %q is empty or not unique", where, opts.ServerName)
		}
		names[opts.ServerName] = true
		if opts.Cluster.Name == "" || opts.Cluster.Port == 0 {
			t.Errorf("%s: no cluster listener", where)
		}
		routes := map[string]bool{}
		for _, r := range opts.Routes {
			routes[r.Hostname()] = true
			if r.Port() != strconv.Itoa(opts.Cluster.Port) {
				t.Errorf("%s: route %s: want port %d", where, r, opts.Cluster.Port)
			}
		}
		for peer := range servers {
			if peer != name && !routes[peer] {
				t.Errorf("%s: no route to %s", where, peer)
			}
		}
		// File storage on a named volume, so a restarted node keeps its data.
		vol := ""
		for _, v := range s.Volumes {
			if parts := strings.Split(v, ":"); len(parts) >= 2 && parts[1] == opts.StoreDir {
				vol = parts[0]
			}
		}
		if _, ok := c.Volumes[vol]; !ok {
			t.Errorf("%s: JetStream store %q is not on a named volume", where, opts.StoreDir)
		}
		// The stream refuses events at its own limit; the server's limit must be larger.
		for _, svc := range c.Services {
			if raw := svc.env("HARU_STREAM_MAX_BYTES"); raw != "" {
				n, err := config.ParseSize(raw)
				if err != nil {
					t.Errorf("HARU_STREAM_MAX_BYTES=%q: %v", raw, err)
				} else if opts.JetStreamMaxStore > 0 && n >= opts.JetStreamMaxStore {
					t.Errorf("%s: max_file_store %d is not above HARU_STREAM_MAX_BYTES %s", where, opts.JetStreamMaxStore, raw)
				}
			}
		}
		if s.Healthcheck["test"] == nil {
			t.Errorf("%s: no healthcheck", where)
		}
	}
}

// caddyUpstreams returns the "dynamic a NAME PORT" upstreams of the Caddyfile, in order,
// and the paths of its @ingest matcher.
func caddyUpstreams(t *testing.T) (upstreams [][2]string, ingestPaths []string) {
	t.Helper()
	src := string(readFile(t, "caddy/Caddyfile"))
	for _, m := range regexp.MustCompile(`(?m)^\s*dynamic a (\S+) (\d+)`).FindAllStringSubmatch(src, -1) {
		upstreams = append(upstreams, [2]string{m[1], m[2]})
	}
	if m := regexp.MustCompile(`(?m)^\s*@ingest path (.+)$`).FindStringSubmatch(src); m != nil {
		ingestPaths = strings.Fields(m[1])
	}
	return upstreams, ingestPaths
}

func TestComposeProxy(t *testing.T) {
	c := loadCompose(t)
	caddy, ok := c.Services["caddy"]
	if !ok {
		t.Fatal("no caddy service")
	}
	if _, ok := caddy.mount("./deploy/caddy/Caddyfile"); !ok {
		t.Error("caddy: deploy/caddy/Caddyfile is not mounted")
	}
	ups, paths := caddyUpstreams(t)
	if len(ups) != 2 || ups[0][0] != "ingest" || ups[1][0] != "query" {
		t.Fatalf("Caddyfile upstreams %v: want ingest, then query", ups)
	}
	for _, u := range ups {
		svc, ok := c.Services[u[0]]
		if !ok {
			t.Errorf("Caddyfile: upstream %s is not a compose service", u[0])
			continue
		}
		want := svc.env("HARU_HTTP_ADDR")
		if want == "" {
			t.Errorf("compose service %s: HARU_HTTP_ADDR is not set", u[0])
			continue
		}
		if strconv.Itoa(addrPort(t, u[0], want)) != u[1] {
			t.Errorf("Caddyfile: %s upstream port %s, but HARU_HTTP_ADDR=%s", u[0], u[1], want)
		}
	}
	for _, route := range ingestRoutes {
		if !slices.Contains(paths, route) || !sourceLiterals(t).under("services/ingest", route) {
			t.Errorf("Caddyfile: @ingest paths %q: want %s, an ingest route", paths, route)
		}
	}
	// Ingest believes X-Forwarded-For from the proxy alone.
	var caddyNet struct {
		Haru struct {
			IPv4 string `yaml:"ipv4_address"`
		} `yaml:"haru"`
	}
	if err := caddy.Networks.Decode(&caddyNet); err != nil || caddyNet.Haru.IPv4 == "" {
		t.Fatalf("caddy: want a fixed ipv4_address on the haru network (%v)", err)
	}
	if got := c.Services["ingest"].env("HARU_TRUSTED_PROXIES"); got != caddyNet.Haru.IPv4 {
		t.Errorf("ingest: HARU_TRUSTED_PROXIES=%q, want the proxy's address %s", got, caddyNet.Haru.IPv4)
	}
}

// ----- Prometheus -----

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

func TestComposePrometheus(t *testing.T) {
	c := loadCompose(t)
	var p promConfig
	decodeYAML(t, "prometheus/prometheus.yml", &p)
	prom, ok := c.Services["prometheus"]
	if !ok {
		t.Fatal("no prometheus service")
	}
	if _, ok := prom.mount("./deploy/prometheus/prometheus.yml"); !ok {
		t.Error("prometheus: deploy/prometheus/prometheus.yml is not mounted")
	}
	for _, rf := range p.RuleFiles {
		mounted := false
		for _, v := range prom.Volumes {
			if parts := strings.Split(v, ":"); len(parts) >= 2 && parts[1] == rf {
				mounted = true
				if _, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(parts[0]))); err != nil {
					t.Errorf("prometheus: rule file source: %v", err)
				}
			}
		}
		if !mounted {
			t.Errorf("prometheus: rule file %s is not mounted", rf)
		}
	}
	scraped := map[string]bool{}
	for _, sc := range p.ScrapeConfigs {
		var targets []string
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				targets = append(targets, net.JoinHostPort(n, strconv.Itoa(d.Port)))
			}
		}
		for _, s := range sc.StaticConfigs {
			targets = append(targets, s.Targets...)
		}
		for _, tg := range targets {
			host, port, err := net.SplitHostPort(tg)
			if err != nil {
				t.Errorf("job %s: target %q: %v", sc.JobName, tg, err)
				continue
			}
			svc, ok := c.Services[host]
			if !ok || !isHaru(svc) {
				continue
			}
			scraped[host] = true
			ops := svc.env("HARU_OPS_ADDR")
			if ops == "" || strconv.Itoa(addrPort(t, host, ops)) != port {
				t.Errorf("job %s scrapes %s, but %s has HARU_OPS_ADDR=%q", sc.JobName, tg, host, ops)
			}
			if sc.JobName != host {
				t.Errorf("job %s scrapes %s: the alert rules expect job names ingest, writer and query", sc.JobName, host)
			}
		}
	}
	for name, s := range c.Services {
		if isHaru(s) && name != "migrate" && !scraped[name] {
			t.Errorf("compose service %s is not scraped", name)
		}
	}
}

func TestKubernetesPrometheus(t *testing.T) {
	var p struct {
		ScrapeConfigs []struct {
			JobName        string `yaml:"job_name"`
			RelabelConfigs []struct {
				SourceLabels []string `yaml:"source_labels"`
				TargetLabel  string   `yaml:"target_label"`
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	decodeYAML(t, "prometheus/prometheus-kubernetes.yml", &p)
	if len(p.ScrapeConfigs) == 0 {
		t.Fatal("prometheus-kubernetes.yml: no scrape configs")
	}
	var job, port bool
	for _, sc := range p.ScrapeConfigs {
		for _, r := range sc.RelabelConfigs {
			if r.TargetLabel == "job" && slices.Contains(r.SourceLabels, "__meta_kubernetes_pod_label_app_kubernetes_io_component") {
				job = true
			}
			if r.TargetLabel == "__address__" && slices.Contains(r.SourceLabels, "__meta_kubernetes_pod_annotation_prometheus_io_port") {
				port = true
			}
		}
	}
	if !job || !port {
		t.Errorf("prometheus-kubernetes.yml: want the job from the component label (%v) and the port from prometheus.io/port (%v)", job, port)
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestPrometheusRules(t *testing.T) {
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, "prometheus/haru-alerts.yml")))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("haru-alerts.yml: %v", err)
	}
	known := sourceLiterals(t).all
	seen := map[string]bool{}
	var used []string
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: want a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without an alert name", g.Name)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s is defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("alert %s: no expr", r.Alert)
			}
			if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
				t.Errorf("alert %s: for %q: want a positive duration", r.Alert, r.For)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s: no severity label", r.Alert)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: want summary and description annotations", r.Alert)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
			for _, m := range metricNames(r.Expr, known) {
				checkMetric(t, "alert "+r.Alert, m, true)
				used = append(used, m)
			}
		}
	}
	// What the operations brief asks the rules to watch.
	for _, m := range []string{
		"haru_writer_consumer_pending_messages", "haru_ingest_requests_total", "haru_writer_batch_errors_total",
		"haru_ingest_stream_bytes", "haru_ingest_stream_max_bytes",
	} {
		if !slices.Contains(used, m) {
			t.Errorf("no alert uses %s", m)
		}
	}
	hasUp := false
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if regexp.MustCompile(`\bup\b`).MatchString(r.Expr) {
				hasUp = true
			}
		}
	}
	if !hasUp {
		t.Error("no alert watches targets that are down (up == 0)")
	}
}

// ----- Grafana -----

func TestGrafana(t *testing.T) {
	c := loadCompose(t)
	g, ok := c.Services["grafana"]
	if !ok {
		t.Fatal("no grafana service")
	}
	prov, ok := g.mount("./deploy/grafana/provisioning")
	if !ok || prov != "/etc/grafana/provisioning" {
		t.Errorf("grafana: provisioning mounted at %q, want /etc/grafana/provisioning", prov)
	}
	dashDir, _ := g.mount("./deploy/grafana/dashboards")

	var providers struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeYAML(t, "grafana/provisioning/dashboards/haru.yml", &providers)
	if len(providers.Providers) != 1 || providers.Providers[0].Options.Path != dashDir {
		t.Errorf("dashboard provider %+v: want one reading %q, where compose mounts the dashboards", providers.Providers, dashDir)
	}
	var sources struct {
		Datasources []struct {
			Type, URL string
		} `yaml:"datasources"`
	}
	decodeYAML(t, "grafana/provisioning/datasources/prometheus.yml", &sources)
	if len(sources.Datasources) != 1 || sources.Datasources[0].Type != "prometheus" {
		t.Fatalf("datasources %+v: want one Prometheus", sources.Datasources)
	}
	if u, err := url.Parse(sources.Datasources[0].URL); err != nil || c.Services[u.Hostname()].Image == "" {
		t.Errorf("datasource URL %q is not a compose service", sources.Datasources[0].URL)
	}

	files, _ := filepath.Glob("grafana/dashboards/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards")
	}
	known := sourceLiterals(t).all
	for _, f := range files {
		var d struct {
			UID    string `json:"uid"`
			Title  string `json:"title"`
			Panels []struct {
				Type    string `json:"type"`
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		dec := json.NewDecoder(bytes.NewReader(readFile(t, f)))
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			t.Errorf("%s: trailing data after the dashboard", f)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: want a uid and a title", f)
		}
		var used []string
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no queries", f, p.Title)
			}
			for _, tg := range p.Targets {
				names := metricNames(tg.Expr, known)
				if len(names) == 0 {
					t.Errorf("%s: panel %q: query %q names no Haru or Go series", f, p.Title, tg.Expr)
				}
				for _, m := range names {
					checkMetric(t, fmt.Sprintf("%s panel %q", f, p.Title), m, false)
					used = append(used, m)
				}
			}
		}
		if filepath.Base(f) == "haru.json" {
			for _, m := range requiredPanels {
				if !slices.Contains(used, m) {
					t.Errorf("%s: no panel charts %s", f, m)
				}
			}
		}
	}
}

// ----- Kubernetes -----

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`
	file       string
}

type podTemplate struct {
	Metadata struct {
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		Containers []container `yaml:"containers"`
	} `yaml:"spec"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

func (c container) env(key string) string {
	for _, e := range c.Env {
		if e.Name == key {
			return e.Value
		}
	}
	return ""
}

// port resolves a port given by number or by name.
func (c container) port(n yaml.Node) int {
	if p, err := strconv.Atoi(n.Value); err == nil {
		return p
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return p.ContainerPort
		}
	}
	return -1
}

type k8sSet struct {
	objects []k8sObject
	images  []string
}

func (s k8sSet) get(kind, name string) (k8sObject, bool) {
	for _, o := range s.objects {
		if o.Kind == kind && o.Metadata.Name == name {
			return o, true
		}
	}
	return k8sObject{}, false
}

func (s k8sSet) all(kind string) []k8sObject {
	var out []k8sObject
	for _, o := range s.objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func loadK8s(t *testing.T) k8sSet {
	t.Helper()
	var kz struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
		Images    []struct {
			Name string `yaml:"name"`
		} `yaml:"images"`
	}
	decodeYAML(t, "k8s/kustomization.yaml", &kz)
	if kz.Namespace == "" {
		t.Error("kustomization.yaml: no namespace")
	}
	// Every manifest is applied: nothing in k8s/ is forgotten by kustomization.yaml.
	files, _ := filepath.Glob("k8s/*.yaml")
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && base != "nats-values.yaml" && !slices.Contains(kz.Resources, base) {
			t.Errorf("k8s/%s is not listed in kustomization.yaml", base)
		}
	}
	var set k8sSet
	for _, img := range kz.Images {
		set.images = append(set.images, img.Name)
	}
	for _, r := range kz.Resources {
		dec := yaml.NewDecoder(bytes.NewReader(readFile(t, filepath.Join("k8s", r))))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("k8s/%s: %v", r, err)
			}
			if o.Kind == "" {
				continue
			}
			if o.APIVersion == "" || o.Metadata.Name == "" {
				t.Errorf("k8s/%s: %s without apiVersion or name", r, o.Kind)
			}
			o.file = r
			set.objects = append(set.objects, o)
		}
	}
	return set
}

func decodeSpec(t *testing.T, o k8sObject, v any) {
	t.Helper()
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s %s: spec: %v", o.Kind, o.Metadata.Name, err)
	}
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkContainer validates a Haru container's command, env and references, and returns
// its target.
func checkContainer(t *testing.T, set k8sSet, where string, c container) string {
	t.Helper()
	if !slices.ContainsFunc(set.images, func(n string) bool { return strings.HasPrefix(c.Image, n+":") || c.Image == n }) {
		t.Errorf("%s: image %q is not one kustomization.yaml manages", where, c.Image)
	}
	if len(c.Command) > 0 {
		t.Errorf("%s: command overrides the image's ENTRYPOINT; use args", where)
	}
	target := checkCommand(t, where, c.Args)
	for _, e := range c.Env {
		checkEnvName(t, where, e.Name)
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			if _, ok := set.get("ConfigMap", ef.ConfigMapRef.Name); !ok {
				t.Errorf("%s: ConfigMap %s does not exist", where, ef.ConfigMapRef.Name)
			}
		case ef.SecretRef != nil:
			if _, ok := set.get("Secret", ef.SecretRef.Name); !ok {
				t.Errorf("%s: Secret %s does not exist", where, ef.SecretRef.Name)
			}
		}
	}
	return target
}

// envOf is the value a container sees for key: its env, then its envFrom sources.
func envOf(set k8sSet, c container, key string) string {
	if v := c.env(key); v != "" {
		return v
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			if o, ok := set.get("ConfigMap", ef.ConfigMapRef.Name); ok && o.Data[key] != "" {
				return o.Data[key]
			}
		}
		if ef.SecretRef != nil {
			if o, ok := set.get("Secret", ef.SecretRef.Name); ok && o.StringData[key] != "" {
				return o.StringData[key]
			}
		}
	}
	return ""
}

func TestKubernetesConfig(t *testing.T) {
	set := loadK8s(t)
	for _, kind := range []string{"ConfigMap", "Secret"} {
		for _, o := range set.all(kind) {
			for k := range o.Data {
				checkEnvName(t, kind+" "+o.Metadata.Name, k)
			}
			for k := range o.StringData {
				checkEnvName(t, kind+" "+o.Metadata.Name, k)
			}
		}
	}
}

func TestKubernetesWorkloads(t *testing.T) {
	set := loadK8s(t)
	type workload struct {
		name   string
		labels map[string]string
		c      container
		ops    int
	}
	byTarget := map[string]workload{}
	for _, d := range set.all("Deployment") {
		var spec struct {
			Replicas *int `yaml:"replicas"`
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Template podTemplate `yaml:"template"`
		}
		decodeSpec(t, d, &spec)
		where := "Deployment " + d.Metadata.Name
		if !matches(spec.Selector.MatchLabels, spec.Template.Metadata.Labels) {
			t.Errorf("%s: selector %v does not match its pod labels", where, spec.Selector.MatchLabels)
		}
		if len(spec.Template.Spec.Containers) != 1 {
			t.Errorf("%s: want one container", where)
			continue
		}
		c := spec.Template.Spec.Containers[0]
		target := checkContainer(t, set, where, c)
		ops := envOf(set, c, "HARU_OPS_ADDR")
		if ops == "" {
			t.Errorf("%s: HARU_OPS_ADDR is not set (the default listens on loopback)", where)
			continue
		}
		opsPort := checkOpsAddr(t, where, ops)
		for name, p := range map[string]*probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s: no HTTP %s probe", where, name)
				continue
			}
			if p.HTTPGet.Path != want {
				t.Errorf("%s: %s probe path %q, want %s", where, name, p.HTTPGet.Path, want)
			}
			if got := c.port(p.HTTPGet.Port); got != opsPort {
				t.Errorf("%s: %s probe on port %d, but HARU_OPS_ADDR=%s", where, name, got, ops)
			}
		}
		if a := spec.Template.Metadata.Annotations; a["prometheus.io/port"] != strconv.Itoa(opsPort) {
			t.Errorf("%s: prometheus.io/port %q, but HARU_OPS_ADDR=%s", where, a["prometheus.io/port"], ops)
		}
		if http := envOf(set, c, "HARU_HTTP_ADDR"); http != "" {
			port := addrPort(t, where, http)
			if !slices.ContainsFunc(c.Ports, func(p struct {
				Name          string `yaml:"name"`
				ContainerPort int    `yaml:"containerPort"`
			}) bool {
				return p.ContainerPort == port
			}) {
				t.Errorf("%s: HARU_HTTP_ADDR=%s is not a container port", where, http)
			}
		}
		if envOf(set, c, "HARU_STREAM_REPLICAS") != "3" {
			t.Errorf("%s: HARU_STREAM_REPLICAS is not 3", where)
		}
		if target == "writer" || target == "query" {
			if envOf(set, c, "HARU_DATABASE_URL") == "" {
				t.Errorf("%s: HARU_DATABASE_URL is not set", where)
			}
		}
		if target == "ingest" && envOf(set, c, "HARU_TRUSTED_PROXIES") == "" {
			t.Errorf("%s: HARU_TRUSTED_PROXIES is not set: every client would look like the ingress", where)
		}
		if target == "ingest" && c.Resources.Requests["cpu"] == "" {
			t.Errorf("%s: no CPU request; the HorizontalPodAutoscaler needs one", where)
		}
		// prometheus-kubernetes.yml names the job after this label; the rules expect targets.
		if got := spec.Template.Metadata.Labels["app.kubernetes.io/component"]; got != target {
			t.Errorf("%s: pod label app.kubernetes.io/component=%q, want %q (the Prometheus job name)", where, got, target)
		}
		if spec.Template.Metadata.Labels["app.kubernetes.io/part-of"] != "haru" {
			t.Errorf("%s: pod label app.kubernetes.io/part-of is not haru; Prometheus would not scrape it", where)
		}
		byTarget[target] = workload{name: d.Metadata.Name, labels: spec.Template.Metadata.Labels, c: c, ops: opsPort}
	}
	for _, target := range []string{"ingest", "writer", "query"} {
		w, ok := byTarget[target]
		if !ok {
			t.Errorf("no Deployment runs -target=%s", target)
			continue
		}
		// A PodDisruptionBudget covers every Deployment.
		covered := false
		for _, pdb := range set.all("PodDisruptionBudget") {
			var spec struct {
				Selector struct {
					MatchLabels map[string]string `yaml:"matchLabels"`
				} `yaml:"selector"`
			}
			decodeSpec(t, pdb, &spec)
			covered = covered || matches(spec.Selector.MatchLabels, w.labels)
		}
		if !covered {
			t.Errorf("Deployment %s: no PodDisruptionBudget selects it", w.name)
		}
	}

	// Services select a workload and point at its named ports.
	for _, svc := range set.all("Service") {
		var spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string    `yaml:"name"`
				Port       int       `yaml:"port"`
				TargetPort yaml.Node `yaml:"targetPort"`
			} `yaml:"ports"`
		}
		decodeSpec(t, svc, &spec)
		var w *workload
		for _, cand := range byTarget {
			if matches(spec.Selector, cand.labels) {
				w = &cand
			}
		}
		if w == nil {
			t.Errorf("Service %s selects no Deployment", svc.Metadata.Name)
			continue
		}
		for _, p := range spec.Ports {
			if w.c.port(p.TargetPort) < 0 {
				t.Errorf("Service %s: targetPort %q is not a port of %s", svc.Metadata.Name, p.TargetPort.Value, w.name)
			}
		}
	}

	// ingest scales on CPU.
	hpas := set.all("HorizontalPodAutoscaler")
	found := false
	for _, h := range hpas {
		var spec struct {
			ScaleTargetRef struct{ Kind, Name string } `yaml:"scaleTargetRef"`
			MinReplicas    int                         `yaml:"minReplicas"`
			MaxReplicas    int                         `yaml:"maxReplicas"`
			Metrics        []struct {
				Type     string `yaml:"type"`
				Resource struct {
					Name string `yaml:"name"`
				} `yaml:"resource"`
			} `yaml:"metrics"`
		}
		decodeSpec(t, h, &spec)
		if spec.ScaleTargetRef.Kind != "Deployment" || spec.ScaleTargetRef.Name != byTarget["ingest"].name {
			continue
		}
		found = true
		if spec.MinReplicas < 2 || spec.MaxReplicas < spec.MinReplicas {
			t.Errorf("HPA %s: replicas %d..%d: want at least 2", h.Metadata.Name, spec.MinReplicas, spec.MaxReplicas)
		}
		if !slices.ContainsFunc(spec.Metrics, func(m struct {
			Type     string `yaml:"type"`
			Resource struct {
				Name string `yaml:"name"`
			} `yaml:"resource"`
		}) bool {
			return m.Type == "Resource" && m.Resource.Name == "cpu"
		}) {
			t.Errorf("HPA %s: does not scale on CPU", h.Metadata.Name)
		}
	}
	if !found {
		t.Error("no HorizontalPodAutoscaler scales the ingest Deployment")
	}

	// The migrate Job.
	job, ok := set.get("Job", "haru-migrate")
	if !ok {
		t.Fatal("no haru-migrate Job")
	}
	var jspec struct {
		Template podTemplate `yaml:"template"`
	}
	decodeSpec(t, job, &jspec)
	if len(jspec.Template.Spec.Containers) != 1 {
		t.Fatal("Job haru-migrate: want one container")
	}
	jc := jspec.Template.Spec.Containers[0]
	checkContainer(t, set, "Job haru-migrate", jc)
	if !slices.Equal(jc.Args, []string{"admin", "migrate"}) {
		t.Errorf("Job haru-migrate: args %q, want [admin migrate]", jc.Args)
	}
	if envOf(set, jc, "HARU_DATABASE_URL") == "" {
		t.Error("Job haru-migrate: HARU_DATABASE_URL is not set")
	}
}

// ingestRoutes are the public routes the proxies must send to ingest (besides /js/*).
var ingestRoutes = []string{"/api/collect", "/api/batch"}

func TestKubernetesIngress(t *testing.T) {
	set := loadK8s(t)
	routed := map[string]bool{}
	for _, ing := range set.all("Ingress") {
		var spec struct {
			Rules []struct {
				HTTP struct {
					Paths []struct {
						Path    string `yaml:"path"`
						Backend struct {
							Service struct {
								Name string `yaml:"name"`
								Port struct {
									Name   string `yaml:"name"`
									Number int    `yaml:"number"`
								} `yaml:"port"`
							} `yaml:"service"`
						} `yaml:"backend"`
					} `yaml:"paths"`
				} `yaml:"http"`
			} `yaml:"rules"`
		}
		decodeSpec(t, ing, &spec)
		for _, r := range spec.Rules {
			for _, p := range r.HTTP.Paths {
				svc, ok := set.get("Service", p.Backend.Service.Name)
				if !ok {
					t.Errorf("Ingress %s: %s goes to missing Service %s", ing.Metadata.Name, p.Path, p.Backend.Service.Name)
					continue
				}
				var sspec struct {
					Ports []struct {
						Name string `yaml:"name"`
						Port int    `yaml:"port"`
					} `yaml:"ports"`
				}
				decodeSpec(t, svc, &sspec)
				if !slices.ContainsFunc(sspec.Ports, func(sp struct {
					Name string `yaml:"name"`
					Port int    `yaml:"port"`
				}) bool {
					return sp.Name == p.Backend.Service.Port.Name || sp.Port == p.Backend.Service.Port.Number
				}) {
					t.Errorf("Ingress %s: %s goes to a port Service %s lacks", ing.Metadata.Name, p.Path, svc.Metadata.Name)
				}
				if slices.Contains(ingestRoutes, p.Path) && svc.Metadata.Name != "haru-ingest" {
					t.Errorf("Ingress %s: %s goes to %s, want haru-ingest", ing.Metadata.Name, p.Path, svc.Metadata.Name)
				}
				routed[p.Path] = true
			}
		}
	}
	for _, route := range ingestRoutes {
		if !routed[route] || !sourceLiterals(t).under("services/ingest", route) {
			t.Errorf("Ingress: no path %s, an ingest route", route)
		}
	}
}

func TestKubernetesNATSValues(t *testing.T) {
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
			} `yaml:"cluster"`
			JetStream struct {
				Enabled   bool `yaml:"enabled"`
				FileStore struct {
					Enabled bool   `yaml:"enabled"`
					MaxSize string `yaml:"maxSize"`
					PVC     struct {
						Enabled bool   `yaml:"enabled"`
						Size    string `yaml:"size"`
					} `yaml:"pvc"`
				} `yaml:"fileStore"`
			} `yaml:"jetstream"`
		} `yaml:"config"`
	}
	decodeYAML(t, "k8s/nats-values.yaml", &v)
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 {
		t.Errorf("nats-values.yaml: cluster %+v, want enabled with 3 replicas", v.Config.Cluster)
	}
	js := v.Config.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled || js.FileStore.PVC.Size == "" {
		t.Errorf("nats-values.yaml: jetstream %+v, want file storage on PVCs", js)
	}
	set := loadK8s(t)
	cm, ok := set.get("ConfigMap", "haru-config")
	if !ok {
		t.Fatal("no haru-config ConfigMap")
	}
	if r, _ := strconv.Atoi(cm.Data["HARU_STREAM_REPLICAS"]); r > v.Config.Cluster.Replicas {
		t.Errorf("HARU_STREAM_REPLICAS %d exceeds the %d NATS servers", r, v.Config.Cluster.Replicas)
	}
	if u, err := url.Parse(cm.Data["HARU_NATS_URL"]); err != nil || u.Hostname() != "nats" || u.Port() != "4222" {
		t.Errorf("HARU_NATS_URL %q: want nats://nats:4222, the Helm release's client Service", cm.Data["HARU_NATS_URL"])
	}
	streamMax, err := config.ParseSize(cm.Data["HARU_STREAM_MAX_BYTES"])
	if err != nil {
		t.Fatalf("HARU_STREAM_MAX_BYTES: %v", err)
	}
	for what, q := range map[string]string{"fileStore.maxSize": js.FileStore.MaxSize, "fileStore.pvc.size": js.FileStore.PVC.Size} {
		n, err := quantity(q)
		if err != nil {
			t.Errorf("nats-values.yaml %s: %v", what, err)
		} else if n <= streamMax {
			t.Errorf("nats-values.yaml %s %s is not above HARU_STREAM_MAX_BYTES %s", what, q, cm.Data["HARU_STREAM_MAX_BYTES"])
		}
	}
}

// quantity parses the binary Kubernetes quantities the values use (10Gi, 512Mi).
func quantity(q string) (int64, error) {
	for suf, mult := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40} {
		if n, ok := strings.CutSuffix(q, suf); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * mult, err
		}
	}
	return 0, fmt.Errorf("quantity %q: want a number with Ki, Mi, Gi or Ti", q)
}
