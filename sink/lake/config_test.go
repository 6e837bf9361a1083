package lake

import (
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/objstore"
)

func validConfig() Config {
	c := DefaultConfig()
	c.S3 = objstore.Config{Endpoint: "http://localhost:7070", AccessKey: "a", SecretKey: "b", Bucket: "lake"}
	return c
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"max age", func(c *Config) { c.MaxAge = time.Millisecond }, "MaxAge"},
		{"zstd", func(c *Config) { c.ZstdLevel = 30 }, "ZstdLevel"},
		{"buffer below file", func(c *Config) { c.MaxBytes = 64 << 20; c.MaxBuffered = 1 << 20 }, "MaxBuffered"},
		{"part size", func(c *Config) { c.PartSize = 1 << 20 }, "PartSize"},
		{"no topics", func(c *Config) { c.RawTopic, c.MetricsTopic = "-", "-" }, "at least one topic"},
		{"retry", func(c *Config) { c.RetryMin, c.RetryMax = time.Second, time.Millisecond }, "RetryMin"},
		{"failpoint", func(c *Config) { c.Failpoints = map[string]Failpoint{"nope": {}} }, "Failpoints"},
		{"bucket", func(c *Config) { c.S3.Bucket = "" }, "S3.Bucket"},
		{"zero max rows", func(c *Config) { c.MaxRows = 0 }, "MaxRows"},
		{"zero session", func(c *Config) { c.SessionTimeout = 0 }, "SessionTimeout"},
		{"prefix", func(c *Config) { c.Prefix = "/x" }, "Prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			err := c.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.want)
			}
		})
	}
	if got := (&Config{Prefix: "lake"}).keyPrefix(); got != "lake/" {
		t.Errorf("prefix = %q, want lake/", got)
	}
}
