package all

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/haru-analytics/haru/pkg/config"
	"github.com/haru-analytics/haru/pkg/pgutil"
	seedgen "github.com/haru-analytics/haru/pkg/seed"
	"github.com/haru-analytics/haru/services/query"
	"github.com/haru-analytics/haru/services/writer"
)

// Demo account seeded by `haru admin seed-demo` (and so by `make run`).
const (
	DemoEmail    = "dev@haru.local"
	DemoPassword = "devsecret123456"
	DemoDomain   = "demo.haru.local"
)

const adminUsage = `usage: haru admin <command> [flags]

commands:
  migrate                                   create the database if missing, apply migrations
  create-user -email E -password P          register a user
  reset-password -email E -password P       set a user's password
  create-site -email E -name N -domain D [-timezone TZ]
                                            add a site for a user; prints its id and token
  create-site-secret -site ID               print a new secret key for the site's batch endpoint (replaces the old one)
  create-api-key -email E [-name N]         print a new stats API key (replaces one of that name)
  rebuild-rollups -site ID -from DATE -to DATE [-chunk-days C]
                                            recompute a site's rollups for local days from..to from raw events,
                                            C days (default 1) per transaction
  rebuild-rollups -site ID -all [-chunk-days C]
                                            the same for every day with raw events and two on either side
                                            (after a timezone change)
  seed-demo [-public-url URL]               ensure the demo account and site; print token, key and curl lines
  seed-events -site ID [-events N] [-days D] [-seed S] [-chunk-days C]
                                            load N realistic historical events over the last D days
                                            into a site (COPY), then rebuild its rollups

Every command reads HARU_DATABASE_URL.`

// adminCommands are the commands of adminUsage.
var adminCommands = []string{"migrate", "create-user", "reset-password", "create-site", "create-site-secret",
	"create-api-key", "rebuild-rollups", "seed-demo", "seed-events"}

