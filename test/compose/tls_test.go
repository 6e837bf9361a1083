package compose

// Mutual TLS in the compose stack: the broker's TLS listener, the ACL that
// binds topics to certificates, the certificate volumes, and no key or
// certificate in any image.

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// confListeners parses a mosquitto.conf into the settings of each listener
// (by its "listener" line) and the global ones (key "").
func confListeners(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{"": {}}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, _ := strings.Cut(l, " ")
		v = strings.TrimSpace(v)
		if k == "listener" {
			cur = v
			out[cur] = map[string][]string{}
			continue
		}
		scope := ""
		if listenerKeys[k] {
			scope = cur
		}
		out[scope][k] = append(out[scope][k], v)
	}
	return out
}

// listenerKeys are the settings of one listener (the others are global with
// per_listener_settings false).
var listenerKeys = map[string]bool{"cafile": true, "capath": true, "certfile": true, "keyfile": true, "crlfile": true,
	"require_certificate": true, "use_identity_as_username": true, "use_subject_as_username": true, "tls_version": true,
	"ciphers": true, "ciphers_tls1.3": true, "protocol": true, "socket_domain": true, "bind_interface": true,
	"mount_point": true, "max_connections": true, "psk_hint": true, "http_dir": true}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yml has no service %s", name)
	}
	return s
}

// mountOf returns the service's mount with that target.
func mountOf(s types.ServiceConfig, target string) (types.ServiceVolumeConfig, bool) {
	for _, v := range s.Volumes {
		if v.Target == target {
			return v, true
		}
	}
	return types.ServiceVolumeConfig{}, false
}

func TestMosquittoHasOnlyTheMutualTLSListener(t *testing.T) {
	root := repoRoot(t)
	conf := confListeners(t, filepath.Join(root, "deploy", "mosquitto", "mosquitto.conf"))
	if len(conf) != 2 {
		t.Fatalf("mosquitto.conf: listeners %v, want exactly one (8883, TLS): plaintext only through MQTT_PLAINTEXT=1", keys(conf))
	}
	l, ok := conf["8883"]
	if !ok {
		t.Fatalf("mosquitto.conf has no listener 8883: %v", keys(conf))
	}
	for k, want := range map[string]string{"require_certificate": "true", "use_identity_as_username": "true",
		"cafile": "/certs/ca.crt", "crlfile": "/certs/crl.pem", "tls_version": "tlsv1.2"} {
		if got := l[k]; len(got) != 1 || got[0] != want {
			t.Errorf("listener 8883: %s = %v, want %s", k, got, want)
		}
	}
	for _, k := range []string{"certfile", "keyfile"} {
		if len(l[k]) != 1 {
			t.Errorf("listener 8883 has no %s", k)
		}
	}
	g := conf[""]
	if got := g["allow_anonymous"]; len(got) != 1 || got[0] != "false" {
		t.Errorf("allow_anonymous = %v, want false", got)
	}
	if got := g["per_listener_settings"]; len(got) != 1 || got[0] != "false" {
		t.Errorf("per_listener_settings = %v, want false (one ACL for every listener)", got)
	}
	if got := g["acl_file"]; len(got) != 1 {
		t.Errorf("acl_file = %v, want one", got)
	}
	// The entrypoint builds that ACL from the mounted acl file; the
	// password users and the plaintext listener only with MQTT_PLAINTEXT=1,
	// which is off by default.
	entry := readFile(t, filepath.Join(root, "deploy", "mosquitto", "entrypoint.sh"))
	if len(g["acl_file"]) == 1 && (g["acl_file"][0] != "/mosquitto/data/acl" || !strings.Contains(entry, `cp /mosquitto/config/acl "$d/acl"`)) {
		t.Errorf("acl_file %s is not the copy entrypoint.sh makes of /mosquitto/config/acl", g["acl_file"][0])
	}
	p := load(t)
	m := service(t, p, "mosquitto")
	if v := m.Environment["MQTT_PLAINTEXT"]; v == nil || *v != "0" {
		t.Errorf("mosquitto: MQTT_PLAINTEXT = %v, want 0 by default", v)
	}
	if v, ok := mountOf(m, "/mosquitto/config/acl"); !ok || v.Source != filepath.Join(root, "deploy", "mosquitto", "acl") {
		t.Errorf("mosquitto does not mount deploy/mosquitto/acl at /mosquitto/config/acl: %+v", v)
	}
	published := false
	for _, port := range m.Ports {
		published = published || port.Target == 8883
	}
	if !published {
		t.Error("mosquitto does not publish 8883")
	}
}

