package main

import (
	"context"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// loadCompose loads docker-compose.yml as `docker compose up` does on a
// clean machine (defaults only, every profile).
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
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
	return p
}

// secretName matches variable names that carry a secret value.
var secretName = regexp.MustCompile(`(?i)PASSWORD|SECRET|_DSN$|TOKEN`)

// TestComposeSecurity checks the security setup of docker-compose.yml
// (issue 15, PostgreSQL and S3 parts): secrets come as top-level
// `secrets:` files and no password is under `environment:`; TimescaleDB
// serves TLS only with its certificate from the certs volume and pg_hba
// hostssl only; every DSN is verify-full against the stack's CA; S3 is
// https with a CA file, and the lake sink uses its own key, not the root
// key.
func TestComposeSecurity(t *testing.T) {
	p := loadCompose(t)
	if len(p.Secrets) == 0 {
		t.Fatal("docker-compose.yml has no top-level secrets:")
	}
	secretFile := map[string]string{}
	for name, sc := range p.Secrets {
		if sc.File == "" {
			t.Errorf("secret %s is not a file", name)
			continue
		}
		b, err := os.ReadFile(sc.File)
		if err != nil {
			t.Errorf("secret %s: %v", name, err)
			continue
		}
		secretFile[name] = strings.TrimSuffix(string(b), "\n")
	}
	// No password under environment: no variable named like a secret
	// unless it names a file, and no value that holds one of the secrets or
	// a URL with a password.
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		for k, v := range s.Environment {
			if v == nil {
				continue
			}
			if secretName.MatchString(k) && !strings.HasSuffix(k, "_FILE") {
				t.Errorf("service %s: %s=%q is a secret under environment: (use a secrets: file and %s_FILE)", name, k, *v, k)
			}
			if u, err := url.Parse(*v); err == nil && u.User != nil {
				if _, ok := u.User.Password(); ok {
					t.Errorf("service %s: %s holds a URL with a password", name, k)
				}
			}
			for sn, sv := range secretFile {
				if *v == sv || strings.Contains(*v, ":"+sv+"@") || strings.Contains(*v, "="+sv) {
					t.Errorf("service %s: %s holds the value of secret %s", name, k, sn)
				}
			}
			if strings.HasSuffix(k, "_FILE") && strings.HasPrefix(*v, "/run/secrets/") {
				src := strings.TrimPrefix(*v, "/run/secrets/")
				if !slices.ContainsFunc(s.Secrets, func(ss types.ServiceSecretConfig) bool { return ss.Source == src }) {
					t.Errorf("service %s: %s=%s but the service is not given the secret %s", name, k, *v, src)
				}
			}
		}
	}
	mountsCerts := func(service string) {
		t.Helper()
		s := p.Services[service]
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == "volume" && v.Source == "certs" && v.Target == "/certs"
		}) {
			t.Errorf("service %s does not mount the certs volume at /certs", service)
		}
	}
	env := func(service, k string) string {
		t.Helper()
		v := p.Services[service].Environment[k]
		if v == nil {
			t.Errorf("service %s does not set %s", service, k)
			return ""
		}
		return *v
	}

	// PostgreSQL: TLS on, certificate from the certs volume, hostssl only.
	db := p.Services["timescaledb"]
	mountsCerts("timescaledb")
	cmd := strings.Join(db.Command, " ")
	for _, want := range []string{"ssl=on", "ssl_cert_file=", "ssl_key_file=", "hba_file=/iotpipe/pg_hba.conf"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("timescaledb command %q lacks %s", cmd, want)
		}
	}
	hba, err := os.ReadFile(filepath.Join("..", "..", "deploy", "timescaledb", "pg_hba.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var hostssl, reject bool
	for _, l := range strings.Split(string(hba), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch {
		case f[0] == "host":
			t.Errorf("pg_hba.conf has a host line (plaintext or TLS): %q", l)
		case f[0] == "hostssl" && f[len(f)-1] == "scram-sha-256":
			hostssl = true
		case f[0] == "hostnossl" && f[len(f)-1] == "reject":
			reject = true
		case f[0] == "hostssl" || f[0] == "hostnossl" || f[0] == "hostgssenc" || f[0] == "hostnogssenc":
			t.Errorf("pg_hba.conf line %q", l)
		}
	}
	if !hostssl || !reject {
		t.Errorf("pg_hba.conf: want hostssl ... scram-sha-256 and hostnossl ... reject, got:\n%s", hba)
	}
	// Every DSN (in its secret file) is verify-full against the CA on the
	// certs volume.
	for _, c := range []struct{ service, variable string }{{"init", "IOTPIPE_PG_DSN_FILE"}, {"sink-timescale", "IOTPIPE_PG_WRITER_DSN_FILE"},
		{"alert", "IOTPIPE_PG_READER_DSN_FILE"}, {"notify", "IOTPIPE_PG_WRITER_DSN_FILE"}} {
		mountsCerts(c.service)
		src := strings.TrimPrefix(env(c.service, c.variable), "/run/secrets/")
		u, err := url.Parse(secretFile[src])
		if err != nil {
			t.Errorf("%s: secret %s is not a URL", c.service, src)
			continue
		}
		if q := u.Query(); q.Get("sslmode") != "verify-full" || q.Get("sslrootcert") != "/certs/ca.crt" {
			t.Errorf("%s: the DSN in secret %s has sslmode=%q sslrootcert=%q, want verify-full and /certs/ca.crt", c.service, src, q.Get("sslmode"), q.Get("sslrootcert"))
		}
	}
	// Grafana: verify-full with the CA too.
	mountsCerts("grafana")
	ds, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "provisioning", "datasources", "iotpipe.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var dsDoc struct {
		Datasources []struct {
			Type           string            `yaml:"type"`
			JSONData       map[string]any    `yaml:"jsonData"`
			SecureJSONData map[string]string `yaml:"secureJsonData"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(ds, &dsDoc); err != nil {
		t.Fatal(err)
	}
	for _, d := range dsDoc.Datasources {
		if d.Type != "grafana-postgresql-datasource" {
			continue
		}
		if d.JSONData["sslmode"] != "verify-full" || d.JSONData["sslRootCertFile"] != "${IOTPIPE_GRAFANA_DB_CA_FILE}" {
			t.Errorf("Grafana's datasource: sslmode %v, sslRootCertFile %v", d.JSONData["sslmode"], d.JSONData["sslRootCertFile"])
		}
		if !strings.HasPrefix(d.SecureJSONData["password"], "$__file{/run/secrets/") {
			t.Errorf("Grafana's datasource password is not read from a secret file: %q", d.SecureJSONData["password"])
		}
	}
	if env("grafana", "IOTPIPE_GRAFANA_DB_CA_FILE") != "/certs/ca.crt" {
		t.Errorf("grafana: IOTPIPE_GRAFANA_DB_CA_FILE is not /certs/ca.crt")
	}

	// S3: https with the server certificate from the certs volume; the
	// clients check it against the CA; the lake sink has its own key.
	mountsCerts("s3")
	s3cmd := strings.Join(p.Services["s3"].Command, " ")
	for _, want := range []string{"--cert /certs/server/server.crt", "--key /certs/server/server.key", "--iam-dir"} {
		if !strings.Contains(s3cmd, want) {
			t.Errorf("s3 command %q lacks %s", s3cmd, want)
		}
	}
	for _, svc := range []string{"init", "sink-lake"} {
		mountsCerts(svc)
		if e := env(svc, "IOTPIPE_S3_ENDPOINT"); !strings.HasPrefix(e, "https://") {
			t.Errorf("%s: IOTPIPE_S3_ENDPOINT=%s is not https", svc, e)
		}
		if env(svc, "IOTPIPE_S3_CA_FILE") != "/certs/ca.crt" {
			t.Errorf("%s: IOTPIPE_S3_CA_FILE is not /certs/ca.crt", svc)
		}
	}
	root := env("s3", "ROOT_ACCESS_KEY")
	if lakeKey := env("sink-lake", "IOTPIPE_S3_ACCESS_KEY"); lakeKey == root || lakeKey == "" {
		t.Errorf("sink-lake uses the root key %q", lakeKey)
	}
	if env("init", "IOTPIPE_S3_BUCKET_OWNER") != env("sink-lake", "IOTPIPE_S3_ACCESS_KEY") {
		t.Errorf("init does not hand the bucket to the lake sink's key")
	}
	if env("init", "IOTPIPE_S3_ADMIN_ACCESS_KEY") != root {
		t.Errorf("init does not use the root key for setup")
	}
	for name, s := range p.Services {
		if name == "init" || name == "s3" {
			continue
		}
		if slices.ContainsFunc(s.Secrets, func(ss types.ServiceSecretConfig) bool { return ss.Source == "s3_root_secret_key" }) {
			t.Errorf("service %s is given the S3 root secret (only init and s3 may have it)", name)
		}
	}
}

// TestSettingsEqualTheDemo checks that the docker-compose.yml stages run
// with the settings `make demo` gives them (window, lateness, lake file
// age, fleet), so the compose stack and the demo behave alike.
func TestSettingsEqualTheDemo(t *testing.T) {
	p := loadCompose(t)
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
