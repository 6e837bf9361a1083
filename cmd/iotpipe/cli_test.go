package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(context.Background(), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}, args)
	return code, out.String(), errOut.String()
}

func TestHelpListsCommands(t *testing.T) {
	code, out, _ := run(t, nil, "--help")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, c := range commands() {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("help does not list %q:\n%s", c.name, out)
		}
	}
}

func TestNoArgsIsUsageError(t *testing.T) {
	code, _, errOut := run(t, nil)
	if code != ExitUsage || !strings.Contains(errOut, "Usage: iotpipe") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestUnknownCommand(t *testing.T) {
	code, _, errOut := run(t, nil, "frobnicate")
	if code != ExitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, nil, "version")
	if code != ExitOK || !strings.HasPrefix(out, "iotpipe ") || !strings.Contains(out, "go1.") {
		t.Fatalf("exit %d, out %q", code, out)
	}
}

func TestInitHelpShowsFlagsAndEnv(t *testing.T) {
	code, out, _ := run(t, nil, "init", "--help")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--kafka-brokers", "IOTPIPE_KAFKA_BROKERS", "--pg-dsn", "IOTPIPE_PG_DSN", "--s3-bucket", "--raw-partitions", "(default 6)"} {
		if !strings.Contains(out, want) {
			t.Errorf("init --help lacks %q", want)
		}
	}
	if strings.Contains(out, "secret-from-env") {
		t.Error("help printed a secret")
	}
}

func validInitEnv() map[string]string {
	return map[string]string{
		"IOTPIPE_KAFKA_BROKERS": "127.0.0.1:9092",
		"IOTPIPE_PG_DSN":        "postgres://u:p@127.0.0.1:5432/db",
		"IOTPIPE_S3_ACCESS_KEY": "a",
		"IOTPIPE_S3_SECRET_KEY": "secret-from-env",
	}
}

func TestInitCheckConfig(t *testing.T) {
	code, out, errOut := run(t, validInitEnv(), "init", "--check-config")
	if code != ExitOK || !strings.Contains(out, "settings are valid") {
		t.Fatalf("exit %d, out %q, err %q", code, out, errOut)
	}
}

