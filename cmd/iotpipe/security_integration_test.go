//go:build integration

package main

// TLS to PostgreSQL and S3, and secrets from files, on the real services
// (scripts/services.sh: PostgreSQL with pg_hba hostssl only, versitygw
// over TLS, every DSN verify-full against the local CA).

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// withDSN returns dsn with its query parameter key set to value (value ""
// removes it).
func withDSN(t *testing.T, dsn string, edit func(u *url.URL, q url.Values)) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DSN does not parse: %v", err)
	}
	q := u.Query()
	edit(u, q)
	u.RawQuery = q.Encode()
	return u.String()
}

// otherCA writes the certificate of a CA that signed nothing the services
// use, and returns its path.
func otherCA(t *testing.T) string {
	t.Helper()
	ca, err := certs.New("not the services' CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.crt")
	if err := os.WriteFile(p, certs.EncodeCert(ca.Cert.Raw), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// forward listens on 127.0.0.2 (an address the server's certificate does
// not name) and forwards every connection to target.
func forward(t *testing.T, target string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.2: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(s, c); s.Close() }()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
	return l.Addr().String()
}

func dsnPassword(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	if pw == "" {
		t.Fatalf("the DSN has no password to look for")
	}
	return pw
}

// TestPostgresPlaintextRefused: a client that does not use TLS is refused
// by the server's pg_hba (hostssl only), with the right password.
func TestPostgresPlaintextRefused(t *testing.T) {
	env := testenv.Load(t)
	dsn := withDSN(t, env.PGDSN, func(_ *url.URL, q url.Values) { q.Set("sslmode", "disable"); q.Del("sslrootcert") })
	_, err := pgx.Connect(testenv.Context(t, 10*time.Second), dsn)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" {
		t.Fatalf("plaintext connection: want pg_hba rejection (SQLSTATE 28000), got %v", err)
	}
	if !strings.Contains(pe.Message, "no encryption") {
		t.Errorf("rejection %q does not say the connection was not encrypted", pe.Message)
	}
	// And the same DSN over TLS works.
	c, err := pgx.Connect(testenv.Context(t, 10*time.Second), env.PGDSN)
	if err != nil {
		t.Fatalf("verify-full connection: %v", err)
	}
	var ssl bool
	if err := c.QueryRow(testenv.Context(t, 10*time.Second), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("connection not over TLS: ssl=%v err=%v", ssl, err)
	}
	c.Close(context.Background())
}

// TestSinkTimescaleTLSErrorsNameTheSetting: verify-full against a server
// whose certificate does not hold the DSN's host, or with a CA that did not
// sign it, or plaintext: the stage stops at once (exit 2) with one line
// naming --pg-writer-dsn and its variable, and never shows the password.
func TestSinkTimescaleTLSErrorsNameTheSetting(t *testing.T) {
	env := testenv.Load(t)
	pw := dsnPassword(t, env.PGWriterDSN)
	u, _ := url.Parse(env.PGWriterDSN)
	proxy := forward(t, u.Host)
	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"wrong server name", withDSN(t, env.PGWriterDSN, func(u *url.URL, _ url.Values) { u.Host = proxy }), "does not hold the DSN's host name"},
		{"unknown CA", withDSN(t, env.PGWriterDSN, func(_ *url.URL, q url.Values) { q.Set("sslrootcert", otherCA(t)) }), "not signed by a CA in the DSN's sslrootcert"},
		{"plaintext", withDSN(t, env.PGWriterDSN, func(_ *url.URL, q url.Values) { q.Set("sslmode", "disable"); q.Del("sslrootcert") }), "pg_hba"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{
				"IOTPIPE_KAFKA_BROKERS": strings.Join(env.KafkaBrokers, ","), "IOTPIPE_HTTP_ADDR": "127.0.0.1:0",
				"IOTPIPE_PG_WRITER_DSN": tc.dsn, "IOTPIPE_PG_SCHEMA": "iotpipe",
			}
			var out, errOut bytes.Buffer
			start := time.Now()
			code := Run(testenv.Context(t, time.Minute), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }}, []string{"sink", "timescale"})
			lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
			last := lines[len(lines)-1]
			t.Logf("exit %d after %s: %s", code, time.Since(start).Round(time.Millisecond), last)
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, ExitUsage, errOut.String())
			}
			for _, want := range []string{"--pg-writer-dsn (IOTPIPE_PG_WRITER_DSN)", tc.want} {
				if !strings.Contains(last, want) {
					t.Errorf("last line lacks %q: %s", want, last)
				}
			}
			if strings.Contains(errOut.String()+out.String(), pw) {
				t.Errorf("the output shows the password:\n%s", errOut.String())
			}
		})
	}
}

