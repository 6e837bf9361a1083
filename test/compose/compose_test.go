// Package compose tests docker-compose.yml without Docker (no image can be
// pulled where the tests run): the file loads and validates with the
// Compose specification's own loader, every IOTPIPE_* variable it gives an
// iotpipe service is one that command reads, every long-running service has
// a healthcheck, depends_on has no cycle, and every iotpipe stage accepts
// its compose settings (--check-config, run on the binary built from
// cmd/iotpipe). Mutual TLS (tls_test.go): Mosquitto's only listener is the
// TLS one, the ACL binds topics to certificates, the certificate volumes
// are mounted where they must be and no key is in an image; with the
// integration tag, the broker's configuration runs on a real Mosquitto
// (broker_integration_test.go). That the compose stages run with the demo's
// settings is checked next to the demo (cmd/iotpipe).
package compose

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinary()
	os.Exit(code)
}

// iotpipe runs the binary built from cmd/iotpipe with exactly env as its
// environment and returns its exit code and output.
func iotpipe(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errOut.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errOut.String()
	}
	t.Fatalf("iotpipe %s: %v", strings.Join(args, " "), err)
	return 0, "", ""
}

func repoRoot(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the repository")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func load(t *testing.T) *types.Project {
	t.Helper()
	root := repoRoot(t)
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
	return p
}

// iotpipeArgs returns the iotpipe command line of a service that runs the
// iotpipe image, or nil.
func iotpipeArgs(s types.ServiceConfig) []string {
	if !strings.HasPrefix(s.Image, "iotpipe") && !strings.Contains(s.Image, "IOTPIPE_IMAGE") && s.Build == nil {
		return nil
	}
	return []string(s.Command)
}

var envName = regexp.MustCompile(`IOTPIPE_[A-Z0-9_]+`)

