package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/proc"
)

// Proc is the iotpipe binary running as a child process of a test (see
// package internal/proc). Its environment is explicit: BaseEnv (PATH,
// HOME, ...) and the variables the test passes, never the test's own
// IOTPIPE_* settings. It is killed (SIGKILL) when the test ends, and when
// the test failed the tail of its log is printed. IOTPIPE_TEST_LOGS=1
// echoes every line to stderr as it arrives.
type Proc struct {
	*proc.Proc
	t testing.TB
}

var procSeq atomic.Int64

// StartProc starts `iotpipe args...` (the binary of Binary) with the
// environment env ("IOTPIPE_X=y"; see Env.Environ for the services'
// variables) on top of proc.BaseEnv. name identifies it in messages.
func StartProc(t testing.TB, name string, env []string, args ...string) *Proc {
	t.Helper()
	return StartProcPath(t, Binary(t), name, env, args...)
}

// StartProcPath is StartProc for another binary.
func StartProcPath(t testing.TB, path, name string, env []string, args ...string) *Proc {
	t.Helper()
	cfg := proc.Config{
		Name:    name,
		Path:    path,
		Args:    args,
		Env:     append(proc.BaseEnv(), env...),
		LogPath: filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d.log", strings.ReplaceAll(name, " ", "-"), procSeq.Add(1))),
	}
	if os.Getenv("IOTPIPE_TEST_LOGS") != "" {
		cfg.Echo = os.Stderr
	}
	p, err := proc.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- last lines of %s:\n%s", p.Describe(), p.Tail(60))
		}
	})
	return &Proc{Proc: p, t: t}
}

// WaitLine waits for the next log line containing s (after the previous
// match) and returns it; the test fails when the process exits first or
// timeout passes.
func (p *Proc) WaitLine(s string, timeout time.Duration) string {
	p.t.Helper()
	l, err := p.Proc.WaitLine(p.t.Context(), s, timeout)
	if err != nil {
		p.t.Fatalf("%v\n--- last lines of %s:\n%s", err, p.Describe(), p.Tail(30))
	}
	return l
}

// Stop sends SIGTERM and returns the exit code; the test fails when the
// process is still running after within (it is then killed).
func (p *Proc) Stop(within time.Duration) int {
	p.t.Helper()
	code, err := p.Proc.Stop(within)
	if err != nil {
		p.t.Fatal(err)
	}
	return code
}

// StopClean sends SIGTERM and fails the test unless the process exits
// with code 0 within the bound.
func (p *Proc) StopClean(within time.Duration) {
	p.t.Helper()
	if code := p.Stop(within); code != 0 {
		p.t.Fatalf("%s exited %d after SIGTERM, want 0\n%s", p.Describe(), code, p.Tail(30))
	}
}

// KillWait sends SIGKILL and fails the test unless the process is gone
// within the bound.
func (p *Proc) KillWait(within time.Duration) {
	p.t.Helper()
	done := make(chan struct{})
	go func() { p.Kill(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		p.t.Fatalf("%s survived SIGKILL for %s", p.Describe(), within)
	}
}

// Environ returns the services' settings as the IOTPIPE_* variables that
// scripts/services.sh prints and the binary reads, for a child process.
//
// Kafka is reached as the admin (a super user, for `iotpipe init`); a
// stage gets its own principal by appending KafkaEnv(t, stage).
func (e *Env) Environ() []string {
	return append([]string{
		"IOTPIPE_MQTT_URL=" + e.MQTTURL,
		"IOTPIPE_MQTT_USERNAME=" + e.MQTTUsername,
		"IOTPIPE_MQTT_PASSWORD=" + e.MQTTPassword,
		"IOTPIPE_MQTT_DEVICE_USERNAME=" + e.MQTTDeviceUsername,
		"IOTPIPE_MQTT_DEVICE_PASSWORD=" + e.MQTTDevicePassword,
		"IOTPIPE_PG_DSN=" + e.PGDSN,
		"IOTPIPE_PG_WRITER_DSN=" + e.PGWriterDSN,
		"IOTPIPE_PG_READER_DSN=" + e.PGReaderDSN,
		"IOTPIPE_PG_ADMIN_DSN=" + e.PGAdminDSN,
		"IOTPIPE_S3_ENDPOINT=" + e.S3Config.Endpoint,
		"IOTPIPE_S3_ACCESS_KEY=" + e.S3Config.AccessKey,
		"IOTPIPE_S3_SECRET_KEY=" + e.S3Config.SecretKey,
		"IOTPIPE_S3_REGION=" + e.S3Config.Region,
		"IOTPIPE_S3_BUCKET=" + e.S3Config.Bucket,
		"IOTPIPE_S3_CA_FILE=" + e.S3Config.CAFile,
		"IOTPIPE_S3_ADMIN_ACCESS_KEY=" + e.adminKey(),
		"IOTPIPE_S3_ADMIN_SECRET_KEY=" + e.adminSecret(),
		"IOTPIPE_S3_BUCKET_OWNER=" + e.S3BucketOwner,
	}, e.adminKafkaEnv()...)
}

// adminKafkaEnv is KafkaEnv(Admin) without a testing.TB (the admin needs
// no setup).
func (e *Env) adminKafkaEnv() []string {
	c := kafkax.DefaultConfig("")
	c.Brokers = e.KafkaBrokers
	c.TLS = kafkax.TLS{Enabled: e.KafkaSec.TLS, CAFile: e.KafkaSec.CAFile}
	if e.KafkaSec.Username != "" {
		c.SASL = kafkax.SASL{Mechanism: e.KafkaSec.Mechanism, Username: e.KafkaSec.Username, Password: e.KafkaSec.Password}
	}
	return KafkaConfigEnv(c)
}

// adminKey is the root key when it differs from the lake key ("" otherwise:
// init then uses --s3-access-key, as before).
func (e *Env) adminKey() string {
	if e.S3Admin.AccessKey == e.S3Config.AccessKey {
		return ""
	}
	return e.S3Admin.AccessKey
}

func (e *Env) adminSecret() string {
	if e.adminKey() == "" {
		return ""
	}
	return e.S3Admin.SecretKey
}

// S3Vars returns the object store settings as variables for a child
// process or a command's environment map: the lake key, the CA file and,
// for init, the root key and the bucket owner.
func (e *Env) S3Vars() map[string]string {
	m := map[string]string{}
	for _, kv := range e.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "IOTPIPE_S3_") && k != "IOTPIPE_S3_BUCKET" {
			m[k] = v
		}
	}
	return m
}