// TestS3UnknownCA: an https endpoint checked against a CA that did not sign
// its certificate stops the lake sink and init at once, naming
// --s3-ca-file; without any CA file (system roots) too.
func TestS3UnknownCA(t *testing.T) {
	env := testenv.Load(t)
	bucket := env.Bucket(t)
	for _, ca := range []string{otherCA(t), ""} {
		vars := map[string]string{
			"IOTPIPE_KAFKA_BROKERS": strings.Join(env.KafkaBrokers, ","), "IOTPIPE_HTTP_ADDR": "127.0.0.1:0",
			"IOTPIPE_S3_ENDPOINT": env.S3Config.Endpoint, "IOTPIPE_S3_ACCESS_KEY": env.S3Config.AccessKey,
			"IOTPIPE_S3_SECRET_KEY": env.S3Config.SecretKey, "IOTPIPE_S3_REGION": env.S3Config.Region,
			"IOTPIPE_S3_BUCKET": bucket, "IOTPIPE_S3_CA_FILE": ca,
			"IOTPIPE_TOPIC_READINGS": env.Topic(t, 1, nil), "IOTPIPE_TOPIC_METRICS": "-", "IOTPIPE_GROUP": env.Group(t),
		}
		var out, errOut bytes.Buffer
		code := Run(testenv.Context(t, time.Minute), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }}, []string{"sink", "lake"})
		lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
		last := lines[len(lines)-1]
		t.Logf("sink lake, CA file %q: exit %d: %s", ca, code, last)
		if code != ExitUsage || !strings.Contains(last, "--s3-ca-file (IOTPIPE_S3_CA_FILE)") || !strings.Contains(last, "not signed by a CA") {
			t.Errorf("sink lake with CA file %q: exit %d, want %d naming --s3-ca-file; stderr:\n%s", ca, code, ExitUsage, errOut.String())
		}
		if strings.Contains(errOut.String(), env.S3Config.SecretKey) {
			t.Errorf("the output shows the secret key")
		}

		ivars, _, _, _ := initEnv(t, env)
		ivars["IOTPIPE_SKIP"] = "kafka,postgres"
		ivars["IOTPIPE_S3_CA_FILE"] = ca
		code, _, errText := runInitWith(t, ivars)
		if code != ExitFailed || !strings.Contains(errText, "--s3-ca-file (IOTPIPE_S3_CA_FILE)") {
			t.Errorf("init with CA file %q: exit %d, want %d naming --s3-ca-file; stderr:\n%s", ca, code, ExitFailed, errText)
		}
	}
}