func TestInitBadSettingsNameTheSetting(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"broker without port", map[string]string{"IOTPIPE_KAFKA_BROKERS": "kafka"}, nil, "--kafka-brokers (IOTPIPE_KAFKA_BROKERS): broker \"kafka\" is not host:port"},
		{"flag wins over env", map[string]string{"IOTPIPE_KAFKA_BROKERS": "good:1"}, []string{"--kafka-brokers", "bad"}, `--kafka-brokers (IOTPIPE_KAFKA_BROKERS): broker "bad" is not host:port`},
		{"partitions", nil, []string{"--raw-partitions", "0"}, "--raw-partitions"},
		{"bad duration in env", map[string]string{"IOTPIPE_TIMEOUT": "soon"}, nil, "IOTPIPE_TIMEOUT (--timeout)"},
		{"flavor", nil, []string{"--pg-flavor", "oracle"}, "--pg-flavor"},
		{"dsn", nil, []string{"--pg-dsn", "postgres://h:notaport/db"}, "--pg-dsn (IOTPIPE_PG_DSN)"},
		{"s3 endpoint", nil, []string{"--s3-endpoint", "localhost:7070"}, "--s3-endpoint (IOTPIPE_S3_ENDPOINT)"},
		{"skip", nil, []string{"--skip", "redis"}, "--skip"},
		{"log format", nil, []string{"--log-format", "xml"}, "--log-format"},
		{"unknown flag", nil, []string{"--no-such-flag"}, "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := validInitEnv()
			for k, v := range tc.env {
				env[k] = v
			}
			code, _, errOut := run(t, env, append([]string{"init", "--check-config"}, tc.args...)...)
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, ExitUsage, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Fatalf("stderr %q does not name %q", errOut, tc.want)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("error is not one line: %q", errOut)
			}
			if strings.Contains(errOut, "secret-from-env") || strings.Contains(errOut, ":p@") {
				t.Fatalf("error leaks a secret: %q", errOut)
			}
		})
	}
}

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"ready":false}`))
			return
		}
		_, _ = w.Write([]byte(`{"ready":true}`))
	}))
	defer srv.Close()
	if code, out, errOut := run(t, nil, "healthcheck", "--url", srv.URL+"/readyz"); code != ExitOK || !strings.Contains(out, `"ready":true`) {
		t.Fatalf("ready: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := run(t, nil, "healthcheck", "--url", srv.URL+"/other"); code != ExitFailed || !strings.Contains(errOut, "503") {
		t.Fatalf("not ready: exit %d %q", code, errOut)
	}
	if code, _, errOut := run(t, nil, "healthcheck", "--url", "localhost:1"); code != ExitUsage || !strings.Contains(errOut, "--url") {
		t.Fatalf("bad url: exit %d %q", code, errOut)
	}
}

// A taken metrics port fails the stage before it starts, in one line that
// names --http-addr and says the bind error once.
func TestTakenPortNamesHTTPAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, args := range [][]string{
		{"simulate", "--mqtt-url", "mqtt://127.0.0.1:1"},
		{"processor", "--kafka-brokers", "127.0.0.1:1"},
	} {
		code, _, errOut := run(t, nil, append(args, "--http-addr", ln.Addr().String(), "--log-level", "error")...)
		line := strings.TrimSpace(errOut)
		if code != ExitUsage || strings.Contains(line, "\n") ||
			!strings.HasPrefix(line, "iotpipe "+args[0]+": --http-addr (IOTPIPE_HTTP_ADDR): listen tcp "+ln.Addr().String()) ||
			strings.Count(line, "address already in use") != 1 {
			t.Errorf("%s: exit %d, stderr %q", args[0], code, errOut)
		}
	}
}

// TestSecretFileSettings: every secret setting of the stages and init has
// its --<name>-file companion; the value and the file both set is refused
// (exit 2) naming both, an unreadable file naming the -file setting, and
// neither error shows the secret.
func TestSecretFileSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dsn")
	if err := os.WriteFile(file, []byte("postgres://u:from-file@127.0.0.1:5432/db?sslmode=verify-full\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args   []string
		secret string
	}{
		{[]string{"init"}, "pg-dsn"},
		{[]string{"init"}, "s3-secret-key"},
		{[]string{"init"}, "s3-admin-secret-key"},
		{[]string{"init"}, "s3-bucket-owner-secret-key"},
		{[]string{"sink", "timescale"}, "pg-writer-dsn"},
		{[]string{"sink", "lake"}, "s3-secret-key"},
		{[]string{"bridge"}, "mqtt-password"},
		{[]string{"bridge"}, "registry-dsn"},
		{[]string{"simulate"}, "mqtt-device-password"},
		{[]string{"demo"}, "pg-reader-dsn"},
	} {
		name := strings.Join(c.args, " ") + " --" + c.secret
		env := validInitEnv()
		env[EnvName(c.secret)] = "secret-from-env"
		code, out, errOut := run(t, env, append(append([]string{}, c.args...), "--check-config", "--"+c.secret+"-file", file)...)
		if code != ExitUsage {
			t.Errorf("%s: value and file: exit %d, want %d: %s", name, code, ExitUsage, errOut)
		}
		for _, want := range []string{"--" + c.secret + " (" + EnvName(c.secret) + ")", "--" + c.secret + "-file (" + EnvName(c.secret+"-file") + ")", "both set"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s: error lacks %q: %s", name, want, errOut)
			}
		}
		if strings.Contains(out+errOut, "secret-from-env") || strings.Contains(out+errOut, "from-file") {
			t.Errorf("%s: the output shows a secret: %s", name, errOut)
		}
		delete(env, EnvName(c.secret))
		env[EnvName(c.secret+"-file")] = filepath.Join(dir, "missing")
		code, _, errOut = run(t, env, append(append([]string{}, c.args...), "--check-config")...)
		if code != ExitUsage || !strings.Contains(errOut, "--"+c.secret+"-file ("+EnvName(c.secret+"-file")+")") || !strings.Contains(errOut, "no such file") {
			t.Errorf("%s: missing file: exit %d: %s", name, code, errOut)
		}
	}
}
