//go:build integration

package lake

import (
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestCommand runs `iotpipe sink lake` as an operator would: settings are
// checked (exit 2 naming the variable), --check-config exits 0, /readyz
// answers 200 once Kafka and S3 are reachable, and SIGTERM exits 0.
func TestCommand(t *testing.T) {
	env := testenv.Load(t)
	bin := testenv.Binary(t)

	out, err := exec.Command(bin, "sink", "lake", "--max-age", "1ms", "--s3-access-key", "a", "--s3-secret-key", "b").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "IOTPIPE_MAX_AGE") {
		t.Errorf("bad --max-age: err %v, output %s; want exit 2 naming IOTPIPE_MAX_AGE", err, out)
	}
	out, err = exec.Command(bin, "sink", "lake", "--check-config", "--s3-access-key", "a", "--s3-secret-key", "b").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "settings are valid") {
		t.Errorf("--check-config: %v %s", err, out)
	}

	raw, dlq := env.Topic(t, 1, nil), env.Topic(t, 1, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := startChild(t, append(env.KafkaEnv(t, testenv.SinkLake),
		"IOTPIPE_S3_ENDPOINT="+env.S3Config.Endpoint,
		"IOTPIPE_S3_ACCESS_KEY="+env.S3Config.AccessKey,
		"IOTPIPE_S3_SECRET_KEY="+env.S3Config.SecretKey,
		"IOTPIPE_S3_CA_FILE="+env.S3Config.CAFile,
		"IOTPIPE_S3_BUCKET="+env.Bucket(t),
		"IOTPIPE_TOPIC_READINGS="+raw, "IOTPIPE_TOPIC_METRICS=-", "IOTPIPE_TOPIC_DLQ="+dlq,
		"IOTPIPE_GROUP="+env.Group(t), "IOTPIPE_HTTP_ADDR="+addr,
	))
	c.WaitLine("partition assigned", 60*time.Second)
	testenv.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errorf("/readyz: %s", resp.Status)
		}
		resp, err = http.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 64<<10)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		for _, m := range []string{"iotpipe_lake_rows_total", "iotpipe_lake_files_total", "iotpipe_lake_bytes_total",
			"iotpipe_lake_upload_seconds", "iotpipe_lake_retries_total", "iotpipe_lake_open_files"} {
			if !strings.Contains(b.String(), m) {
				return errorf("/metrics lacks %s", m)
			}
		}
		return nil
	})
	c.StopClean(40 * time.Second)
}
