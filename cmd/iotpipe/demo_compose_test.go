package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	composecli "github.com/compose-spec/compose-go/v2/cli"
)

// TestSettingsEqualTheDemo checks that the docker-compose.yml stages run
// with the settings `make demo` gives them (window, lateness, lake file
// age, fleet), so the compose stack and the demo behave alike.
func TestSettingsEqualTheDemo(t *testing.T) {
	root := filepath.Join("..", "..")
	opts, err := composecli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		composecli.WithWorkingDirectory(root),
		composecli.WithProfiles([]string{"*"}),
		composecli.WithEnv([]string{}), // defaults only: what `docker compose up` uses on a clean machine
		composecli.WithDiscardEnvFile,
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	demo, err := DemoStageSettings()
	if err != nil {
		t.Fatal(err)
	}
	for service, settings := range demo {
		s, ok := p.Services[service]
		if !ok {
			t.Errorf("the demo runs %s, docker-compose.yml has no such service", service)
			continue
		}
		for flag, want := range settings {
			v := s.Environment[EnvName(flag)]
			if v == nil {
				t.Errorf("service %s does not set %s; make demo uses --%s %s", service, EnvName(flag), flag, want)
				continue
			}
			if !sameSetting(*v, want) {
				t.Errorf("service %s sets %s=%s; make demo uses --%s %s", service, EnvName(flag), *v, flag, want)
			}
		}
	}
}

// sameSetting compares two values of one setting, durations by value.
func sameSetting(a, b string) bool {
	if a == b {
		return true
	}
	da, errA := time.ParseDuration(a)
	db, errB := time.ParseDuration(b)
	return errA == nil && errB == nil && da == db
}