// readsEnv lists the IOTPIPE_* variables a command reads, from its --help
// (which shows every flag's variable).
func readsEnv(t *testing.T, args []string) map[string]bool {
	t.Helper()
	code, out, errOut := iotpipe(t, nil, append(append([]string{}, args...), "--help")...)
	if code != 0 {
		t.Fatalf("iotpipe %s --help: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	vars := map[string]bool{}
	for _, v := range envName.FindAllString(out, -1) {
		vars[v] = true
	}
	if len(vars) == 0 {
		t.Fatalf("iotpipe %s --help names no IOTPIPE_* variable", strings.Join(args, " "))
	}
	return vars
}

func TestServicesUseOnlyVariablesTheBinaryReads(t *testing.T) {
	p := load(t)
	stages := 0
	for name, s := range p.Services {
		args := iotpipeArgs(s)
		if args == nil {
			continue
		}
		stages++
		reads := readsEnv(t, args)
		for k := range s.Environment {
			if strings.HasPrefix(k, "IOTPIPE_") && !reads[k] {
				t.Errorf("service %s sets %s, which `iotpipe %s` does not read", name, k, strings.Join(args, " "))
			}
		}
	}
	if stages < 7 {
		t.Fatalf("found %d iotpipe services, want init, bridge, processor, both sinks, alert and notify", stages)
	}
}

// TestStagesAcceptComposeSettings runs every iotpipe service's command
// with its compose settings and --check-config. The certificate files they
// name are on volumes: the one-shot jobs that write volumes (the certs job,
// iotpipe ca setup) run first, for real, with each volume a temporary
// folder, and every service's paths inside a volume point there, so this
// also checks that the certs job makes every file the bridge and the
// simulator read.
func TestStagesAcceptComposeSettings(t *testing.T) {
	p := load(t)
	vols := t.TempDir()
	names := make([]string, 0, len(p.Services))
	for name := range p.Services {
		names = append(names, name)
	}
	// Writers of volumes first (a job whose volumes are not read-only).
	sort.Slice(names, func(i, j int) bool {
		wi, wj := writesVolume(p.Services[names[i]]), writesVolume(p.Services[names[j]])
		if wi != wj {
			return wi
		}
		return names[i] < names[j]
	})
	for _, name := range names {
		s := p.Services[name]
		args := iotpipeArgs(s)
		if args == nil {
			continue
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = secretOnHost(t, p, s, vols, onHost(s, vols, *v))
			}
		}
		args = append([]string{}, args...)
		for i, a := range args {
			args[i] = onHost(s, vols, a)
		}
		if writesVolume(s) {
			for _, v := range s.Volumes {
				if v.Type == types.VolumeTypeVolume {
					if err := os.MkdirAll(filepath.Join(vols, v.Source), 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			code, _, errOut := iotpipe(t, env, args...)
			if code != 0 {
				t.Fatalf("job %s: iotpipe %s: exit %d: %s", name, strings.Join(args, " "), code, errOut)
			}
		}
		code, _, errOut := iotpipe(t, env, append(args, "--check-config")...)
		if code != 0 {
			t.Errorf("service %s: iotpipe %s --check-config: exit %d: %s", name, strings.Join(args, " "), code, errOut)
		}
	}
}

// writesVolume reports whether a service mounts a named volume read-write
// and runs once (a job such as certs).
func writesVolume(s types.ServiceConfig) bool {
	if s.Restart != "no" {
		return false
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && !v.ReadOnly {
			return true
		}
	}
	return false
}

// onHost rewrites a path inside one of the service's named volumes to the
// volume's folder under vols.
// secretOnHost maps a Docker secret's path in a container
// (/run/secrets/<name>) to its file on the host (the top-level secrets:
// entry), after checking that the service is given that secret. Paths of
// the service's volumes inside the secret (a DSN's sslrootcert) are mapped
// too, into a copy.
func secretOnHost(t *testing.T, p *types.Project, s types.ServiceConfig, vols, v string) string {
	name, ok := strings.CutPrefix(v, "/run/secrets/")
	if !ok {
		return v
	}
	given := false
	for _, sec := range s.Secrets {
		given = given || sec.Source == name
	}
	sc, declared := p.Secrets[name]
	if !given || !declared || sc.File == "" {
		t.Errorf("service %s reads %s, but is not given that secret (or it has no file)", s.Name, v)
		return v
	}
	b, err := os.ReadFile(sc.File)
	if err != nil {
		t.Fatalf("secret %s: %v", name, err)
	}
	mapped := string(b)
	for _, m := range s.Volumes {
		if m.Type == types.VolumeTypeVolume {
			mapped = strings.ReplaceAll(mapped, m.Target+"/", filepath.Join(vols, m.Source)+"/")
		}
	}
	if mapped == string(b) {
		return sc.File
	}
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(mapped), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func onHost(s types.ServiceConfig, vols, v string) string {
	for _, m := range s.Volumes {
		if m.Type != types.VolumeTypeVolume {
			continue
		}
		if v == m.Target || strings.HasPrefix(v, m.Target+"/") {
			return filepath.Join(vols, m.Source) + strings.TrimPrefix(v, m.Target)
		}
	}
	return v
}

func TestHealthchecks(t *testing.T) {
	p := load(t)
	jobs := map[string]bool{}
	for _, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully {
				jobs[dep] = true
			}
		}
	}
	for name, s := range p.Services {
		if jobs[name] {
			if s.Restart != "no" {
				t.Errorf("one-shot job %s must not restart (restart: %q)", name, s.Restart)
			}
			continue
		}
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
}

func TestDependsOnHasNoCycle(t *testing.T) {
	p := load(t)
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(string)
	visit = func(n string) {
		switch state[n] {
		case visiting:
			t.Fatalf("depends_on cycle: %s -> %s", strings.Join(path, " -> "), n)
		case done:
			return
		}
		state[n] = visiting
		path = append(path, n)
		s, ok := p.Services[n]
		if !ok {
			t.Fatalf("depends_on names unknown service %s", n)
		}
		deps := make([]string, 0, len(s.DependsOn))
		for d := range s.DependsOn {
			deps = append(deps, d)
		}
		sort.Strings(deps)
		for _, d := range deps {
			visit(d)
		}
		path = path[:len(path)-1]
		state[n] = done
	}
	for n := range p.Services {
		visit(n)
	}
}

var withDefault = regexp.MustCompile(`\$\{[A-Z0-9_]+:-[^}]*\}`)

// TestNoPasswordsBakedIn checks that every development password in the
// file is the default of a variable, so operators can set their own.
func TestNoPasswordsBakedIn(t *testing.T) {
	load(t)
	raw := readFile(t, filepath.Join(repoRoot(t), "docker-compose.yml"))
	for _, line := range strings.Split(raw, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "#") {
			continue
		}
		rest := withDefault.ReplaceAllString(l, "")
		for _, secret := range []string{"iotpipe-dev", "sink-dev", "grafana-dev", "device-dev"} {
			if strings.Contains(rest, secret) {
				t.Errorf("password %q not taken from a variable: %s", secret, l)
			}
		}
	}
}