func TestACLBindsTopicsToCertificates(t *testing.T) {
	acl := readFile(t, filepath.Join(repoRoot(t), "deploy", "mosquitto", "acl"))
	users := map[string][]string{}
	var patterns []string
	user := ""
	for _, line := range strings.Split(acl, "\n") {
		l := strings.Join(strings.Fields(line), " ")
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "user "):
			user = strings.TrimPrefix(l, "user ")
		case strings.HasPrefix(l, "topic "):
			if user == "" {
				t.Errorf("acl: %q applies to every anonymous client", l)
			}
			users[user] = append(users[user], strings.TrimPrefix(l, "topic "))
		case strings.HasPrefix(l, "pattern "):
			patterns = append(patterns, strings.TrimPrefix(l, "pattern "))
		default:
			t.Errorf("acl: unexpected line %q", l)
		}
	}
	want := []string{"write devices/%u/telemetry", "write devices/%u/shadow/update", "write devices/%u/shadow/get",
		"read devices/%u/config", "read devices/%u/shadow/#"}
	if !slices.Equal(patterns, want) {
		t.Errorf("acl patterns %q, want %q: a device writes only devices/<its CN>/... and reads only its config and shadow", patterns, want)
	}
	for _, pt := range patterns {
		if _, topic, _ := strings.Cut(pt, " "); !strings.HasPrefix(topic, "devices/%u/") {
			t.Errorf("pattern %q is not bound to the certificate (devices/%%u/...)", pt)
		}
	}
	if got := users["iotpipe-bridge"]; !slices.Contains(got, "read devices/#") {
		t.Errorf("the bridge's identity iotpipe-bridge: %q, want read devices/#", got)
	}
	// Towards devices only the API's relay writes, and only the topics a
	// device reads: its configuration and its shadow answers.
	apiWrites := []string{"write devices/+/config", "write devices/+/shadow/update/delta", "write devices/+/shadow/update/accepted",
		"write devices/+/shadow/update/rejected", "write devices/+/shadow/get/accepted"}
	for u, rules := range users {
		for _, r := range rules {
			if !strings.HasPrefix(r, "read ") && !(u == "iotpipe-api" && slices.Contains(apiWrites, r)) {
				t.Errorf("acl: user %s may %q: only devices write telemetry, each on its own topics, and the API's relay their configuration and shadow answers", u, r)
			}
		}
	}
	if got := keys(users); !slices.Equal(got, []string{"iotpipe-api", "iotpipe-bridge"}) {
		t.Errorf("acl: users %v, want iotpipe-api and iotpipe-bridge (password users live in acl-passwords, used with MQTT_PLAINTEXT=1)", got)
	}
}

func TestCertificateVolume(t *testing.T) {
	p := load(t)
	job := service(t, p, "certs")
	if len(job.Command) < 2 || job.Command[0] != "ca" || job.Command[1] != "setup" {
		t.Fatalf("certs job runs %q, want iotpipe ca setup", job.Command)
	}
	arg := func(flag string) string {
		i := slices.Index([]string(job.Command), flag)
		if i < 0 || i+1 >= len(job.Command) {
			t.Fatalf("certs job: no %s", flag)
		}
		return job.Command[i+1]
	}
	caDir, out := arg("--ca-dir"), arg("--out")
	caMount, ok1 := mountOf(job, caDir)
	certsMount, ok2 := mountOf(job, out)
	if !ok1 || !ok2 || caMount.Type != types.VolumeTypeVolume || certsMount.Type != types.VolumeTypeVolume || certsMount.ReadOnly {
		t.Fatalf("certs job: --ca-dir %s and --out %s must be named volumes, --out writable", caDir, out)
	}
	if _, ok := p.Volumes[caMount.Source]; !ok {
		t.Errorf("volume %s is not declared", caMount.Source)
	}
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Source == caMount.Source && name != "certs" {
				t.Errorf("service %s mounts the CA volume %s (its key): only the certs job may", name, v.Source)
			}
		}
	}
	// Broker, bridge and simulator mount the certificates read-only, wait
	// for the job, and use them.
	for _, name := range []string{"mosquitto", "bridge", "simulator"} {
		s := service(t, p, name)
		v, ok := mountOf(s, "/certs")
		if !ok || v.Source != certsMount.Source || v.Type != types.VolumeTypeVolume || !v.ReadOnly {
			t.Errorf("service %s does not mount volume %s read-only at /certs: %+v", name, certsMount.Source, v)
		}
		if !dependsOnJob(p, name, "certs") {
			t.Errorf("service %s does not wait for the certs job", name)
		}
	}
	env := func(s, k string) string {
		v := service(t, p, s).Environment[k]
		if v == nil {
			t.Errorf("service %s: %s not set", s, k)
			return ""
		}
		return *v
	}
	for _, s := range []string{"bridge", "simulator"} {
		if u := env(s, "IOTPIPE_MQTT_URL"); !strings.HasPrefix(u, "mqtts://mosquitto:8883") {
			t.Errorf("service %s: IOTPIPE_MQTT_URL %q, want mqtts://mosquitto:8883", s, u)
		}
		if env(s, "IOTPIPE_MQTT_CA_FILE") != "/certs/ca.crt" {
			t.Errorf("service %s: IOTPIPE_MQTT_CA_FILE is not the certs volume's ca.crt", s)
		}
		for k := range service(t, p, s).Environment {
			if strings.HasPrefix(k, "IOTPIPE_MQTT_") && (strings.Contains(k, "PASSWORD") || strings.Contains(k, "USERNAME")) {
				t.Errorf("service %s sets %s: its MQTT identity is its certificate", s, k)
			}
		}
	}
	if !strings.HasPrefix(env("bridge", "IOTPIPE_MQTT_CERT_FILE"), "/certs/") || !strings.HasPrefix(env("bridge", "IOTPIPE_MQTT_KEY_FILE"), "/certs/") {
		t.Error("the bridge's certificate and key are not on the certs volume")
	}
	if !strings.HasPrefix(env("simulator", "IOTPIPE_MQTT_CERT_DIR"), "/certs/") || env("simulator", "IOTPIPE_DEVICES_PER_CONN") != "1" {
		t.Error("the simulator does not use one certificate per device from the certs volume")
	}
	if d := arg("--devices"); d != env("simulator", "IOTPIPE_DEVICES") {
		t.Errorf("the certs job issues %s device certificates, the simulator runs %s devices", d, env("simulator", "IOTPIPE_DEVICES"))
	}
	if arg("--device-prefix") != env("simulator", "IOTPIPE_DEVICE_PREFIX") {
		t.Error("the certs job and the simulator use different device prefixes")
	}
}

