package deploy

import (
	"context"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

// TestComposeConfig loads docker-compose.yml the way `docker compose config` does, with
// the Compose specification's own loader: its JSON schema, interpolation, anchors and
// consistency checks (depends_on, volumes and networks that exist). Then it checks the
// resolved project, not the raw YAML, against the code.
func TestComposeConfig(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{composePath},
		cli.WithWorkingDirectory(repoRoot),
		cli.WithName("haru"),
		cli.WithEnv([]string{}), // the file's own defaults, not this shell's variables
		cli.WithInterpolation(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	targets := map[string]string{}
	for name, s := range p.Services {
		for k := range s.Environment {
			checkEnvName(t, "compose service "+name+" (resolved)", k)
		}
		if s.Build == nil {
			continue
		}
		target := checkCommand(t, "compose service "+name+" (resolved)", s.Command)
		targets[target] = name
		if target == "ingest" || target == "writer" || target == "query" {
			if u := s.Environment["HARU_NATS_URL"]; u == nil {
				t.Errorf("compose service %s: HARU_NATS_URL unset after resolution", name)
			} else {
				checkNATSURL(t, "compose service "+name+" (resolved)", *u, natsServices(loadCompose(t)))
			}
			if r := s.Environment["HARU_STREAM_REPLICAS"]; r == nil || *r != "3" {
				t.Errorf("compose service %s: HARU_STREAM_REPLICAS unset or not 3 after resolution", name)
			}
		}
	}
	for _, want := range []string{"ingest", "writer", "query", "admin"} {
		if _, ok := targets[want]; !ok {
			t.Errorf("resolved project: no service runs %s", want)
		}
	}
	if s, ok := p.Services["ingest"]; !ok || s.Deploy == nil || s.Deploy.Replicas == nil || *s.Deploy.Replicas != 2 {
		t.Errorf("resolved project: ingest does not run two replicas")
	}
}