// TestStagesWithSecretsFromFiles runs init, sink timescale and sink lake
// with every secret read from a file (*_FILE variables and --*-file flags,
// one trailing newline as editors write it) and none in a variable or
// flag: init prepares everything, both sinks become ready.
func TestStagesWithSecretsFromFiles(t *testing.T) {
	env := testenv.Load(t)
	dir := t.TempDir()
	file := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vars, _, bucket, schema := initEnv(t, env)
	pgDSN, adminSecret := vars["IOTPIPE_PG_DSN"], vars["IOTPIPE_S3_ADMIN_SECRET_KEY"]
	delete(vars, "IOTPIPE_PG_DSN")
	delete(vars, "IOTPIPE_S3_SECRET_KEY")
	delete(vars, "IOTPIPE_S3_ADMIN_SECRET_KEY")
	vars["IOTPIPE_PG_DSN_FILE"] = file("pg-dsn", pgDSN)
	vars["IOTPIPE_S3_SECRET_KEY_FILE"] = file("s3-secret", env.S3Config.SecretKey)
	code, out, errText := runInitWith(t, vars, "--s3-admin-secret-key-file", file("s3-admin-secret", adminSecret))
	if code != ExitOK {
		t.Fatalf("init with secrets from files: exit %d: %s", code, errText)
	}
	if !strings.Contains(out, "owner set to "+env.S3BucketOwner) && !strings.Contains(out, "owned by "+env.S3BucketOwner) {
		t.Errorf("init did not hand the bucket to %s:\n%s", env.S3BucketOwner, out)
	}
	for _, s := range []string{pgDSN, adminSecret, env.S3Config.SecretKey, dsnPassword(t, pgDSN)} {
		if strings.Contains(out+errText, s) {
			t.Errorf("init output shows a secret")
		}
	}

	base := []string{"IOTPIPE_PG_SCHEMA=" + schema, "IOTPIPE_S3_BUCKET=" + bucket,
		"IOTPIPE_TOPIC_METRICS=" + env.Topic(t, 1, nil), "IOTPIPE_TOPIC_DLQ=" + env.Topic(t, 1, nil), "IOTPIPE_TOPIC_READINGS=" + env.Topic(t, 1, nil)}
	ts := startStage(t, append(append(kafkaEnv(t, env, testenv.SinkTimescale), base...), "IOTPIPE_PG_WRITER_DSN_FILE="+file("writer-dsn", env.PGWriterDSN), "IOTPIPE_GROUP="+env.Group(t)),
		"sink", "timescale")
	lk := startStage(t, append(append(kafkaEnv(t, env, testenv.SinkLake), base...), "IOTPIPE_S3_ENDPOINT="+env.S3Config.Endpoint, "IOTPIPE_S3_REGION="+env.S3Config.Region,
		"IOTPIPE_S3_CA_FILE="+env.S3Config.CAFile, "IOTPIPE_S3_ACCESS_KEY="+env.S3Config.AccessKey, "IOTPIPE_GROUP="+env.Group(t)),
		"sink", "lake", "--s3-secret-key-file", file("lake-secret", env.S3Config.SecretKey))
	for _, p := range []*stageProc{ts, lk} {
		addr := p.addr(t)
		testenv.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return errors.New(resp.Status + ": " + string(body))
			}
			return nil
		})
		t.Logf("%s is ready with its secrets from files", p.name)
		if strings.Contains(p.logText(), env.S3Config.SecretKey) || strings.Contains(p.logText(), dsnPassword(t, env.PGWriterDSN)) {
			t.Errorf("%s logs a secret", p.name)
		}
	}
}

// TestCheckConfigShowsNoSecret: --check-config and --help of the stages
// print no secret (the DSN's password, the S3 secret key).
func TestCheckConfigShowsNoSecret(t *testing.T) {
	env := testenv.Load(t)
	vars := map[string]string{}
	for _, kv := range env.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	secrets := []string{dsnPassword(t, env.PGWriterDSN), dsnPassword(t, env.PGDSN), env.S3Config.SecretKey, env.S3Admin.SecretKey}
	for _, args := range [][]string{
		{"sink", "timescale", "--check-config"}, {"sink", "lake", "--check-config"}, {"init", "--check-config"},
		{"sink", "timescale", "--help"}, {"init", "--help"},
	} {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }}, args)
		if code != ExitOK {
			t.Errorf("%v: exit %d: %s", args, code, errOut.String())
		}
		for _, s := range secrets {
			if strings.Contains(out.String()+errOut.String(), s) {
				t.Errorf("%v prints a secret:\n%s", args, out.String())
			}
		}
	}
}