// Admin runs one admin command.
func Admin(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, adminUsage)
		return nil
	}
	cmd, args := args[0], args[1:]
	if !slices.Contains(adminCommands, cmd) {
		return errors.New("unknown admin command " + cmd + "\n" + adminUsage)
	}
	fs := flag.NewFlagSet("haru admin "+cmd, flag.ContinueOnError)
	fs.SetOutput(stdout)
	email := fs.String("email", "", "user's email")
	password := fs.String("password", "", "user's password (at least 10 characters)")
	name := fs.String("name", "", "site or key name")
	domain := fs.String("domain", "", "site domain, such as example.com")
	tz := fs.String("timezone", "UTC", "site timezone (IANA name)")
	siteID := fs.Int64("site", 0, "site id")
	fromDay := fs.String("from", "", "first local day, YYYY-MM-DD")
	toDay := fs.String("to", "", "last local day, YYYY-MM-DD")
	events := fs.Int("events", 1_000_000, "events to seed")
	days := fs.Int("days", 365, "days of history to seed")
	seedN := fs.Uint64("seed", 1, "random seed of the generated events")
	all := fs.Bool("all", false, "rebuild-rollups: every day with raw events, and two on either side")
	chunk := fs.Int("chunk-days", 1, "days one rollup rebuild transaction covers; the site's writers wait for each")
	publicURL := fs.String("public-url", "", "origin the printed curl lines use (default from HARU_PUBLIC_URL or HARU_HTTP_ADDR)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil // the flags' usage is printed
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q (flags go before them?)\n%s", cmd, fs.Args(), adminUsage)
	}
	env := config.NewEnv(getenv)
	dbURL := env.String("HARU_DATABASE_URL", pgutil.DefaultURL)
	if _, err := pgutil.EnsureDatabase(ctx, dbURL); err != nil {
		return err
	}
	pool, err := pgutil.Open(ctx, dbURL, 2, "haru-admin")
	if err != nil {
		return err
	}
	defer pool.Close()
	version, err := pgutil.Migrate(ctx, pool)
	if err != nil {
		return err
	}
	adm, err := query.NewAdmin(pool)
	if err != nil {
		return err
	}
	need := func(vals ...string) error {
		for _, v := range vals {
			if strings.TrimSpace(v) == "" {
				return fmt.Errorf("%s: missing a required flag\n%s", cmd, adminUsage)
			}
		}
		return nil
	}
	switch cmd {
	case "migrate":
		fmt.Fprintf(stdout, "database %s at schema version %d\n", config.MaskURL(dbURL), version)
		return nil
	case "create-user":
		if err := need(*email, *password); err != nil {
			return err
		}
		id, err := adm.CreateUser(ctx, *email, *password)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %d %s\n", id, *email)
		return nil
	case "reset-password":
		if err := need(*email, *password); err != nil {
			return err
		}
		if err := adm.ResetPassword(ctx, *email, *password); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "password reset for %s\n", *email)
		return nil
	case "create-site":
		if err := need(*email, *name, *domain); err != nil {
			return err
		}
		s, err := adm.CreateSite(ctx, *email, *name, *domain, *tz)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "site_id=%d\ntoken=%s\n", s.ID, s.Token)
		return nil
	case "create-site-secret":
		if *siteID <= 0 {
			return fmt.Errorf("create-site-secret: want -site ID\n%s", adminUsage)
		}
		secret, err := adm.CreateSiteSecret(ctx, *siteID)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, secret)
		return nil
	case "create-api-key":
		if err := need(*email); err != nil {
			return err
		}
		if *name == "" {
			*name = "default"
		}
		key, err := adm.CreateAPIKey(ctx, *email, *name)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, key)
		return nil
	case "rebuild-rollups":
		if *chunk <= 0 {
			return fmt.Errorf("rebuild-rollups: want -chunk-days above 0\n%s", adminUsage)
		}
		done := func(from, to time.Time, took time.Duration) {
			fmt.Fprintf(stdout, "rollups of site %d rebuilt for %s..%s in %s\n", *siteID,
				from.Format(time.DateOnly), to.Format(time.DateOnly), took.Round(time.Millisecond))
		}
		if *all {
			if *siteID <= 0 || *fromDay != "" || *toDay != "" {
				return fmt.Errorf("rebuild-rollups: want -site ID -all, without -from and -to\n%s", adminUsage)
			}
			from, _, err := writer.RebuildAllRollupsNow(ctx, pool, *siteID, *chunk, done)
			if err == nil && from.IsZero() {
				fmt.Fprintf(stdout, "site %d has no raw events: nothing to rebuild\n", *siteID)
			}
			return err
		}
		from, err1 := time.Parse(time.DateOnly, *fromDay)
		to, err2 := time.Parse(time.DateOnly, *toDay)
		if *siteID <= 0 || err1 != nil || err2 != nil || to.Before(from) {
			return fmt.Errorf("rebuild-rollups: want -site ID -from YYYY-MM-DD -to YYYY-MM-DD (from ≤ to), or -site ID -all\n%s", adminUsage)
		}
		return writer.RebuildRollupsInChunks(ctx, pool, *siteID, from, to, *chunk, done)
	case "seed-events":
		if *siteID <= 0 || *events <= 0 || *days <= 0 || *chunk <= 0 {
			return fmt.Errorf("seed-events: want -site ID, -events, -days and -chunk-days above 0\n%s", adminUsage)
		}
		res, err := seedgen.Seed(ctx, pool, *siteID, *events, *days, time.Now(), *seedN, func(ctx context.Context, from, to time.Time) error {
			return writer.RebuildRollupsInChunks(ctx, pool, *siteID, from, to, *chunk, nil)
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "site %d: %d events copied in %s (%.0f/s), rollups rebuilt in %s (%.0f events/s)\n",
			*siteID, res.Events, res.Copy.Round(time.Millisecond), float64(res.Events)/res.Copy.Seconds(),
			res.Rebuild.Round(time.Millisecond), float64(res.Events)/res.Rebuild.Seconds())
		return nil
	case "seed-demo":
		s, key, err := adm.EnsureDemo(ctx, DemoEmail, DemoPassword, "Demo site", DemoDomain)
		if err != nil {
			return err
		}
		origin := *publicURL
		if origin == "" {
			origin = publicOrigin(env)
		}
		printDemo(stdout, origin, s, key)
		return nil
	default:
		return errors.New("unknown admin command " + cmd + "\n" + adminUsage)
	}
}

// publicOrigin is where a person on this machine reaches the single binary.
func publicOrigin(env *config.Env) string {
	if u := env.String("HARU_PUBLIC_URL", ""); u != "" {
		return strings.TrimSuffix(u, "/")
	}
	addr := env.String("HARU_HTTP_ADDR", ":4000")
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	return "http://" + addr
}

func printDemo(w io.Writer, origin string, s query.SiteInfo, key string) {
	fmt.Fprintf(w, `
Dashboard:    %s/login
Demo account: %s / %s
Demo site:    %s (id %d)
Site token:   %s
API key:      %s

Send a pageview:
  curl -i -X POST '%s/api/collect' -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{"p":"/home","r":"https://google.com","sw":1920,"sh":1080}'

Read today's stats:
  curl -s '%s/api/v1/sites/%d/aggregate?period=today' -H 'Authorization: Bearer %s'

Watch the live stream:
  curl -N '%s/api/v1/sites/%d/live?key=%s'

`, origin, DemoEmail, DemoPassword, s.Domain, s.ID, s.Token, key, origin, s.Token, origin, s.ID, key, origin, s.ID, key)
}