func dependsOnJob(p *types.Project, name, job string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(n string) bool {
		if seen[n] {
			return false
		}
		seen[n] = true
		for d, c := range p.Services[n].DependsOn {
			if (d == job && c.Condition == types.ServiceConditionCompletedSuccessfully) || walk(d) {
				return true
			}
		}
		return false
	}
	return walk(name)
}

var (
	copyLine   = regexp.MustCompile(`(?i)^\s*(COPY|ADD)\s+(.*)$`)
	secretFile = regexp.MustCompile(`(?i)(\.(key|pem|crt|cer|csr|p12|pfx|der)$|(^|/)\.state(/|$)|(^|/)ca\.key)`)
)

// TestNoKeyBakedIntoAnImage checks every Dockerfile: no COPY or ADD of a
// key or certificate file (or the local state folder), and a build context
// that cannot hold one (.dockerignore).
func TestNoKeyBakedIntoAnImage(t *testing.T) {
	root := repoRoot(t)
	var dockerfiles []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".state" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), "Dockerfile") {
			dockerfiles = append(dockerfiles, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dockerfiles) == 0 {
		t.Fatal("no Dockerfile found")
	}
	for _, df := range dockerfiles {
		for i, line := range strings.Split(readFile(t, df), "\n") {
			m := copyLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			var srcs []string
			for _, f := range strings.Fields(m[2]) {
				if !strings.HasPrefix(f, "--") {
					srcs = append(srcs, f)
				}
			}
			if len(srcs) > 1 {
				srcs = srcs[:len(srcs)-1] // the last one is the destination
			}
			for _, src := range srcs {
				if secretFile.MatchString(strings.Trim(src, `"[],`)) {
					t.Errorf("%s:%d copies %s into an image: keys and certificates come from volumes at run time", df, i+1, src)
				}
			}
		}
	}
	ignore := strings.Fields(readFile(t, filepath.Join(root, ".dockerignore")))
	for _, want := range []string{"**/*.key", "**/*.pem", "**/*.crt", ".state", "**/.state"} {
		if !slices.Contains(ignore, want) {
			t.Errorf(".dockerignore lacks %s: the build stage's COPY . . would take such files into the build", want)
		}
	}
	// The compose file builds from this context only, with no build
	// secrets or arguments carrying a key.
	for name, s := range load(t).Services {
		if s.Build == nil {
			continue
		}
		if len(s.Build.Secrets) > 0 {
			t.Errorf("service %s builds with secrets", name)
		}
		for k, v := range s.Build.Args {
			if v != nil && secretFile.MatchString(*v) {
				t.Errorf("service %s: build argument %s=%s names a key or certificate", name, k, *v)
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
