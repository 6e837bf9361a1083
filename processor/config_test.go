package processor

import (
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/service"
)

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.InstanceID = "a"
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if ok.Topics.Changelog != DefaultChangelogTopic || ok.Window.Size != time.Minute || ok.TransactionalID() != "iotpipe-processor.iotpipe-processor.a" {
		t.Fatalf("unexpected defaults: %+v", ok)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"InstanceID", func(c *Config) { c.InstanceID = "" }},
		{"Kafka.Brokers", func(c *Config) { c.Kafka.Brokers = []string{"nope"} }},
		{"Window.Lateness", func(c *Config) { c.Window.Lateness = -time.Second }},
		{"Window.IdleTimeout", func(c *Config) { c.Window.IdleTimeout = 0 }},
		{"Window.HeartbeatExpiry", func(c *Config) { c.Window.HeartbeatExpiry = 0 }},
		{"MaxPollRecords", func(c *Config) { c.MaxPollRecords = 0 }},
		{"Topics.Changelog", func(c *Config) { c.Topics.Changelog = c.Topics.Raw }},
		{"Window.Size", func(c *Config) { c.Window.Size = time.Nanosecond }},
		{"CommitInterval", func(c *Config) { c.CommitInterval = time.Hour }},
		{"MaxKeys", func(c *Config) { c.MaxKeys = -1 }},
		{"TransactionTimeout", func(c *Config) { c.TransactionTimeout = time.Millisecond }},
	} {
		c := ok
		tc.mod(&c)
		err := c.Validate()
		found := false
		for _, fe := range config.Fields(err) {
			found = found || fe.Field == tc.field
		}
		if !found {
			t.Errorf("%s: error %v does not name the field", tc.field, err)
		}
	}
	zero := DefaultConfig()
	zero.Window.Lateness, zero.Window.LateRetention = 0, 0
	if err := zero.Validate(); err != nil {
		t.Errorf("lateness and late retention 0 must be valid: %v", err)
	}
	if _, err := New(Config{}, service.Deps{}); err == nil {
		t.Error("New accepted an empty config")
	}
}

func TestChangelogRejectsGarbage(t *testing.T) {
	eng, _ := NewEngine(DefaultWindowConfig())
	for _, kv := range [][2][]byte{
		{[]byte("short"), []byte{1}},
		{append(make([]byte, 8), 'd'), []byte{9}},
		{append(make([]byte, 8), 'd'), []byte{1, 0, 2}},
		{[]byte(metaKey), []byte{1}},
	} {
		if err := eng.Restore(kv[0], kv[1]); err == nil {
			t.Errorf("Restore(%q, %v) accepted garbage", kv[0], kv[1])
		}
	}
}

// FuzzRestore: a corrupt changelog record is an error, never a panic.
func FuzzRestore(f *testing.F) {
	eng, _ := NewEngine(DefaultWindowConfig())
	for i, r := range benchReadings(50, 2) {
		r.IgnoredFields = i % 3 // some windows as version 3 records
		eng.Add(r, time.Now())
	}
	eng.Changes(func(k, v []byte) { f.Add(append([]byte(nil), k...), append([]byte(nil), v...)) })
	f.Fuzz(func(t *testing.T, k, v []byte) {
		e, _ := NewEngine(DefaultWindowConfig())
		_ = e.Restore(k, v)
		_ = e.FinishRestore(time.Now())
		e.Advance(time.Now().Add(time.Hour), func(*Emission) {})
	})
}
