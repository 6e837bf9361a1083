package processor

import (
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/kafkax"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Kafka: kafkax.Config{Brokers: []string{"localhost:9092"}}, InstanceID: "a"}.WithDefaults()
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
		{"Kafka", func(c *Config) { c.Kafka.Brokers = []string{"nope"} }},
		{"Topics.Changelog", func(c *Config) { c.Topics.Changelog = c.Topics.Raw }},
		{"Window", func(c *Config) { c.Window.Size = time.Nanosecond }},
		{"CommitInterval", func(c *Config) { c.CommitInterval = time.Hour }},
		{"MaxKeys", func(c *Config) { c.MaxKeys = -1 }},
		{"TransactionTimeout", func(c *Config) { c.TransactionTimeout = time.Millisecond }},
	} {
		c := ok
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v does not name the field", tc.field, err)
		}
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New accepted an empty config")
	}
}

func TestChangelogRejectsGarbage(t *testing.T) {
	eng, _ := NewEngine(WindowConfig{})
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
	eng, _ := NewEngine(WindowConfig{})
	for _, r := range benchReadings(50, 2) {
		eng.Add(r, time.Now())
	}
	eng.Changes(func(k, v []byte) { f.Add(append([]byte(nil), k...), append([]byte(nil), v...)) })
	f.Fuzz(func(t *testing.T, k, v []byte) {
		e, _ := NewEngine(WindowConfig{})
		_ = e.Restore(k, v)
		e.FinishRestore(time.Now())
		e.Advance(time.Now().Add(time.Hour), func(*Emission) {})
	})
}
