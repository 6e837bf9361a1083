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
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/kafkax"
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

// TestKafkaWrongPasswordNamesTheSetting: a stage whose SASL password Kafka
// refuses stops at once (exit 2) with one line naming
// --kafka-sasl-password and its variable and the principal, never the
// password; the same settings with the right password run.
func TestKafkaWrongPasswordNamesTheSetting(t *testing.T) {
	env := testenv.Load(t)
	kc := env.KafkaConfig(t, testenv.Processor)
	wrong := "not-" + kc.SASL.Password
	vars := map[string]string{}
	for _, kv := range testenv.KafkaConfigEnv(kc) {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	vars["IOTPIPE_KAFKA_SASL_PASSWORD"] = wrong
	for k, v := range map[string]string{
		"IOTPIPE_HTTP_ADDR": "127.0.0.1:0", "IOTPIPE_GROUP": env.Group(t), "IOTPIPE_INSTANCE_ID": "p0",
		"IOTPIPE_TOPIC_RAW": env.Topic(t, 1, nil), "IOTPIPE_TOPIC_METRICS": env.Topic(t, 1, nil), "IOTPIPE_TOPIC_READINGS": "-",
		"IOTPIPE_TOPIC_DLQ": env.Topic(t, 1, nil), "IOTPIPE_TOPIC_PROCESSOR_CHANGELOG": env.Topic(t, 1, map[string]string{"cleanup.policy": "compact"}),
	} {
		vars[k] = v
	}
	var out, errOut bytes.Buffer
	start := time.Now()
	code := Run(testenv.Context(t, time.Minute), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }}, []string{"processor"})
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	last := lines[len(lines)-1]
	t.Logf("processor with a wrong password: exit %d after %s: %s", code, time.Since(start).Round(time.Millisecond), last)
	if code != ExitUsage {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, ExitUsage, errOut.String())
	}
	for _, want := range []string{"--kafka-sasl-password (IOTPIPE_KAFKA_SASL_PASSWORD)", `principal "` + kc.SASL.Username + `"`, "SASL_AUTHENTICATION_FAILED"} {
		if !strings.Contains(last, want) {
			t.Errorf("last line lacks %q: %s", want, last)
		}
	}
	if strings.Contains(errOut.String()+out.String(), wrong) {
		t.Errorf("the output shows the password:\n%s", errOut.String())
	}
}

// TestKafkaPlaintextRefused: the services' Kafka has no listener a client
// without TLS can use. A Kafka request sent in plaintext to the client
// listener gets no Kafka response (the broker, expecting a TLS
// ClientHello, closes the connection or answers with a TLS alert), so
// franz-go without TLS (with or without SASL and the right password)
// gets no metadata; over TLS without credentials the broker refuses
// every request before authentication.
func TestKafkaPlaintextRefused(t *testing.T) {
	env := testenv.Load(t)
	admin := env.KafkaConfig(t, testenv.Admin)
	if !admin.TLS.Enabled || !admin.SASL.Enabled() {
		t.Fatalf("the services' Kafka is not SASL_SSL (tls %v, principal %q)", admin.TLS.Enabled, admin.SASL.Username)
	}
	t.Run("raw ApiVersions in plaintext", func(t *testing.T) {
		for _, addr := range admin.Brokers {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			// ApiVersions v0, correlation id 7, client id "plain": the first
			// request every Kafka client sends.
			req := []byte{0, 18, 0, 0, 0, 0, 0, 7, 0, 5, 'p', 'l', 'a', 'i', 'n'}
			msg := append([]byte{0, 0, 0, byte(len(req))}, req...)
			if _, err := c.Write(msg); err != nil {
				t.Logf("%s: write refused: %v", addr, err)
				c.Close()
				continue
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := io.ReadAll(io.LimitReader(c, 1<<16))
			c.Close()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: no answer and no close within 10s: the listener waits for more plaintext", addr)
			}
			// A Kafka response starts with its length and then correlation
			// id 7; a TLS alert record starts with 0x15 0x03.
			if len(resp) >= 8 && resp[4] == 0 && resp[5] == 0 && resp[6] == 0 && resp[7] == 7 {
				t.Fatalf("%s answered a plaintext ApiVersions request: % x", addr, resp[:8])
			}
			if len(resp) > 0 && resp[0] != 0x15 {
				t.Fatalf("%s answered a plaintext request with neither a close nor a TLS alert: % x", addr, resp[:min(len(resp), 16)])
			}
			t.Logf("%s: plaintext request: %d bytes back (% x), then closed (%v)", addr, len(resp), resp[:min(len(resp), 7)], err)
		}
	})
	ping := func(t *testing.T, c kafkax.Config) error {
		cl, err := kgo.NewClient(c.Opts(kgo.RetryTimeout(5 * time.Second))...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		_, err = kafkax.Ping(testenv.Context(t, 15*time.Second), kadm.NewClient(cl))
		return err
	}
	for _, tc := range []struct {
		name string
		c    kafkax.Config
	}{
		{"PLAINTEXT", func() kafkax.Config { c := admin; c.TLS, c.SASL = kafkax.TLS{}, kafkax.SASL{}; return c }()},
		{"SASL_PLAINTEXT with the right password", func() kafkax.Config { c := admin; c.TLS = kafkax.TLS{}; return c }()},
		{"SSL without credentials", func() kafkax.Config { c := admin; c.SASL = kafkax.SASL{}; return c }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ping(t, tc.c)
			if err == nil {
				t.Fatal("got the cluster's metadata")
			}
			t.Logf("refused: %v", err)
		})
	}
	// The control: the same client over SASL_SSL gets the metadata.
	if err := ping(t, admin); err != nil {
		t.Fatalf("over SASL_SSL: %v", err)
	}
}
